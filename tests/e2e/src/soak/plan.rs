//! A run's plan: one to three faults, each with its moment (a point in the join's progress
//! plus an offset) and its parameters, and the run's pace (how slow the control plane
//! answers). Drawn from the seed and the run number alone: `--replay SEED:RUN` draws the
//! same plan.

use super::rng::Rng;
use std::fmt;
use std::time::Duration;

/// The agent's settings in every run: short waits, so a fault left in place ends the run
/// within a minute or two, and enough attempts that three faults cannot use them up.
pub const AGENT_TOML: &str = "\
[retry]
max_attempts = 8
initial_backoff = \"1s\"
max_backoff = \"2s\"
[timeouts]
discovery = \"6s\"
no_progress = \"10s\"
join_phase = \"60s\"
tls_bootstrap = \"20s\"
node_registration = \"15s\"
[containerd]
ready_timeout = \"6s\"
";
/// `timeouts.no_progress` above: a SIGSTOP must outlast it.
pub const NO_PROGRESS_S: u64 = 10;
/// `retry.max_attempts` above.
pub const MAX_ATTEMPTS: u64 = 8;
/// The fake kubeadm at upstream's timings: its discovery waits `timeouts.discovery`
/// (scaled down, slow answers would never get through), and its long silent waits for
/// the kubelet are cut short by the agent's no-progress watchdog.
pub const KUBEADM_ENV: &str = "";

/// Where in the join a moment is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The node's first boot (systemd answering).
    Boot,
    /// The agent's `phase <name>:` line.
    Phase(&'static str),
    /// The agent waiting on something a fault holds: a `waiting:` line, or the wait for
    /// a new token.
    Waiting,
    /// A failed attempt's `FAILURE=` line (kubeadm's cleanup, `kubeadm reset -f`, follows).
    Failure,
}

/// The phases a moment can follow, in the join's order.
pub const PHASES: [&str; 8] = [
    "gate-kubelet",
    "preflight",
    "discovery",
    "join",
    "handoff",
    "tls-bootstrap",
    "verify",
    "serve",
];

impl Anchor {
    /// Faults are applied in this order (then in the order drawn).
    fn rank(self) -> usize {
        match self {
            Anchor::Boot => 0,
            Anchor::Phase(p) => 1 + PHASES.iter().position(|q| *q == p).unwrap_or(0),
            // Right after the fault that makes the agent wait (placed by `draw`).
            Anchor::Waiting => 100,
            Anchor::Failure => 200,
        }
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anchor::Boot => write!(f, "boot"),
            Anchor::Phase(p) => write!(f, "phase {p}"),
            Anchor::Waiting => write!(f, "a wait"),
            Anchor::Failure => write!(f, "a FAILURE line"),
        }
    }
}

/// When a fault happens: `offset_ms` after the first `anchor` seen after the previous
/// fault's anchor (or after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub anchor: Anchor,
    pub offset_ms: u64,
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} +{}ms", self.anchor, self.offset_ms)
    }
}

/// How the API server goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiDown {
    /// The process stops: connections refused.
    Refused,
    /// It answers every request 503 (knob `unavailable_until_unix`).
    Unavailable,
}

/// What invalid configuration is dropped in.
pub const INVALID_CONFIGS: [(&str, &str); 4] = [
    ("an unknown key", "[join]\napi_sever = \"10.0.0.1:6443\"\n"),
    ("a bad duration", "[timeouts]\ndiscovery = \"soon\"\n"),
    ("broken TOML", "[join\napi_server = \n"),
    ("a bad address", "[join]\napi_server = \"not an address\"\n"),
];

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kill -9` of the agent's main process.
    KillAgent,
    /// `kill -9` of kubeadm (join or reset).
    KillKubeadm,
    /// SIGSTOP of kubeadm, SIGCONT after `hold_s` (longer than the no-progress limit).
    StopKubeadm { hold_s: u64 },
    /// `systemctl stop containerd`, started again after `start_after_s`, or never.
    StopContainerd { start_after_s: Option<u64> },
    /// The API server down, back after `back_after_s`, or never.
    ApiServerDown {
        how: ApiDown,
        back_after_s: Option<u64>,
    },
    /// The bootstrap token deleted on the API server; a new one created and written to
    /// the token file after `new_after_s`, or never.
    DeleteToken { new_after_s: Option<u64> },
    /// The node powered off (in order, or the plug pulled) and booted again after `off_s`.
    PowerCycle { clean: bool, off_s: u64 },
    /// `systemctl restart kubelet.service` by hand.
    RestartKubelet,
    /// The agent's state file truncated to `keep_half` of it, or to nothing.
    TruncateState { keep_half: bool },
    /// An invalid fragment dropped into `/etc/kube-join-agent/config.d/` while the agent
    /// waits, and left there.
    InvalidConfig { which: usize },
}

impl Kind {
    /// The short name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillAgent => "kill-agent",
            Kind::KillKubeadm => "kill-kubeadm",
            Kind::StopKubeadm { .. } => "stop-kubeadm",
            Kind::StopContainerd { .. } => "stop-containerd",
            Kind::ApiServerDown { .. } => "api-server-down",
            Kind::DeleteToken { .. } => "delete-token",
            Kind::PowerCycle { .. } => "power-cycle",
            Kind::RestartKubelet => "restart-kubelet",
            Kind::TruncateState { .. } => "truncate-state",
            Kind::InvalidConfig { .. } => "invalid-config",
        }
    }

    /// Faults whose wait a fault dropped "while the agent waits" can land in.
    fn holds_a_wait(self) -> bool {
        matches!(
            self,
            Kind::StopContainerd { .. } | Kind::ApiServerDown { .. } | Kind::DeleteToken { .. }
        )
    }

    /// At most one of these per run.
    fn once_per_run(self) -> bool {
        self.holds_a_wait() || matches!(self, Kind::InvalidConfig { .. })
    }

    /// The failure classes that name this fault, when it is left in place; empty for
    /// faults that do not stay.
    pub fn classes_left_in_place(self) -> &'static [&'static str] {
        match self {
            Kind::StopContainerd {
                start_after_s: None,
            } => &["containerd-not-ready"],
            Kind::ApiServerDown {
                back_after_s: None, ..
            } => &["api-server-unreachable"],
            Kind::DeleteToken { new_after_s: None } => &["token-invalid"],
            Kind::InvalidConfig { .. } => &["config-invalid"],
            _ => &[],
        }
    }

    /// How much longer the run may take with this fault (the outcome's deadline): what
    /// it holds, and what the agent needs to get over it (or to give up, for a fault
    /// left in place: every attempt waits `timeouts.discovery` or
    /// `containerd.ready_timeout`, 6 s, and backs off up to 2 s).
    pub fn cost(self) -> Duration {
        let exhaust = MAX_ATTEMPTS * (6 + 2) + 30;
        Duration::from_secs(match self {
            Kind::KillAgent => 25,
            Kind::KillKubeadm => 20,
            Kind::StopKubeadm { hold_s } => hold_s + 25,
            Kind::StopContainerd {
                start_after_s: Some(t),
            } => t + 30,
            Kind::ApiServerDown {
                back_after_s: Some(t),
                ..
            } => t + 30,
            Kind::DeleteToken {
                new_after_s: Some(t),
            } => t + 30,
            Kind::StopContainerd {
                start_after_s: None,
            }
            | Kind::ApiServerDown {
                back_after_s: None, ..
            } => exhaust,
            Kind::DeleteToken { new_after_s: None } => 30,
            // An orderly poweroff may take up to the node's 30 s grace.
            Kind::PowerCycle { off_s, .. } => off_s + 60,
            Kind::RestartKubelet => 15,
            Kind::TruncateState { .. } => 10,
            Kind::InvalidConfig { .. } => 15,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let later = |t: &Option<u64>, what: &str| match t {
            Some(t) => format!("{what} after {t}s"),
            None => "left so".to_string(),
        };
        match self {
            Kind::KillAgent => write!(f, "kill -9 the agent"),
            Kind::KillKubeadm => write!(f, "kill -9 kubeadm"),
            Kind::StopKubeadm { hold_s } => write!(f, "SIGSTOP kubeadm, SIGCONT after {hold_s}s"),
            Kind::StopContainerd { start_after_s } => write!(
                f,
                "stop containerd, {}",
                later(start_after_s, "started again")
            ),
            Kind::ApiServerDown { how, back_after_s } => write!(
                f,
                "API server down ({}), {}",
                match how {
                    ApiDown::Refused => "stopped: connection refused",
                    ApiDown::Unavailable => "answering 503",
                },
                later(back_after_s, "back")
            ),
            Kind::DeleteToken { new_after_s } => write!(
                f,
                "delete the bootstrap token, {}",
                later(new_after_s, "a new one in the token file")
            ),
            Kind::PowerCycle { clean, off_s } => write!(
                f,
                "power off ({}), boot again after {off_s}s",
                if *clean { "in order" } else { "plug pulled" }
            ),
            Kind::RestartKubelet => write!(f, "systemctl restart kubelet"),
            Kind::TruncateState { keep_half } => write!(
                f,
                "truncate state.json to {}",
                if *keep_half { "half" } else { "nothing" }
            ),
            Kind::InvalidConfig { which } => write!(
                f,
                "invalid fragment ({}) left in config.d",
                INVALID_CONFIGS[*which].0
            ),
        }
    }
}

/// A fault and its moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: Kind,
    pub moment: Moment,
}

/// How slow the control plane is this run, so moments land in every phase: every answer
/// of the API server delayed, and the kubelet's CSR approved that long after the handoff
/// (an approver that lags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub api_delay_ms: u64,
    pub csr_delay_ms: u64,
}

/// One run's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    pub run: u64,
    pub pace: Pace,
    pub faults: Vec<Fault>,
}

fn moment(rng: &mut Rng, kind: Kind) -> Moment {
    use Anchor::*;
    let p = Phase;
    let anchors: &[(Anchor, u64)] = match kind {
        Kind::KillAgent => &[
            (Boot, 1),
            (p("gate-kubelet"), 1),
            (p("preflight"), 1),
            (p("discovery"), 1),
            (p("join"), 2),
            (p("handoff"), 3),
            (p("tls-bootstrap"), 2),
            (p("verify"), 1),
            (p("serve"), 1),
        ],
        Kind::KillKubeadm | Kind::StopKubeadm { .. } => {
            &[(p("join"), 3), (p("handoff"), 3), (Failure, 1)]
        }
        Kind::StopContainerd { .. } => &[
            (Boot, 1),
            (p("preflight"), 2),
            (p("discovery"), 1),
            (p("join"), 2),
            (p("handoff"), 2),
            (p("tls-bootstrap"), 1),
            (p("verify"), 1),
            (p("serve"), 1),
        ],
        Kind::ApiServerDown { .. } => &[
            (p("preflight"), 1),
            (p("discovery"), 2),
            (p("join"), 2),
            (p("handoff"), 2),
            (p("tls-bootstrap"), 2),
            (p("verify"), 2),
            (p("serve"), 1),
        ],
        Kind::DeleteToken { .. } => &[
            (p("preflight"), 1),
            (p("discovery"), 2),
            (p("join"), 2),
            (p("handoff"), 2),
            (p("tls-bootstrap"), 1),
            (p("serve"), 1),
        ],
        Kind::PowerCycle { .. } => &[
            (Boot, 1),
            (p("preflight"), 1),
            (p("discovery"), 1),
            (p("join"), 2),
            (p("handoff"), 3),
            (p("tls-bootstrap"), 2),
            (p("verify"), 1),
            (p("serve"), 2),
        ],
        // Not at the gate-kubelet line: it is written before the gate closes.
        Kind::RestartKubelet => &[
            (p("preflight"), 1),
            (p("discovery"), 1),
            (p("join"), 2),
            (p("handoff"), 3),
            (p("tls-bootstrap"), 2),
            (p("verify"), 1),
            (p("serve"), 1),
        ],
        Kind::TruncateState { .. } => &[
            (Boot, 1),
            (p("preflight"), 1),
            (p("discovery"), 1),
            (p("join"), 1),
            (p("handoff"), 2),
            (p("tls-bootstrap"), 1),
            (p("verify"), 1),
            (p("serve"), 2),
        ],
        Kind::InvalidConfig { .. } => &[(Waiting, 1)],
    };
    let anchor = rng.weighted(anchors);
    let max_offset = match anchor {
        Boot => 5000,
        Phase("join") | Phase("serve") => 3000,
        Phase("handoff") => 1500,
        Waiting => 300,
        Failure => 200,
        Phase(_) => 1000,
    };
    // A third of the moments at the anchor itself: the transitions are where races are.
    let offset_ms = if rng.chance(33) {
        0
    } else {
        rng.range(0, max_offset)
    };
    Moment { anchor, offset_ms }
}

fn kind(rng: &mut Rng) -> Kind {
    let some_later = |rng: &mut Rng| (!rng.chance(35)).then(|| rng.range(2, 12));
    match rng.range(0, 9) {
        0 => Kind::KillAgent,
        1 => Kind::KillKubeadm,
        2 => Kind::StopKubeadm {
            hold_s: NO_PROGRESS_S + rng.range(3, 8),
        },
        3 => Kind::StopContainerd {
            start_after_s: some_later(rng),
        },
        4 => Kind::ApiServerDown {
            how: rng.pick(&[ApiDown::Refused, ApiDown::Unavailable]),
            back_after_s: some_later(rng),
        },
        5 => Kind::DeleteToken {
            new_after_s: some_later(rng),
        },
        6 => Kind::PowerCycle {
            clean: rng.chance(50),
            off_s: rng.range(1, 3),
        },
        7 => Kind::RestartKubelet,
        8 => Kind::TruncateState {
            keep_half: rng.chance(50),
        },
        _ => Kind::InvalidConfig {
            which: rng.range(0, INVALID_CONFIGS.len() as u64 - 1) as usize,
        },
    }
}

impl Plan {
    /// The plan of run `run` of the soak seeded `seed`.
    pub fn draw(seed: u64, run: u64) -> Plan {
        let mut rng = Rng::for_run(seed, run);
        let pace = Pace {
            // Slow answers stretch the short phases (verify is one or two requests).
            api_delay_ms: rng.pick(&[0, 100, 200, 350, 500]),
            csr_delay_ms: rng.pick(&[0, 0, 1000, 2500, 4000]),
        };
        let n = rng.weighted(&[(1, 40), (2, 35), (3, 25)]);
        let mut kinds: Vec<Kind> = Vec::new();
        while kinds.len() < n {
            let k = kind(&mut rng);
            if k.once_per_run() && kinds.iter().any(|o| o.name() == k.name()) {
                continue;
            }
            kinds.push(k);
        }
        // An invalid fragment is dropped while the agent waits: something must hold a
        // wait. Without such a fault, the one drawn last (or the run's second) becomes one.
        if let Some(at) = kinds
            .iter()
            .position(|k| matches!(k, Kind::InvalidConfig { .. }))
            && !kinds.iter().any(|k| k.holds_a_wait())
        {
            let holder = loop {
                let k = kind(&mut rng);
                if k.holds_a_wait() {
                    break k;
                }
            };
            if kinds.len() < 3 {
                kinds.push(holder);
            } else {
                let other = if at == kinds.len() - 1 {
                    0
                } else {
                    kinds.len() - 1
                };
                kinds[other] = holder;
            }
        }
        let mut faults: Vec<Fault> = kinds
            .into_iter()
            .map(|kind| Fault {
                kind,
                moment: moment(&mut rng, kind),
            })
            .collect();
        // The wait an invalid fragment lands in: the fault holding it strikes before
        // kubeadm runs (where the agent waits for the runtime, the API server or a token).
        if faults
            .iter()
            .any(|f| matches!(f.kind, Kind::InvalidConfig { .. }))
            && let Some(holder) = faults.iter_mut().find(|f| f.kind.holds_a_wait())
        {
            holder.moment.anchor =
                rng.pick(&[Anchor::Phase("preflight"), Anchor::Phase("discovery")]);
            holder.moment.offset_ms = rng.range(0, 300);
        }
        faults.sort_by_key(|f| f.moment.anchor.rank());
        // The invalid fragment goes right after the fault whose wait it lands in.
        if let Some(at) = faults
            .iter()
            .position(|f| matches!(f.kind, Kind::InvalidConfig { .. }))
        {
            let invalid = faults.remove(at);
            let holder = faults
                .iter()
                .position(|f| f.kind.holds_a_wait())
                .expect("a fault holding a wait");
            faults.insert(holder + 1, invalid);
        }
        Plan {
            seed,
            run,
            pace,
            faults,
        }
    }

    /// How long the run may take from boot to its outcome.
    pub fn deadline(&self) -> Duration {
        // Boot, a join at this pace, and room for a loaded machine.
        let base = Duration::from_secs(60)
            + Duration::from_millis(30 * self.pace.api_delay_ms + self.pace.csr_delay_ms);
        base + self.faults.iter().map(|f| f.kind.cost()).sum::<Duration>()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} (seed {}): API answers +{}ms, CSR approved {}ms after the handoff; deadline {}s",
            self.run,
            self.seed,
            self.pace.api_delay_ms,
            self.pace.csr_delay_ms,
            self.deadline().as_secs()
        )?;
        for (i, fault) in self.faults.iter().enumerate() {
            write!(f, "\n  fault {}: {} at {}", i + 1, fault.kind, fault.moment)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_depends_on_the_seed_and_the_run_only() {
        assert_eq!(Plan::draw(7, 3), Plan::draw(7, 3));
        let differ = (0..20)
            .filter(|r| Plan::draw(7, *r) != Plan::draw(8, *r))
            .count();
        assert!(differ > 15);
    }

    #[test]
    fn plans_are_well_formed() {
        let mut kinds = std::collections::BTreeSet::new();
        let mut anchors = std::collections::BTreeSet::new();
        for run in 0..2000 {
            let plan = Plan::draw(11, run);
            assert!((1..=3).contains(&plan.faults.len()), "{plan}");
            for (i, f) in plan.faults.iter().enumerate() {
                kinds.insert(f.kind.name());
                anchors.insert(f.moment.anchor.to_string());
                if let Kind::StopKubeadm { hold_s } = f.kind {
                    assert!(hold_s > NO_PROGRESS_S);
                }
                if matches!(f.kind, Kind::InvalidConfig { .. }) {
                    assert!(
                        plan.faults[..i].iter().any(|g| g.kind.holds_a_wait()),
                        "an invalid fragment with nothing holding a wait before it: {plan}"
                    );
                }
                if f.kind.once_per_run() {
                    let same = plan
                        .faults
                        .iter()
                        .filter(|g| g.kind.name() == f.kind.name());
                    assert_eq!(same.count(), 1, "{plan}");
                }
            }
            assert!(plan.deadline() < Duration::from_secs(600), "{plan}");
        }
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        for p in PHASES {
            assert!(anchors.contains(&format!("phase {p}")), "{p}: {anchors:?}");
        }
    }
}
