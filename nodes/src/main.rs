//! Entry point of the `kaskade` binary; everything lives in the library.
fn main() -> anyhow::Result<()> {
    kaskade_node::run_cli()
}
