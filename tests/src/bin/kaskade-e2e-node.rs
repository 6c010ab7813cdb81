//! The node binary as the end-to-end tests start it: the same entry point as `kaskade`, built by
//! `cargo test` so that tests can find it through `CARGO_BIN_EXE_kaskade-e2e-node`.
fn main() -> anyhow::Result<()> {
    kaskade_node::run_cli()
}
