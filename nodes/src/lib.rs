//! The Kaskade node: wires signalling (axum), the WebRTC edge, the mesh actors and the control plane
//! together. `main.rs` and the end-to-end test binary both call [`run_cli`].

/// Parses the command line and runs the chosen subcommand.
pub fn run_cli() -> anyhow::Result<()> {
    Ok(())
}
