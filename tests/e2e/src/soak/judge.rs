//! Judging a run: was its outcome one the faults allow (joined, or stopped with a class
//! that names a fault left in place), and did anything happen that must never happen
//! (kubelet ungated or on missing files, kubelet left masked on a joined node, a kubeadm
//! left behind, a half-joined node called joined, a secret in any output, a panic, the
//! agent dying by a signal the soak did not send).

use super::follow;
use super::plan::Kind;
use super::run::{Outcome, Run, SECRETS};
use anyhow::Result;
use kja_e2e::install::{AGENT_STATE_PATH, AGENT_UNIT, KUBEADM_INVOCATIONS_LOG};
use serde_json::Value;
use std::fmt;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Violation {
    pub what: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

/// One journal entry of the agent's or kubelet's unit, any boot.
struct Entry {
    boot_id: String,
    at_us: u64,
    /// The unit it is about (systemd's lines) or from (the unit's own).
    unit: String,
    /// From systemd (PID 1) about the unit, not from the unit's processes.
    from_systemd: bool,
    event: follow::Event,
    job: Option<(String, String)>,
}

fn text(e: &Value, name: &str) -> Option<String> {
    e.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

impl Run {
    fn entries(&self) -> Result<Vec<Entry>> {
        let out = self.node.journalctl(&[
            "-o",
            "json",
            "-u",
            AGENT_UNIT,
            "-u",
            "kubelet.service",
            "--output-fields=MESSAGE,PHASE,FAILURE,JOB_TYPE,JOB_RESULT,UNIT,_SYSTEMD_UNIT,_PID",
        ])?;
        let mut entries = Vec::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(event) = follow::parse(line, 0) else {
                continue;
            };
            let from_systemd = text(&e, "_PID").as_deref() == Some("1");
            let unit = if from_systemd {
                text(&e, "UNIT")
            } else {
                text(&e, "_SYSTEMD_UNIT")
            }
            .unwrap_or_default();
            let job = match (text(&e, "JOB_TYPE"), text(&e, "JOB_RESULT")) {
                (Some(t), Some(r)) => Some((t, r)),
                _ => None,
            };
            entries.push(Entry {
                boot_id: text(&e, "_BOOT_ID").unwrap_or_default(),
                at_us: event.at_us,
                unit,
                from_systemd,
                event,
                job,
            });
        }
        entries.sort_by_key(|e| e.at_us);
        Ok(entries)
    }

    /// Which boot (1, 2, ...) a journal boot id belongs to.
    fn boot_of(&self, boot_id: &str) -> usize {
        self.boot_ids
            .iter()
            .position(|b| b == boot_id)
            .map(|i| i + 1)
            .unwrap_or(0)
    }

    /// Every violation of the run.
    pub fn judge(&mut self, outcome: &Outcome) -> Vec<Violation> {
        let mut v = Vec::new();
        let mut add = |what: &'static str, detail: String| v.push(Violation { what, detail });
        self.judge_outcome(outcome, &mut add);
        match self.entries() {
            Ok(entries) => {
                self.judge_kubelet(&entries, &mut add);
                self.judge_agent_process(&entries, &mut add);
            }
            Err(e) => add("harness", format!("cannot read the journal: {e:#}")),
        }
        if let Err(e) = self.judge_node(outcome, &mut add) {
            add("harness", format!("cannot look at the node: {e:#}"));
        }
        self.judge_secrets(&mut add);
        v
    }

    /// The classes that name a fault still in place at the end.
    pub fn classes_left(&self) -> Vec<&'static str> {
        let mut classes = Vec::new();
        for (i, a) in self.applied.iter().enumerate() {
            if !a.applied() {
                continue;
            }
            // A boot starts containerd again (it is enabled).
            let undone_by_boot = matches!(a.fault.kind, Kind::StopContainerd { .. })
                && self.applied[i + 1..]
                    .iter()
                    .any(|b| b.applied() && matches!(b.fault.kind, Kind::PowerCycle { .. }));
            if !undone_by_boot {
                classes.extend(a.fault.kind.classes_left_in_place());
            }
        }
        classes
    }

    fn judge_outcome(&self, outcome: &Outcome, add: &mut impl FnMut(&'static str, String)) {
        let left = self.classes_left();
        match outcome {
            Outcome::Joined | Outcome::WaitingForToken => {}
            Outcome::Stopped { class, exit } => {
                let expected_exit = if class == "config-invalid" { 78 } else { 69 };
                if !left.contains(&class.as_str()) {
                    add(
                        "outcome",
                        format!(
                            "the agent stopped with FAILURE={class} (exit {exit}), which names no fault left in place ({})",
                            if left.is_empty() {
                                "every fault was undone or does not stay".to_string()
                            } else {
                                format!("left in place: {}", left.join(", "))
                            }
                        ),
                    );
                } else if *exit != expected_exit {
                    add(
                        "outcome",
                        format!(
                            "the agent stopped with FAILURE={class} but exit {exit}, not {expected_exit}"
                        ),
                    );
                }
            }
            Outcome::Timeout(last) => add(
                "outcome",
                format!(
                    "no final state within the deadline ({}s after boot); last seen: {last}",
                    self.plan.deadline().as_secs()
                ),
            ),
        }
    }

    /// kubelet on missing files, or started while the agent had it gated.
    fn judge_kubelet(&self, entries: &[Entry], add: &mut impl FnMut(&'static str, String)) {
        for e in entries {
            let m = &e.event.message;
            if e.unit == "kubelet.service"
                && !e.from_systemd
                && (m.contains("failed to load kubelet config file")
                    || m.contains("assuming standalone kubelet"))
            {
                add(
                    "kubelet on invalid or missing files",
                    format!("boot {}: kubelet said {m:?}", self.boot_of(&e.boot_id)),
                );
                break;
            }
        }
        // Every start counts, the soak's `systemctl restart kubelet` too: while the agent
        // says kubelet is gated (its gate-kubelet line, before the next handoff line), no
        // start may succeed.
        let mut open: Option<bool> = None;
        let mut boot = String::new();
        for e in entries {
            if e.boot_id != boot {
                boot = e.boot_id.clone();
                open = None;
            }
            if e.unit == AGENT_UNIT && !e.from_systemd {
                match e.event.phase.as_deref() {
                    Some("handoff") => open = Some(true),
                    Some("gate-kubelet") => open = Some(false),
                    _ => {}
                }
                continue;
            }
            let Some((job, result)) = &e.job else {
                continue;
            };
            if e.unit != "kubelet.service"
                || !e.from_systemd
                || !matches!(job.as_str(), "start" | "restart")
                || result != "done"
            {
                continue;
            }
            if open != Some(true) {
                add(
                    "kubelet started while gated",
                    format!(
                        "boot {}: kubelet's {job} job finished at {} with {}",
                        self.boot_of(&e.boot_id),
                        e.at_us,
                        match open {
                            None => "no handoff line before it this boot",
                            _ => "the agent's gate-kubelet line after the last handoff",
                        }
                    ),
                );
                break;
            }
        }
    }

    /// Panics, and deaths by signals the soak did not send.
    fn judge_agent_process(&self, entries: &[Entry], add: &mut impl FnMut(&'static str, String)) {
        let mut kills_seen = vec![0usize; self.boot_ids.len() + 1];
        for e in entries.iter().filter(|e| e.unit == AGENT_UNIT) {
            let m = &e.event.message;
            let boot = self.boot_of(&e.boot_id);
            if !e.from_systemd && m.contains("panicked at") {
                add("agent panicked", format!("boot {boot}: {m}"));
            }
            if !e.from_systemd {
                continue;
            }
            if m.contains("Watchdog timeout") {
                add("agent died by a signal", format!("boot {boot}: {m}"));
            }
            let Some(rest) = m
                .split("Main process exited, code=")
                .nth(1)
                .filter(|r| r.starts_with("killed") || r.starts_with("dumped"))
            else {
                continue;
            };
            let signal = rest
                .split("status=")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches('.');
            let allowed = if signal.ends_with("/KILL") {
                let slot = boot.min(kills_seen.len() - 1);
                kills_seen[slot] += 1;
                let sent = self.agent_kills.iter().filter(|b| **b == boot).count();
                kills_seen[slot] <= sent
            } else {
                signal.ends_with("/TERM") && self.clean_poweroffs.contains(&boot)
            };
            if !allowed {
                add(
                    "agent died by a signal",
                    format!("boot {boot}: {m} (the soak sent it no such signal)"),
                );
            }
        }
    }

    fn judge_node(
        &mut self,
        outcome: &Outcome,
        add: &mut impl FnMut(&'static str, String),
    ) -> Result<()> {
        let kubelet_state = self.node.unit_state("kubelet.service")?;
        let kubelet_enabled = self.node.unit_enablement("kubelet.service")?;
        match outcome {
            Outcome::Joined if kubelet_enabled.starts_with("masked") => add(
                "kubelet masked on a joined node",
                format!("kubelet is {kubelet_enabled}"),
            ),
            Outcome::Stopped { .. } | Outcome::WaitingForToken => {
                // A last run that stopped at load-config changed nothing: a kubelet an
                // earlier run handed off to (its files found valid) keeps running.
                if kubelet_state == "active"
                    && !(self.stopped_at_load_config() && self.handed_off_before())
                {
                    add(
                        "kubelet runs after the agent stopped",
                        format!("kubelet is {kubelet_state}, outcome {outcome}"),
                    );
                }
                if kubelet_enabled != "masked-runtime" && !self.stopped_at_load_config() {
                    add(
                        "kubelet not gated after the agent stopped",
                        format!("kubelet is {kubelet_enabled}, outcome {outcome}"),
                    );
                }
            }
            _ => {}
        }
        if !matches!(outcome, Outcome::Timeout(_)) {
            let left = self.kubeadm_processes()?;
            if !left.is_empty() {
                let ps = self
                    .node
                    .exec(&["ps", "-C", "kubeadm", "-o", "pid,ppid,stat,lstart,args"])?
                    .stdout;
                add(
                    "kubeadm left behind",
                    format!("after the outcome ({outcome}):\n{ps}"),
                );
            }
        }
        let state = self
            .node
            .read_to_string(AGENT_STATE_PATH)
            .unwrap_or_default();
        let says_joined = serde_json::from_str::<Value>(&state)
            .map(|s| s["joined"] == Value::Bool(true))
            .unwrap_or(false);
        if says_joined || *outcome == Outcome::Joined {
            if self.cp.node(self.node.name()).is_none() {
                add(
                    "half-joined node called joined",
                    format!(
                        "state.json says joined (outcome {outcome}) but the API server has no Node {}",
                        self.node.name()
                    ),
                );
            }
            if let Err(why) = self.check_credentials() {
                add(
                    "half-joined node called joined",
                    format!("state.json says joined (outcome {outcome}) but {why}"),
                );
            }
        }
        Ok(())
    }

    /// The last stop came from reading the configuration, before anything was changed.
    /// The agent's last run stopped at load-config (a configuration error after the
    /// last time it gated kubelet, this boot): that run changed nothing on the node.
    /// The failure comes before any phase line of its run, so the runs are told apart
    /// by the gate-kubelet phase, which every run that gets past load-config enters.
    fn stopped_at_load_config(&self) -> bool {
        let last_gate = self.last_this_boot(|e| e.phase.as_deref() == Some("gate-kubelet"));
        // load-config's own line; a fragment found invalid during a wait says "the
        // changed configuration is not valid" and stops nothing.
        let last_config_error = self.last_this_boot(|e| {
            e.failure.as_deref() == Some("config-invalid")
                && e.message.starts_with("configuration error:")
        });
        match (last_gate, last_config_error) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(gate), Some(error)) => error > gate,
        }
    }

    /// An earlier run of this boot handed kubelet off (kubeadm's files valid), after
    /// its last gate: kubelet runs with valid files.
    fn handed_off_before(&self) -> bool {
        let last_gate = self.last_this_boot(|e| e.phase.as_deref() == Some("gate-kubelet"));
        let last_handoff = self.last_this_boot(|e| e.phase.as_deref() == Some("handoff"));
        matches!((last_gate, last_handoff), (Some(g), Some(h)) if h > g)
    }

    /// The position, among this boot's journal events, of the last one that `is`.
    fn last_this_boot(&self, is: impl Fn(&super::follow::Event) -> bool) -> Option<usize> {
        let boot = self.follower.boot();
        let events = self.follower.events();
        let this_boot: Vec<_> = events.iter().filter(|e| e.boot == boot).collect();
        this_boot.iter().rposition(|e| is(e))
    }

    /// kubelet.conf's client certificate: chains to the cluster CA, names this node, in
    /// its validity period, with its key.
    fn check_credentials(&self) -> std::result::Result<(), String> {
        let conf_path = self
            .node
            .resolve("/etc/kubernetes/kubelet.conf")
            .map_err(|e| e.to_string())?;
        let conf = std::fs::read_to_string(&conf_path)
            .map_err(|e| format!("kubelet.conf cannot be read: {e}"))?;
        let value = |key: &str| {
            conf.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        let cert = value("client-certificate:")
            .ok_or_else(|| format!("kubelet.conf names no client-certificate:\n{conf}"))?;
        let key = value("client-key:").unwrap_or_else(|| cert.clone());
        let cert = self.node.resolve(&cert).map_err(|e| e.to_string())?;
        let key = self.node.resolve(&key).map_err(|e| e.to_string())?;
        let ca = self.cp_dir.join("ca.crt");
        let openssl = |args: &[&std::ffi::OsStr]| -> std::result::Result<String, String> {
            let mut c = Command::new("openssl");
            c.args(args);
            let out = kja_e2e::cmd::run(&mut c, None, Duration::from_secs(20))
                .map_err(|e| format!("{e:#}"))?;
            if out.success() {
                Ok(out.stdout)
            } else {
                Err(format!("{out}"))
            }
        };
        let os = |s: &str| std::ffi::OsString::from(s);
        openssl(&[
            &os("verify"),
            &os("-CAfile"),
            ca.as_os_str(),
            cert.as_os_str(),
        ])
        .map_err(|e| format!("the client certificate does not chain to the cluster CA: {e}"))?;
        let subject = openssl(&[
            &os("x509"),
            &os("-in"),
            cert.as_os_str(),
            &os("-noout"),
            &os("-subject"),
            &os("-checkend"),
            &os("0"),
        ])
        .map_err(|e| format!("the client certificate has expired or cannot be read: {e}"))?;
        let cn = format!("CN = system:node:{}", self.node.name());
        if !subject.contains(&cn) || !subject.contains("O = system:nodes") {
            return Err(format!(
                "the client certificate's subject is {}",
                subject.trim()
            ));
        }
        let from_cert = openssl(&[
            &os("x509"),
            &os("-in"),
            cert.as_os_str(),
            &os("-noout"),
            &os("-pubkey"),
        ])?;
        let from_key = openssl(&[&os("pkey"), &os("-in"), key.as_os_str(), &os("-pubout")])?;
        if from_cert.trim() != from_key.trim() {
            return Err("the client key does not match its certificate".into());
        }
        Ok(())
    }

    /// The token's secret (either token) in the journal, the state file, kubeadm's
    /// invocation log, or what status, check and diagnose print.
    fn judge_secrets(&self, add: &mut impl FnMut(&'static str, String)) {
        let mut outputs: Vec<(String, String)> = Vec::new();
        let mut put = |what: &str, r: Result<String>| {
            outputs.push((
                what.to_string(),
                r.unwrap_or_else(|e| format!("(unavailable: {e:#})")),
            ))
        };
        put(
            "the journal (all boots, every field)",
            self.node.journalctl(&["-o", "export"]),
        );
        put("state.json", self.node.read_to_string(AGENT_STATE_PATH));
        put(
            "kubeadm's invocation log",
            self.node.read_to_string(KUBEADM_INVOCATIONS_LOG),
        );
        for cmd in [
            &["status"][..],
            &["status", "--json"],
            &["check"],
            &["check", "--json"],
            &["diagnose"],
            &["diagnose", "--json"],
        ] {
            let mut argv = vec!["kube-join-agent"];
            argv.extend_from_slice(cmd);
            let out = self
                .node
                .exec_timeout(&argv, Duration::from_secs(60))
                .map(|o| format!("{}\n{}", o.stdout, o.stderr));
            put(&format!("`{}`", argv.join(" ")), out);
        }
        for (what, text) in &outputs {
            for secret in SECRETS {
                if text.contains(secret) {
                    let line = text
                        .lines()
                        .find(|l| l.contains(secret))
                        .unwrap_or_default()
                        .replace(secret, "<SECRET>");
                    add(
                        "secret leaked",
                        format!("a token secret is in {what}: {line:.300}"),
                    );
                }
            }
            if what == "kubeadm's invocation log" && text.contains("<redacted>") {
                add(
                    "secret leaked",
                    "a secret flag on kubeadm's command line (the fake redacted it in its log)"
                        .into(),
                );
            }
        }
    }
}
