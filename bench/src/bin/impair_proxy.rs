//! `impair-proxy`: the command-line front of [`kaskade_tests::impair`], a user-space UDP proxy
//! that adds delay, jitter, loss and a rate limit between two endpoints (see `--help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match kaskade_tests::impair::main_from_args() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
