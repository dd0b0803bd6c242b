#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (as root, on Debian 12): install what is
# missing, check formatting and lints, unit tests, then the end-to-end scenarios in
# real systemd nodes (systemd-nspawn) with real containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n== %s (+%ss)\n' "$1" "$(( $(date +%s) - started ))"; }

step "setup"
tests/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (agent and fakes for the test nodes)"
cargo build --workspace --locked --bins

step "unit tests"
cargo test --workspace --exclude kja-e2e --locked

step "packages: .deb and .rpm into target/packages/ (release build; tests/e2e/tests/packages.rs installs them)"
bash packaging/build.sh

step "real Kubernetes v1.20.2 for the real tier (cached; the first build takes 16-30 min)"
tests/real/build-kubernetes.sh

step "end-to-end scenarios in systemd-nspawn nodes"
if [ "$(id -u)" -ne 0 ]; then
  echo "the end-to-end scenarios boot systemd-nspawn nodes and need root" >&2
  exit 1
fi
# --no-fail-fast: one failing scenario file must not hide the results of the others.
cargo test -p kja-e2e --locked --no-fail-fast -- --test-threads="${KJA_E2E_THREADS:-3}"

step "done in $(( $(date +%s) - started ))s"
