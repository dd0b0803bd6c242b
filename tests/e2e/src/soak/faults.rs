//! Making each fault happen in the node, and undoing it later when the plan says so.
//! Processes in the node are signalled by PID, found by their command name.

use super::plan::{ApiDown, INVALID_CONFIGS, Kind};
use super::run::{Applied, INVALID_FRAGMENT, Landed, Later, NEW_TOKEN, Run, now_us};
use anyhow::Result;
use kja_e2e::FakeControlPlane;
use kja_e2e::install::{AGENT_STATE_PATH, AGENT_UNIT, TOKEN_PATH};
use std::time::Duration;

/// A year: "for good" as far as a run is concerned.
const FOR_GOOD_S: f64 = 365.0 * 24.0 * 3600.0;

impl Run {
    /// kubeadm processes in the node, oldest first: (PID, start time in ticks, args).
    pub fn kubeadm_processes(&self) -> Result<Vec<(u32, String, String)>> {
        let out = self.node.exec(&[
            "ps",
            "-C",
            "kubeadm",
            "--sort=start_time",
            "-o",
            "pid=,args=",
        ])?;
        let mut found = Vec::new();
        for line in out.stdout.lines() {
            let line = line.trim();
            let Some((pid, args)) = line.split_once(' ') else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let started = self.start_time(pid).unwrap_or_default();
            found.push((pid, started, args.trim().to_string()));
        }
        Ok(found)
    }

    /// Field 22 of /proc/PID/stat: tells a process from a later one with its PID.
    fn start_time(&self, pid: u32) -> Option<String> {
        let stat = self
            .node
            .exec(&["cat", &format!("/proc/{pid}/stat")])
            .ok()?
            .stdout;
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split_whitespace().nth(19).map(str::to_string)
    }

    fn signal(&self, pid: u32, signal: &str) -> Result<()> {
        self.node
            .exec(&["kill", &format!("-{signal}"), &pid.to_string()])?
            .ok()?;
        Ok(())
    }

    /// Applies fault `index` of the plan, `late_ms` after its moment.
    pub fn apply(&mut self, index: usize, late_ms: u64) -> Result<()> {
        let fault = self.plan.faults[index];
        let phase = self.follower.phase().unwrap_or_else(|| "(none yet)".into());
        let boot = self.follower.boot();
        let landed = match self.make(fault.kind)? {
            Ok(detail) => Landed::Applied {
                phase: phase.clone(),
                late_ms,
                detail,
            },
            Err(why) => Landed::Skipped(why),
        };
        let applied = Applied {
            fault,
            landed,
            boot,
        };
        self.note(format!("fault {}: {applied}", index + 1));
        self.applied.push(applied);
        Ok(())
    }

    fn later(&mut self, after_s: u64, what: Later) {
        self.pending.push((now_us() + after_s * 1_000_000, what));
    }

    /// Makes it happen: `Ok(detail)`, or `Err(why not)` when there was nothing to do it to.
    fn make(&mut self, kind: Kind) -> Result<std::result::Result<String, String>> {
        Ok(match kind {
            Kind::KillAgent => {
                let pid = self
                    .node
                    .exec_ok(&["systemctl", "show", "-p", "MainPID", "--value", AGENT_UNIT])?
                    .trim()
                    .parse::<u32>()
                    .unwrap_or(0);
                if pid == 0 {
                    let state = self.node.unit_state(AGENT_UNIT)?;
                    Err(format!("the agent was not running ({state})"))
                } else {
                    self.signal(pid, "KILL")?;
                    self.agent_kills.push(self.follower.boot());
                    Ok(format!("PID {pid}"))
                }
            }
            Kind::KillKubeadm => match self.kubeadm_processes()?.first() {
                None => Err("no kubeadm was running".into()),
                Some((pid, _, args)) => {
                    self.signal(*pid, "KILL")?;
                    Ok(format!("PID {pid}: {args}"))
                }
            },
            Kind::StopKubeadm { hold_s } => match self.kubeadm_processes()?.first().cloned() {
                None => Err("no kubeadm was running".into()),
                Some((pid, started, args)) => {
                    self.signal(pid, "STOP")?;
                    self.later(hold_s, Later::ContinueKubeadm { pid, started });
                    Ok(format!("PID {pid}: {args}"))
                }
            },
            Kind::StopContainerd { start_after_s } => {
                let out = self.node.systemctl(&["stop", "containerd.service"])?;
                if let Some(t) = start_after_s {
                    self.later(t, Later::StartContainerd);
                }
                Ok(if out.success() {
                    String::new()
                } else {
                    format!("systemctl stop failed: {}", out.stderr.trim())
                })
            }
            Kind::ApiServerDown { how, back_after_s } => {
                match how {
                    ApiDown::Refused => {
                        self.cp.stop();
                        if let Some(t) = back_after_s {
                            self.later(t, Later::ApiServerUp);
                        }
                    }
                    ApiDown::Unavailable => {
                        let secs = back_after_s.map(|t| t as f64).unwrap_or(FOR_GOOD_S);
                        self.knobs.unavailable_until = Some(now_us() as f64 / 1e6 + secs);
                        self.write_knobs()?;
                    }
                }
                Ok(String::new())
            }
            Kind::DeleteToken { new_after_s } => {
                self.knobs.tokens.clear();
                self.write_knobs()?;
                if let Some(t) = new_after_s {
                    self.later(t, Later::NewToken);
                }
                Ok(String::new())
            }
            Kind::PowerCycle { clean, off_s } => {
                let boot = self.follower.boot();
                self.follower.stop();
                let grace = if clean {
                    Duration::from_secs(30)
                } else {
                    Duration::ZERO
                };
                if clean {
                    self.clean_poweroffs.push(boot);
                }
                self.node.poweroff_within(grace)?;
                self.note(format!("boot {boot}: powered off"));
                std::thread::sleep(Duration::from_secs(off_s));
                self.boot()?;
                Ok(String::new())
            }
            Kind::RestartKubelet => {
                let out = self.node.systemctl(&["restart", "kubelet.service"])?;
                Ok(if out.success() {
                    "kubelet restarted".to_string()
                } else {
                    format!("refused: {}", out.stderr.trim())
                })
            }
            Kind::TruncateState { keep_half } => {
                let path = self.node.resolve(AGENT_STATE_PATH)?;
                match std::fs::OpenOptions::new().write(true).open(&path) {
                    Err(e) => Err(format!("no state file yet ({e})")),
                    Ok(f) => {
                        let len = f.metadata()?.len();
                        let keep = if keep_half { len / 2 } else { 0 };
                        f.set_len(keep)?;
                        Ok(format!("{len} → {keep} bytes"))
                    }
                }
            }
            Kind::InvalidConfig { which } => {
                self.node.write_file(
                    INVALID_FRAGMENT,
                    INVALID_CONFIGS[which].1.as_bytes(),
                    0o644,
                )?;
                Ok(String::new())
            }
        })
    }

    /// Undoes a fault (or lets the CSR approver catch up).
    pub fn undo(&mut self, what: Later) -> Result<()> {
        let done = match &what {
            Later::StartContainerd => {
                if self.node.is_booted() {
                    let out = self.node.systemctl(&["start", "containerd.service"])?;
                    format!("containerd started ({})", out.status)
                } else {
                    "containerd: the node is off".into()
                }
            }
            Later::ApiServerUp => {
                self.cp = FakeControlPlane::restart_with(
                    self.node.netns(),
                    self.cp_dir.clone(),
                    self.knobs.json(),
                )?;
                "API server back".into()
            }
            Later::NewToken => {
                self.knobs.tokens = vec![NEW_TOKEN];
                self.write_knobs()?;
                self.node.write_file(
                    TOKEN_PATH,
                    format!("{}.{}\n", NEW_TOKEN.0, NEW_TOKEN.1).as_bytes(),
                    0o600,
                )?;
                "a new token created and written to the token file".into()
            }
            Later::ContinueKubeadm { pid, started } => {
                if self.node.is_booted()
                    && self.start_time(*pid).as_deref() == Some(started.as_str())
                {
                    self.signal(*pid, "CONT")?;
                    format!("SIGCONT to kubeadm {pid}, still there after the hold")
                } else {
                    format!("kubeadm {pid} was gone before its SIGCONT")
                }
            }
            Later::ApproveCsrs => {
                self.knobs.csr_manual = false;
                self.write_knobs()?;
                "CSR approval back to automatic".into()
            }
        };
        self.note(done);
        Ok(())
    }
}
