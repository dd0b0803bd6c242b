//! Benchmark for the issue "React at once", on real systemd nodes against the fake
//! control plane: handoff latency and kubelet starts, closing the gate, join wall time,
//! time from a fix to kubeadm running again in each waiting phase, the cold control
//! plane, failure latency, memory, wakeups and binary size; for the agent under test,
//! a baseline agent binary (interleaved, same machine, same run), and the no-agent
//! reference where there is one. Prints a Markdown table for the README; `--json` keeps
//! every raw sample. A program, not a test: the targets are reported, never asserted.
//!
//! `cargo run -p kja-e2e --release --bin bench -- --help` (as root).

#[path = "../bench/mod.rs"]
mod bench;

use anyhow::{Context, Result, bail};
use bench::machine::Machine;
use bench::nodes::Subject;
use bench::{Bench, Column};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// The agent under test: `$KJA_AGENT_BIN`, else the release build, else the debug one.
fn agent_under_test() -> PathBuf {
    if std::env::var_os("KJA_AGENT_BIN").is_some() {
        return kja_e2e::paths::agent_bin();
    }
    let release = kja_e2e::paths::target_dir().join("release/kube-join-agent");
    if release.is_file() {
        release
    } else {
        kja_e2e::paths::agent_bin()
    }
}

/// The fakes' directory: `$KJA_BIN_DIR`, else the release build when the fakes are
/// there. A debug-built fake API server takes tens of milliseconds per TLS handshake
/// (unoptimized crypto), where a real kube-apiserver takes about one: the agent's own
/// connections before kubeadm would be charged several times their real cost.
fn use_release_fakes() -> PathBuf {
    let release = kja_e2e::paths::target_dir().join("release");
    if std::env::var_os("KJA_BIN_DIR").is_none() && release.join("fake-apiserver").is_file() {
        // SAFETY: set before any other thread of this process exists.
        unsafe { std::env::set_var("KJA_BIN_DIR", &release) };
    }
    kja_e2e::paths::bin_dir()
}

fn describe(bin: &std::path::Path) -> String {
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    format!(
        "{} ({:.1} MiB)",
        bin.display(),
        size as f64 / (1024.0 * 1024.0)
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(opts) = bench::cli::parse(&args)? else {
        print!("{}", bench::cli::USAGE);
        return Ok(());
    };
    kja_e2e::require_root()?;
    let fakes = use_release_fakes();
    let agent = agent_under_test();
    kja_e2e::paths::require_file(
        &agent,
        "build the agent: cargo build --release -p kube-join-agent",
    )?;
    let mut agents = vec![(Column::Agent, Subject::Agent(agent.clone()))];
    if let Some(base) = &opts.baseline {
        let base = base
            .canonicalize()
            .with_context(|| format!("--baseline-agent {}", base.display()))?;
        if !base.is_file() {
            bail!("--baseline-agent {} is not a file", base.display());
        }
        agents.push((Column::Baseline, Subject::Agent(base)));
    }
    let baseline = opts.baseline.is_some();
    let json_path = opts.json.clone();
    let runs = opts.runs;
    let cap = opts.cap;
    let b = Bench::new(opts, agents.clone());
    let mut machine = Machine::at_start();
    let started = Instant::now();
    let started_at = bench::logs::now_us();
    eprintln!(
        "bench: {runs} runs; agent {}; fakes from {}; load average {}",
        describe(&agent),
        fakes.display(),
        machine.load_start
    );

    if bench::join::wanted(&b) {
        bench::join::run(&b);
    }
    if b.wants("sandbox") {
        bench::sandbox::run(&b);
    }
    if bench::cold::wanted(&b) {
        bench::cold::run(&b);
    }
    if bench::fix::wanted(&b) {
        bench::fix::run(&b);
    }
    if b.wants("wakeups") {
        bench::resources::run_wakeups(&b);
    }
    if b.wants("size") {
        bench::resources::run_size(&b);
    }
    machine.load_end = bench::machine::load_average();
    let took = started.elapsed();

    let samples = b.samples();
    let mut agents_text = format!("agent under test: {}", describe(&agent));
    for (column, subject) in &agents {
        if let (Column::Baseline, Subject::Agent(bin)) = (column, subject) {
            agents_text.push_str(&format!("; baseline: {}", describe(bin)));
        }
    }
    println!(
        "Machine: {}, {} cores, Linux {}, {} in the nodes; load average {} at start, {} at end{}.",
        machine.cpu,
        machine.cores,
        machine.kernel,
        machine.systemd,
        machine.load_start,
        machine.load_end,
        if machine.busy() {
            " (busy: more runnable tasks than cores)"
        } else {
            ""
        }
    );
    println!(
        "{agents_text}. {runs} runs, {:.1} min; fix waits capped at {} s.\n",
        took.as_secs_f64() / 60.0,
        cap.as_secs()
    );
    print!("{}", bench::report::table(&samples, baseline, runs));

    if let Some(path) = json_path {
        let header = json!({
            "started_unix_us": started_at,
            "took_s": took.as_secs_f64(),
            "runs": runs,
            "cap_s": cap.as_secs_f64(),
            "agent": agent,
            "baseline": agents.iter().find(|(c, _)| *c == Column::Baseline).map(|(_, s)| match s {
                Subject::Agent(p) => p.display().to_string(),
                Subject::NoAgent => String::new(),
            }),
            "args": args,
        });
        let doc = bench::report::json(&samples, &machine, header);
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: raw samples in {}", path.display());
    }
    Ok(())
}
