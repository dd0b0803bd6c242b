//! The fleet simulation: a thousand nodes, each running the agent's own discovery,
//! Node-name check and join record (plus a minimal kubeadm and kubelet on the API
//! server), started within one second against one fake API server that admits only a
//! few requests at once and answers the rest 429 (and some 503) with Retry-After.
//! Reports whether every node joined, whether every node waited out every Retry-After,
//! and how evenly the herd's requests spread (peak/mean requests per second), with a
//! PNG plot and a JSON summary. A benchmark program, not a test: nothing is asserted.
//!
//! `cargo run -p kja-e2e --release --bin fleet -- --help` (no root needed).

#[path = "../fleet/mod.rs"]
mod fleet;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let opts = fleet::Options::parse();
    fleet::run(opts)
}
