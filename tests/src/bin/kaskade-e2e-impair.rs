//! The UDP impairment proxy as the end-to-end tests start it: the same entry point as
//! `impair-proxy`, built by `cargo test` so that tests can find it through
//! `CARGO_BIN_EXE_kaskade-e2e-impair`.
fn main() -> anyhow::Result<()> {
    Ok(kaskade_tests::impair::main_from_args()?)
}
