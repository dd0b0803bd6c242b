//! `fake-apiserver --listen 127.0.0.1:6443 --state-dir DIR`; see tests/fakes/README.md.

use std::process::ExitCode;

use clap::Parser;
use kja_fakes::apiserver::{Args, run};

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake-apiserver: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-apiserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
