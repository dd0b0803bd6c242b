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

step "licenses and banned crates (cargo deny; deny.toml)"
# Advisories are not checked here: their database is fetched from GitHub, which these
# machines cannot reach. `cargo deny check advisories` where it can.
tools=$(packaging/install-tools.sh)
PATH="$tools:$PATH" cargo deny --locked check licenses bans

step "build (agent and fakes for the test nodes)"
cargo build --workspace --locked --bins

step "unit tests"
cargo test --workspace --exclude kja-e2e --locked

step "packages: .deb and .rpm into target/packages/ (release build; tests/e2e/tests/packages.rs installs them)"
bash packaging/build.sh

step "real Kubernetes v1.20.2 for the real tier (cached; the first build takes 16-30 min)"
tests/real/build-kubernetes.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "the end-to-end scenarios boot systemd-nspawn nodes and need root" >&2
  exit 1
fi
# A failing step does not hide the results of the later ones: each scenario step's
# status is kept and the script fails at the end if any failed.
failed=()

step "end-to-end scenarios in systemd-nspawn nodes (fakes, real containerd and etcd)"
# Every test target of kja-e2e but the real tier, which runs next with its own parallelism.
e2e_targets=(--lib --bins)
for t in tests/e2e/tests/*.rs tests/e2e/tests/*/main.rs; do
  name=$(basename "${t%/main.rs}" .rs)
  [ "$name" = real_tier ] || e2e_targets+=(--test "$name")
done
# --no-fail-fast: one failing scenario file must not hide the results of the others.
cargo test -p kja-e2e --locked --no-fail-fast "${e2e_targets[@]}" -- --test-threads="${KJA_E2E_THREADS:-3}" \
  || failed+=("end-to-end scenarios")
cargo test -p kja-e2e --locked --doc || failed+=("doc tests")

step "chaos soak: joins under random faults at random moments (tests/e2e/src/soak/)"
# A fixed seed (the same faults every run) and a random one, printed for --replay.
cargo run -q -p kja-e2e --locked --bin soak -- --runs 6 --seed 20261201 --parallel 2 \
  || failed+=("soak (seed 20261201)")
cargo run -q -p kja-e2e --locked --bin soak -- --runs 4 --parallel 2 || failed+=("soak (random seed)")

step "real tier: the agent's .deb against kubeadm, kubelet and a control plane v1.20.2"
# Each scenario runs its own control plane and node; KJA_REAL_PARALLEL of them at once
# (tests/real/README.md has the measurements).
real_parallel=${KJA_REAL_PARALLEL:-4}
export KJA_REAL_PARALLEL=$real_parallel
real_started=$(date +%s)
cargo test -p kja-e2e --locked --no-fail-fast --test real_tier -- --test-threads="$real_parallel" \
  || failed+=("real tier")
echo "real tier: $(( $(date +%s) - real_started ))s"

if [ ${#failed[@]} -gt 0 ]; then
  step "FAILED: ${failed[*]}"
  exit 1
fi

step "done in $(( $(date +%s) - started ))s"
