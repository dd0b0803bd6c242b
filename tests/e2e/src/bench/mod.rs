//! The benchmark for "React at once": what each measure is, the samples taken, and the
//! order runs are taken in. Stages: `join` (handoff, kubelet starts, gate, join time,
//! memory), `cold` (a token signed a moment after it is created), `fix` (time from a fix
//! to kubeadm running again, and failure latency), `resources` (wakeups, binary size).
//!
//! Latency measures run one node at a time, agent under test, baseline and reference
//! interleaved run by run (the order rotates), so load on the machine hits them alike.
//! Only the wakeup count, which no latency depends on, runs several nodes at once.

pub mod cli;
pub mod cold;
pub mod fix;
pub mod join;
pub mod logs;
pub mod machine;
pub mod nodes;
pub mod report;
pub mod resources;
pub mod sandbox;

use nodes::Subject;
use serde_json::Value;
use std::sync::Mutex;

/// Whose number a sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The agent under test.
    Agent,
    /// The baseline agent (an older build).
    Baseline,
    /// The reference: no agent, kubeadm by hand, or a daemon-reload.
    Reference,
}

impl Column {
    pub fn name(self) -> &'static str {
        match self {
            Column::Agent => "agent",
            Column::Baseline => "baseline",
            Column::Reference => "reference",
        }
    }

    /// For node names.
    pub fn short(self) -> &'static str {
        match self {
            Column::Agent => "a",
            Column::Baseline => "b",
            Column::Reference => "r",
        }
    }
}

/// One measured value.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// In the measure's unit.
    Value(f64),
    /// Nothing happened within the cap (in the measure's unit).
    OverCap(f64),
    /// The run could not produce this value (why).
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub measure: &'static str,
    pub column: Column,
    pub run: usize,
    pub outcome: Outcome,
    /// Raw timestamps and context, for the JSON.
    pub detail: Value,
}

/// How a measure is judged (reported, never asserted).
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// median(column) / median(reference) ≤ x.
    RatioAtMost(f64),
    /// median ≤ x.
    MedianAtMost(f64),
    /// max ≤ x.
    MaxAtMost(f64),
    /// Every run = x.
    Exactly(f64),
    /// median(column) ≤ median(reference) + x.
    ReferencePlus(f64),
    /// No target: where another measure's time goes.
    Breakdown,
}

pub struct Measure {
    pub name: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub target: Target,
    pub target_text: &'static str,
    /// What the reference column holds, if the measure has one.
    pub reference: Option<&'static str>,
}

/// Every measure, in the order of the table.
pub const MEASURES: &[Measure] = &[
    Measure {
        name: "handoff",
        title: "handoff: kubeadm's last kubelet file → kubelet start job done",
        unit: "ms",
        target: Target::RatioAtMost(1.0),
        target_text: "÷ no agent ≤ 1.0",
        reference: Some("no agent: kubeadm's daemon-reload + restart"),
    },
    Measure {
        name: "kubelet-starts",
        title: "kubelet start jobs per join (this boot)",
        unit: "",
        target: Target::Exactly(1.0),
        target_text: "= 1 every run",
        reference: Some("no agent, from kubeadm's first kubelet file"),
    },
    Measure {
        name: "gate",
        title: "closing the gate: agent start → READY=1 (kubelet not running)",
        unit: "ms",
        target: Target::ReferencePlus(20.0),
        target_text: "≤ daemon-reload + 20 ms",
        reference: Some("one `systemctl daemon-reload`, same nodes"),
    },
    Measure {
        name: "join",
        title: "join: agent start → `phase serve`",
        unit: "ms",
        target: Target::RatioAtMost(1.02),
        target_text: "÷ by hand ≤ 1.02",
        reference: Some("kubeadm join by hand: start → exit 0"),
    },
    Measure {
        name: "join-before-kubeadm",
        title: "join, the agent's part before kubeadm: agent start → kubeadm started",
        unit: "ms",
        target: Target::Breakdown,
        target_text: "(part of join)",
        reference: None,
    },
    Measure {
        name: "sandbox",
        title: "the unit's hardening: a oneshot `/bin/true` with the agent's `[Service]` settings, start → done",
        unit: "ms",
        target: Target::Breakdown,
        target_text: "(part of join)",
        reference: Some("the same unit without them"),
    },
    Measure {
        name: "fix-grace",
        title: "fix → kubeadm again: discovery grace (token not signed)",
        unit: "s",
        target: Target::MedianAtMost(1.0),
        target_text: "≤ 1 s",
        reference: None,
    },
    Measure {
        name: "fix-token",
        title: "fix → kubeadm again: waiting for a new token (token-invalid)",
        unit: "s",
        target: Target::MedianAtMost(1.0),
        target_text: "≤ 1 s",
        reference: None,
    },
    Measure {
        name: "fix-backoff",
        title: "fix → kubeadm again: backoff after a failed attempt",
        unit: "s",
        target: Target::MedianAtMost(1.0),
        target_text: "≤ 1 s",
        reference: None,
    },
    Measure {
        name: "fix-name",
        title: "fix → kubeadm again: node-name conflict wait",
        unit: "s",
        target: Target::MedianAtMost(1.0),
        target_text: "≤ 1 s",
        reference: None,
    },
    Measure {
        name: "cold",
        title: "cold control plane: start → joined, token signed 2.5 s after creation",
        unit: "ms",
        target: Target::RatioAtMost(0.7),
        target_text: "÷ by hand ≤ 0.7",
        reference: Some("kubeadm join by hand, same moment after the token's creation"),
    },
    Measure {
        name: "failure",
        title: "failure latency: kubeadm exits non-zero → `FAILURE=` line",
        unit: "ms",
        target: Target::MedianAtMost(100.0),
        target_text: "≤ 100 ms",
        reference: None,
    },
    Measure {
        name: "rss",
        title: "agent peak RSS once joined (VmHWM)",
        unit: "MiB",
        target: Target::MaxAtMost(15.0),
        target_text: "≤ 15 MiB (max)",
        reference: None,
    },
    Measure {
        name: "wakeups",
        title: "agent wakeups per minute in serve, watchdog pings excluded",
        unit: "/min",
        target: Target::MedianAtMost(2.0),
        target_text: "≤ 2",
        reference: None,
    },
    Measure {
        name: "size",
        title: "agent binary, stripped",
        unit: "MiB",
        target: Target::MaxAtMost(12.0),
        target_text: "≤ 12 MiB",
        reference: None,
    },
];

pub fn measure(name: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.name == name)
}

/// What a benchmark run measures, and the samples so far.
pub struct Bench {
    pub opts: cli::Options,
    /// The agents: under test, and the baseline if given.
    pub agents: Vec<(Column, Subject)>,
    samples: Mutex<Vec<Sample>>,
}

impl Bench {
    pub fn new(opts: cli::Options, agents: Vec<(Column, Subject)>) -> Self {
        Bench {
            opts,
            agents,
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Whether `measure` was asked for (`--only`).
    pub fn wants(&self, measure: &str) -> bool {
        match &self.opts.only {
            None => true,
            Some(list) => list.iter().any(|m| m == measure),
        }
    }

    pub fn wants_any(&self, measures: &[&str]) -> bool {
        measures.iter().any(|m| self.wants(m))
    }

    /// Records a sample (if its measure is wanted) and says so on stderr.
    pub fn record(
        &self,
        measure: &'static str,
        column: Column,
        run: usize,
        outcome: Outcome,
        detail: Value,
    ) {
        if !self.wants(measure) {
            return;
        }
        let unit = self::measure(measure).map(|m| m.unit).unwrap_or("");
        let shown = match &outcome {
            Outcome::Value(v) => format!("{v:.3} {unit}"),
            Outcome::OverCap(c) => format!("> {c} {unit} (cap)"),
            Outcome::Failed(e) => format!("failed: {e}"),
        };
        eprintln!("bench: run {run} {measure} [{}]: {shown}", column.name());
        self.samples.lock().unwrap().push(Sample {
            measure,
            column,
            run,
            outcome,
            detail,
        });
    }

    /// Records the same failure for every measure a failed run was to produce.
    pub fn record_failure(
        &self,
        measures: &[&'static str],
        column: Column,
        run: usize,
        err: &anyhow::Error,
    ) {
        for m in measures {
            self.record(
                m,
                column,
                run,
                Outcome::Failed(format!("{err:#}")),
                Value::Null,
            );
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// `items` rotated by `run`, so no column always goes first.
    pub fn rotated<T: Clone>(items: &[T], run: usize) -> Vec<T> {
        let mut v = items.to_vec();
        if !v.is_empty() {
            let k = run % v.len();
            v.rotate_left(k);
        }
        v
    }
}
