//! Chaos soak for the issue "A chaos soak and a hardening pass": joins under random
//! faults at random moments, every run judged for its outcome and for what must never
//! happen. A program, not a test: CI runs a short one (tests/run.sh).
//!
//! `cargo run -p kja-e2e --release --bin soak -- --help` (as root).

#[path = "../soak/mod.rs"]
mod soak;

use anyhow::Result;
use std::process::ExitCode;

fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(opts) = soak::cli::parse(&args)? else {
        print!("{}", soak::cli::USAGE);
        return Ok(ExitCode::SUCCESS);
    };
    kja_e2e::require_root()?;
    kja_e2e::paths::require_file(
        &kja_e2e::paths::agent_bin(),
        "build the agent and the fakes: cargo build --workspace --bins",
    )?;
    Ok(if soak::soak(&opts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
