//! One run: a fresh node and fake control plane, the plan's faults applied at their
//! moments (and undone when the plan says so), then the outcome awaited until the
//! plan's deadline and judged (judge.rs).

use super::follow::{Event, Follower};
use super::plan::{AGENT_TOML, Fault, KUBEADM_ENV, Kind, Plan};
use anyhow::{Context, Result};
use kja_e2e::install::{self, AGENT_STATE_PATH, AGENT_UNIT, DEFAULT_TOKEN_SECRET, Install};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::scenario::unit_props;
use kja_e2e::{FakeControlPlane, artifacts};
use serde_json::{Value, json};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The token a `DeleteToken` fault's operator creates.
pub const NEW_TOKEN: (&str, &str) = ("ghijkl", "ghijklmnopqrstuv");
/// Every secret that must never show.
pub const SECRETS: [&str; 2] = [DEFAULT_TOKEN_SECRET, NEW_TOKEN.1];
/// Where an invalid fragment goes.
pub const INVALID_FRAGMENT: &str = "/etc/kube-join-agent/config.d/90-soak-invalid.toml";

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The agent in serve, kubelet active (credentials and Node checked by the judge).
    Joined,
    /// The agent exited for good; its last failure class.
    Stopped { class: String, exit: i32 },
    /// The agent waits for a new token (`FAILURE=token-invalid`), kubelet gated.
    WaitingForToken,
    /// Nothing final by the deadline: what was seen last.
    Timeout(String),
}

impl Outcome {
    /// The label outcomes are counted by.
    pub fn label(&self) -> String {
        match self {
            Outcome::Joined => "joined".into(),
            Outcome::Stopped { class, exit } => format!("stopped: {class} (exit {exit})"),
            Outcome::WaitingForToken => "waiting: token-invalid".into(),
            Outcome::Timeout(_) => "no outcome by the deadline".into(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Timeout(last) => write!(f, "no outcome by the deadline; last seen: {last}"),
            other => write!(f, "{}", other.label()),
        }
    }
}

/// What became of one fault of the plan.
#[derive(Debug, Clone)]
pub enum Landed {
    /// Applied while the agent was in `phase` (its last phase line this boot),
    /// `late_ms` after its moment.
    Applied {
        phase: String,
        late_ms: u64,
        detail: String,
    },
    /// Not applied: why (its anchor never came, nothing to kill).
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub fault: Fault,
    pub landed: Landed,
    /// The node's boot it was applied in.
    pub boot: usize,
}

impl Applied {
    pub fn applied(&self) -> bool {
        matches!(self.landed, Landed::Applied { .. })
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.landed {
            Landed::Applied {
                phase,
                late_ms,
                detail,
            } => {
                write!(f, "{}: in phase {phase}", self.fault.kind.name())?;
                if self.boot > 1 {
                    write!(f, " of boot {}", self.boot)?;
                }
                write!(f, " (+{late_ms}ms)")?;
                if !detail.is_empty() {
                    write!(f, ", {detail}")?;
                }
                Ok(())
            }
            Landed::Skipped(why) => write!(f, "{}: not applied: {why}", self.fault.kind.name()),
        }
    }
}

/// What undoes a fault (or moves the run on) later.
#[derive(Debug, Clone)]
pub enum Later {
    StartContainerd,
    ApiServerUp,
    NewToken,
    /// SIGCONT to this kubeadm (PID, start time), if it is still that process.
    ContinueKubeadm {
        pid: u32,
        started: String,
    },
    /// The CSR approver catches up.
    ApproveCsrs,
}

/// The fake API server's knobs this run.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub tokens: Vec<(&'static str, &'static str)>,
    pub csr_manual: bool,
    pub api_delay_ms: u64,
    pub unavailable_until: Option<f64>,
}

impl Knobs {
    pub fn json(&self) -> Value {
        let mut k = json!({
            "tokens": self.tokens.iter().map(|(id, secret)| json!({"id": id, "secret": secret})).collect::<Vec<_>>(),
            "csr_approval": if self.csr_manual { "manual" } else { "auto" },
        });
        if self.api_delay_ms > 0 {
            k["response_delay_ms"] = json!(self.api_delay_ms);
        }
        if let Some(until) = self.unavailable_until {
            k["unavailable_until_unix"] = json!(until);
        }
        k
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What the agent looks like now.
#[derive(Debug, Clone)]
pub enum Seen {
    Joined,
    Stopped { class: String, exit: i32 },
    WaitingForToken,
    Busy(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Joined => write!(f, "joined"),
            Seen::Stopped { class, exit } => write!(f, "stopped: {class} (exit {exit})"),
            Seen::WaitingForToken => write!(f, "waiting for a new token"),
            Seen::Busy(what) => write!(f, "{what}"),
        }
    }
}

/// A run in progress.
pub struct Run {
    pub plan: Plan,
    pub node: Node,
    pub cp: FakeControlPlane,
    pub cp_dir: PathBuf,
    pub knobs: Knobs,
    pub follower: Follower,
    /// The first boot, µs since the epoch.
    pub booted_us: u64,
    pub started: Instant,
    pub pending: Vec<(u64, Later)>,
    pub applied: Vec<Applied>,
    /// What the soak did, when (for the report and the artifacts).
    pub timeline: Vec<String>,
    /// The boot id of each boot (index 0: boot 1), as journald writes it (no dashes).
    pub boot_ids: Vec<String>,
    /// Boots in which the soak sent the agent SIGKILL, and how often.
    pub agent_kills: Vec<usize>,
    /// Boots the soak ended with an orderly poweroff (the agent gets SIGTERM then).
    pub clean_poweroffs: Vec<usize>,
    /// Whether the CSR approver's catching up is scheduled.
    pub csr_scheduled: bool,
}

impl Run {
    /// Node, control plane (knobs for the pace), agent and fakes installed; not booted.
    pub fn prepare(plan: Plan) -> Result<Run> {
        let name = kja_e2e::node_name(&format!("soak-{}-{}", plan.seed % 100_000, plan.run));
        let node = Node::create(NodeSpec::new(&name)).context("creating the node")?;
        let cp_dir = node.dir().join("apiserver");
        let knobs = Knobs {
            tokens: vec![("abcdef", DEFAULT_TOKEN_SECRET)],
            csr_manual: plan.pace.csr_delay_ms > 0,
            api_delay_ms: plan.pace.api_delay_ms,
            unavailable_until: None,
        };
        let cp = FakeControlPlane::start_with(node.netns(), cp_dir.clone(), knobs.json())
            .context("starting the fake API server")?;
        let pin = cp.pin()?;
        install::install(
            &node,
            &Install::agent(&pin)
                .extra_toml(AGENT_TOML)
                .kubeadm_env(KUBEADM_ENV),
        )
        .context("installing into the node")?;
        Ok(Run {
            plan,
            node,
            cp,
            cp_dir,
            knobs,
            follower: Follower::new(),
            booted_us: 0,
            started: Instant::now(),
            pending: Vec::new(),
            applied: Vec::new(),
            timeline: Vec::new(),
            boot_ids: Vec::new(),
            agent_kills: Vec::new(),
            clean_poweroffs: Vec::new(),
            csr_scheduled: false,
        })
    }

    pub fn note(&mut self, what: String) {
        let t = self.started.elapsed().as_secs_f64();
        self.timeline.push(format!("{t:7.2}s  {what}"));
    }

    pub fn write_knobs(&mut self) -> Result<()> {
        self.cp.set_knobs(self.knobs.json())
    }

    /// Boots (first boot, or after a poweroff) and follows the agent's journal.
    pub fn boot(&mut self) -> Result<()> {
        self.node.start()?;
        self.node.wait_systemd()?;
        self.follower.follow(&self.node)?;
        let id = self
            .node
            .exec_ok(&["cat", "/proc/sys/kernel/random/boot_id"])?
            .trim()
            .replace('-', "");
        self.boot_ids.push(id);
        let boot = self.follower.boot();
        self.note(format!("boot {boot}: systemd answers"));
        Ok(())
    }

    /// The whole run: boot, faults, outcome. Errors are the harness's (a node that
    /// would not boot), not the agent's.
    pub fn execute(&mut self) -> Result<Outcome> {
        self.started = Instant::now();
        self.boot()?;
        self.booted_us = now_us();
        self.apply_faults()?;
        self.await_outcome()
    }

    fn deadline_us(&self) -> u64 {
        self.booted_us + self.plan.deadline().as_micros() as u64
    }

    /// The first event at or after `from` that `fault`'s anchor names.
    fn anchor_event(&self, events: &[Event], from: usize, fault: &Fault) -> Option<usize> {
        use super::plan::Anchor;
        events
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, e)| match fault.moment.anchor {
                Anchor::Boot => true,
                Anchor::Phase(p) => e.phase.as_deref() == Some(p),
                Anchor::Waiting => e.is_wait(),
                Anchor::Failure => e.is_failed_attempt(),
            })
            .map(|(i, _)| i)
    }

    /// Applies each fault at its moment, in the plan's order, and runs what undoes them;
    /// returns when every fault was applied or cannot be any more, and nothing is pending.
    fn apply_faults(&mut self) -> Result<()> {
        let faults = self.plan.faults.clone();
        let mut next = 0;
        // Events before this index have been used as an anchor already.
        let mut cursor = 0;
        let mut last_look = Instant::now();
        loop {
            let events = self.follower.events();
            self.tick()?;
            if next < faults.len() {
                let fault = faults[next];
                let due = match fault.moment.anchor {
                    super::plan::Anchor::Boot => {
                        Some((self.booted_us + fault.moment.offset_ms * 1000, cursor))
                    }
                    _ => self
                        .anchor_event(&events, cursor, &fault)
                        .map(|i| (events[i].at_us + fault.moment.offset_ms * 1000, i)),
                };
                if let Some((due_us, at)) = due {
                    let now = now_us();
                    if now >= due_us {
                        cursor = at;
                        let late_ms = (now - due_us) / 1000;
                        self.apply(next, late_ms)?;
                        next += 1;
                        continue;
                    }
                } else if last_look.elapsed() >= Duration::from_secs(1) {
                    last_look = Instant::now();
                    let seen = self.look()?;
                    // A late journal line may still name the anchor: look once more.
                    let events = self.follower.events();
                    let gone = self.anchor_event(&events, cursor, &fault).is_none();
                    let why = match &seen {
                        Seen::Busy(_) if now_us() > self.deadline_us() => {
                            Some("the deadline passed first".to_string())
                        }
                        Seen::Busy(_) => None,
                        Seen::WaitingForToken if !self.token_wait_is_final() => None,
                        final_state => Some(format!("the run ended first ({final_state})")),
                    };
                    if let Some(why) = why
                        && gone
                    {
                        for f in &faults[next..] {
                            let boot = self.follower.boot();
                            self.applied.push(Applied {
                                fault: *f,
                                landed: Landed::Skipped(format!(
                                    "{} never came: {why}",
                                    f.moment.anchor
                                )),
                                boot,
                            });
                        }
                        next = faults.len();
                        continue;
                    }
                }
            } else if self.pending.is_empty() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What goes on whatever the faults: the CSR approver catches up `csr_delay_ms`
    /// after the first handoff, and what undoes a fault runs when it is due.
    fn tick(&mut self) -> Result<()> {
        if !self.csr_scheduled && self.knobs.csr_manual {
            let handoff = self
                .follower
                .events()
                .iter()
                .find(|e| e.phase.as_deref() == Some("handoff"))
                .map(|e| e.at_us);
            if let Some(at) = handoff {
                self.csr_scheduled = true;
                let at = at + self.plan.pace.csr_delay_ms * 1000;
                self.pending.push((at, Later::ApproveCsrs));
            }
        }
        self.run_due()
    }

    /// Runs what is due of the pending actions.
    fn run_due(&mut self) -> Result<()> {
        let now = now_us();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.pending = later;
        for (_, action) in due {
            self.undo(action)?;
        }
        Ok(())
    }

    /// A `DeleteToken` fault was applied and no new token follows.
    pub fn token_left_deleted(&self) -> bool {
        self.applied
            .iter()
            .any(|a| a.applied() && matches!(a.fault.kind, Kind::DeleteToken { new_after_s: None }))
    }

    /// An invalid fragment was left in config.d and the agent said so (FAILURE=
    /// config-invalid): a wait it lands in cannot end with a new token, since the
    /// configuration as a whole no longer loads; the agent keeps waiting on the one it
    /// has, and takes the fix once the fragment is repaired.
    pub fn config_left_invalid(&self) -> bool {
        self.applied
            .iter()
            .any(|a| a.applied() && matches!(a.fault.kind, Kind::InvalidConfig { .. }))
            && self
                .follower
                .events()
                .iter()
                .any(|e| e.failure.as_deref() == Some("config-invalid"))
    }

    /// The wait for a token is final: nothing the soak still does will end it.
    fn token_wait_is_final(&self) -> bool {
        self.token_left_deleted() || self.config_left_invalid()
    }

    /// The last failed attempt's class in the agent's journal (any boot).
    pub fn last_failure(&self) -> Option<String> {
        self.follower
            .events()
            .iter()
            .rev()
            .find(|e| e.is_failed_attempt())
            .and_then(|e| e.failure.clone())
    }

    /// Waits (at most `limit`) until the newest line the follower has of this boot is
    /// systemd's about the agent's exit: the unit is failed, so nothing follows it, and
    /// everything the agent wrote came before it.
    fn journal_caught_up_with_the_exit(&self, limit: Duration) {
        let boot = self.follower.boot();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let exited = self.follower.events().last().is_some_and(|e| {
                e.boot == boot
                    && (e.message.contains("Main process exited")
                        || e.message.contains("Failed with result")
                        || e.message.contains("CPU time"))
            });
            if exited {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's unit, state file and phase lines, and kubelet, now.
    pub fn look(&mut self) -> Result<Seen> {
        if !self.node.is_booted() {
            return Ok(Seen::Busy("the node is off".into()));
        }
        let p = unit_props(&self.node, AGENT_UNIT)?;
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        let active = get("ActiveState");
        if active == "failed" {
            let exit = get("ExecMainStatus").parse().unwrap_or(-1);
            // The journal trails the unit's state, by seconds on a busy machine: the
            // agent's last line is in once systemd's own line about the exit is.
            self.journal_caught_up_with_the_exit(Duration::from_secs(10));
            let class = self.last_failure().unwrap_or_else(|| "none".into());
            return Ok(Seen::Stopped { class, exit });
        }
        let events = self.follower.events();
        let boot = self.follower.boot();
        let this_boot: Vec<&Event> = events.iter().filter(|e| e.boot == boot).collect();
        let last_phase = this_boot.iter().rev().find_map(|e| e.phase.clone());
        if active != "active" {
            return Ok(Seen::Busy(format!(
                "agent {active} ({}), last phase {last_phase:?}",
                get("SubState")
            )));
        }
        if last_phase.as_deref() == Some("serve") {
            let state = self
                .node
                .read_to_string(AGENT_STATE_PATH)
                .unwrap_or_default();
            let state_ok = match serde_json::from_str::<Value>(&state) {
                Ok(s) => s["joined"] == Value::Bool(true) && s["phase"] == "serve",
                // Truncated by the soak after the agent last wrote it.
                Err(_) => self
                    .applied
                    .iter()
                    .any(|a| a.applied() && matches!(a.fault.kind, Kind::TruncateState { .. })),
            };
            let kubelet = self.node.unit_state("kubelet.service")?;
            if state_ok && kubelet == "active" {
                return Ok(Seen::Joined);
            }
            return Ok(Seen::Busy(format!(
                "in serve, kubelet {kubelet}, state.json {}",
                state.replace('\n', " ")
            )));
        }
        let waiting_for_token = this_boot
            .iter()
            .rev()
            .take_while(|e| e.phase.is_none())
            .any(|e| e.is_failed_attempt() && e.failure.as_deref() == Some("token-invalid"));
        if waiting_for_token {
            return Ok(Seen::WaitingForToken);
        }
        Ok(Seen::Busy(format!(
            "agent active, last phase {last_phase:?}, last failure {:?}",
            self.last_failure()
        )))
    }

    /// Waits for a final state until the deadline: joined (seen twice, 2 s apart),
    /// stopped, or waiting for a token that never comes (seen twice, 3 s apart).
    fn await_outcome(&mut self) -> Result<Outcome> {
        let mut candidate: Option<(Instant, &'static str)> = None;
        loop {
            let looked = Instant::now();
            let seen = self.look()?;
            let now = Instant::now();
            let (name, settle) = match &seen {
                Seen::Stopped { class, exit } => {
                    self.note(format!("the agent stopped: {class}, exit {exit}"));
                    return Ok(Outcome::Stopped {
                        class: class.clone(),
                        exit: *exit,
                    });
                }
                Seen::Joined => ("joined", Duration::from_secs(2)),
                Seen::WaitingForToken if self.token_wait_is_final() => {
                    ("waiting", Duration::from_secs(3))
                }
                _ => ("", Duration::ZERO),
            };
            match candidate {
                Some((since, was)) if was == name && now - since >= settle => {
                    self.note(format!("outcome: {name}"));
                    return Ok(match name {
                        "joined" => Outcome::Joined,
                        _ => Outcome::WaitingForToken,
                    });
                }
                Some((_, was)) if was == name => {}
                _ => candidate = (!name.is_empty()).then_some((now, name)),
            }
            if now_us() > self.deadline_us() {
                return Ok(Outcome::Timeout(seen.to_string()));
            }
            while looked.elapsed() < Duration::from_millis(700) {
                self.tick()?;
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }

    /// Saves the node's evidence, with the plan and the timeline; returns the directory.
    pub fn save_artifacts(&self, report: &str) -> Option<PathBuf> {
        let test = format!("soak-{}-{}", self.plan.seed, self.plan.run);
        match artifacts::save(&test, &self.node, Some(&self.cp)) {
            Ok(dir) => {
                let _ = std::fs::write(dir.join("soak.txt"), report);
                Some(dir)
            }
            Err(e) => {
                eprintln!("soak: saving artifacts of run {}: {e:#}", self.plan.run);
                None
            }
        }
    }
}

impl Drop for Run {
    /// The journal follower first: an `nsenter` still attached to the node would hold
    /// up its poweroff (fields drop after this, the node before the follower).
    fn drop(&mut self) {
        self.follower.stop();
    }
}
