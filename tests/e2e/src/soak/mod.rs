//! The chaos soak: N joins in real systemd nodes against the fake control plane, each
//! with one to three faults at random moments of the join (plan.rs), applied as the
//! agent's journal reaches them (follow.rs, faults.rs), then the outcome awaited and
//! judged (run.rs, judge.rs). Seeded: a run's plan depends on the seed and its number
//! only, and `--replay SEED:RUN` runs it again.

pub mod cli;
pub mod faults;
pub mod follow;
pub mod judge;
pub mod plan;
pub mod rng;
pub mod run;

use judge::Violation;
use plan::Plan;
use run::{Applied, Landed, Outcome, Run};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// What one run came to.
pub struct Report {
    pub plan: Plan,
    /// `Err`: the harness failed (a node that would not boot), not the agent.
    pub outcome: Result<Outcome, String>,
    pub applied: Vec<Applied>,
    pub violations: Vec<Violation>,
    pub took: Duration,
    pub artifacts: Option<PathBuf>,
}

/// The evidence printed for a run with violations: plan, what happened, the violations,
/// and the agent's and kubelet's journal.
fn evidence(r: &Run, outcome: &Outcome, violations: &[Violation]) -> String {
    let mut s = format!("{}\n", r.plan);
    s.push_str(&format!("outcome: {outcome}\nwhat the soak did:\n"));
    for line in &r.timeline {
        s.push_str(&format!("  {line}\n"));
    }
    s.push_str("violations:\n");
    for v in violations {
        s.push_str(&format!("  - {v}\n"));
    }
    let journal = r
        .node
        .journalctl(&[
            "-o",
            "short-precise",
            "-u",
            kja_e2e::install::AGENT_UNIT,
            "-u",
            "kubelet.service",
            "-u",
            "containerd.service",
        ])
        .unwrap_or_else(|e| format!("(journal unavailable: {e:#})"));
    let lines: Vec<&str> = journal.lines().collect();
    let shown = &lines[lines.len().saturating_sub(150)..];
    s.push_str(&format!(
        "journal of the agent, kubelet and containerd (all boots; last {} of {} lines):\n",
        shown.len(),
        lines.len()
    ));
    for l in shown {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// Runs one plan from a fresh node to its judged outcome.
pub fn run_one(plan: Plan) -> Report {
    let t0 = Instant::now();
    let mut report = Report {
        plan: plan.clone(),
        outcome: Err(String::new()),
        applied: Vec::new(),
        violations: Vec::new(),
        took: Duration::ZERO,
        artifacts: None,
    };
    let mut r = match Run::prepare(plan) {
        Ok(r) => r,
        Err(e) => {
            report.outcome = Err(format!("{e:#}"));
            report.took = t0.elapsed();
            return report;
        }
    };
    match r.execute() {
        Ok(outcome) => {
            let violations = r.judge(&outcome);
            if !violations.is_empty() {
                let text = evidence(&r, &outcome, &violations);
                report.artifacts = r.save_artifacts(&text);
                eprintln!(
                    "\nsoak: VIOLATION in run {} of seed {} (replay: --replay {}:{}; artifacts: {})\n{text}",
                    r.plan.run,
                    r.plan.seed,
                    r.plan.seed,
                    r.plan.run,
                    report
                        .artifacts
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "not saved".into())
                );
            }
            report.outcome = Ok(outcome);
            report.violations = violations;
        }
        Err(e) => {
            let text = format!("{}\nwhat the soak did:\n{}", r.plan, r.timeline.join("\n"));
            report.artifacts = r.save_artifacts(&text);
            report.outcome = Err(format!("{e:#}"));
        }
    }
    report.applied = r.applied.clone();
    report.took = t0.elapsed();
    report
}

fn print_report(r: &Report) {
    let outcome = match &r.outcome {
        Ok(o) => o.to_string(),
        Err(e) => format!("harness error: {e}"),
    };
    let mut s = format!(
        "soak: run {} (seed {}): {outcome} after {:.1}s; {} violation(s)",
        r.plan.run,
        r.plan.seed,
        r.took.as_secs_f64(),
        r.violations.len()
    );
    for (i, a) in r.applied.iter().enumerate() {
        s.push_str(&format!("\n  fault {}: {a}", i + 1));
    }
    for v in &r.violations {
        s.push_str(&format!("\n  VIOLATION {v}"));
    }
    println!("{s}");
}

/// Runs the soak; returns whether it passed (no violation, no harness error).
pub fn soak(opts: &cli::Options) -> bool {
    let t0 = Instant::now();
    println!(
        "soak: seed {}{}, {} run(s), {} at a time; replay one with --replay {}:RUN",
        opts.seed,
        if opts.random_seed { " (random)" } else { "" },
        opts.runs.len(),
        opts.parallel,
        opts.seed
    );
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Report>();
    let print = Mutex::new(());
    let mut reports: Vec<Report> = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..opts.parallel.min(opts.runs.len()) {
            let tx = tx.clone();
            let next = &next;
            let print = &print;
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(run) = opts.runs.get(i) else { break };
                    let plan = Plan::draw(opts.seed, *run);
                    {
                        let _p = print.lock().unwrap();
                        println!("soak: starting {plan}");
                    }
                    let report = run_one(plan);
                    {
                        let _p = print.lock().unwrap();
                        print_report(&report);
                    }
                    let _ = tx.send(report);
                }
            });
        }
        drop(tx);
        reports.extend(rx.iter());
    });
    reports.sort_by_key(|r| r.plan.run);
    summarize(opts, &reports, t0.elapsed())
}

fn summarize(opts: &cli::Options, reports: &[Report], took: Duration) -> bool {
    let mut outcomes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut landed: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let (mut applied, mut drawn) = (0, 0);
    let mut late: Vec<u64> = Vec::new();
    for r in reports {
        let label = match &r.outcome {
            Ok(o) => o.label(),
            Err(_) => "harness error".into(),
        };
        outcomes.entry(label).or_default().push(r.plan.run);
        for a in &r.applied {
            drawn += 1;
            let phase = match &a.landed {
                Landed::Applied { phase, late_ms, .. } => {
                    applied += 1;
                    late.push(*late_ms);
                    phase.clone()
                }
                Landed::Skipped(_) => "not applied".into(),
            };
            *landed
                .entry(a.fault.kind.name())
                .or_default()
                .entry(phase)
                .or_default() += 1;
        }
    }
    let violations: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    let errors: Vec<&Report> = reports.iter().filter(|r| r.outcome.is_err()).collect();
    println!(
        "\nsoak summary: seed {}, {} run(s) in {:.1} min ({} at a time)",
        opts.seed,
        reports.len(),
        took.as_secs_f64() / 60.0,
        opts.parallel
    );
    println!("outcomes:");
    for (label, runs) in &outcomes {
        println!("  {:>4}  {label}  (runs {runs:?})", runs.len());
    }
    late.sort_unstable();
    let at = |q: f64| {
        late.get(((late.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "faults: {applied} applied of {drawn} drawn, {} ms after their moment (median; 90th percentile {} ms, max {} ms); where they landed (the agent's phase):",
        at(0.5),
        at(0.9),
        at(1.0)
    );
    for (kind, phases) in &landed {
        let list: Vec<String> = phases.iter().map(|(p, n)| format!("{p} {n}")).collect();
        println!("  {kind:<16} {}", list.join(", "));
    }
    let count: usize = violations.iter().map(|r| r.violations.len()).sum();
    println!("violations: {count}");
    for r in &violations {
        for v in &r.violations {
            println!(
                "  run {} (--replay {}:{}): {v}",
                r.plan.run, r.plan.seed, r.plan.run
            );
        }
        if let Some(dir) = &r.artifacts {
            println!("    evidence: {}", dir.display());
        }
    }
    if !errors.is_empty() {
        println!("harness errors: {}", errors.len());
        for r in &errors {
            if let Err(e) = &r.outcome {
                println!("  run {}: {e}", r.plan.run);
            }
        }
    }
    violations.is_empty() && errors.is_empty()
}
