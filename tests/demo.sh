#!/usr/bin/env bash
# Builds the agent and the fake control plane, boots a real systemd test node, and
# joins it with the embedded default configuration; prints the node's journal.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo build --workspace --locked --bins
exec cargo run -q -p kja-e2e --locked --bin demo
