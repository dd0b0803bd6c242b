//! Running a command inside a node with every output line timestamped as it arrives, for
//! measuring what real kubeadm prints and when.

use crate::cmd;
use crate::node::{NODE_PATH, Node};
use anyhow::{Context, Result, anyhow};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// One line of output.
#[derive(Debug, Clone)]
pub struct TimedLine {
    /// Since the command was spawned.
    pub after: Duration,
    /// Wall-clock time it was read (compare with journal timestamps).
    pub at: SystemTime,
    /// The line, without its newline.
    pub text: String,
}

/// What a timed command left behind.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Standard output and standard error merged (`2>&1` inside the node), in order.
    pub lines: Vec<TimedLine>,
    /// How it ended; `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// From spawn to exit (or to the kill).
    pub took: Duration,
    /// When it was spawned.
    pub started: SystemTime,
}

impl Timed {
    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// All lines, each prefixed with `+SS.sss`.
    pub fn transcript(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("+{:7.3}s {}\n", l.after.as_secs_f64(), l.text))
            .collect()
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<&TimedLine> {
        self.lines.iter().find(|l| l.text.contains(needle))
    }

    /// All output as one string.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{}\n", l.text)).collect()
    }
}

/// Runs `argv` inside the booted `node` (all its namespaces, empty environment but PATH),
/// stderr merged into stdout, timestamping each line; kills it (SIGKILL to the group) at
/// `timeout`.
pub fn run_in_node(node: &Node, argv: &[&str], timeout: Duration) -> Result<Timed> {
    let leader = node
        .leader()
        .ok_or_else(|| anyhow!("node {} is not booted", node.name()))?;
    let mut command = Command::new("nsenter");
    command
        .arg("-t")
        .arg(leader.to_string())
        .arg("-a")
        .arg("--")
        .arg("env")
        .arg("-i")
        .arg(format!("PATH={NODE_PATH}"))
        .arg("sh")
        .arg("-c")
        .arg("exec \"$@\" 2>&1")
        .arg("sh")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut child = cmd::spawn_tied(command, Signal::SIGKILL)?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(text) = line else { break };
            let _ = tx.send(TimedLine {
                after: t0.elapsed(),
                at: SystemTime::now(),
                text,
            });
        }
    });
    let deadline = t0 + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // nsenter's child (the command, in the node's PID namespace) first, by PID,
            // then nsenter, so no zombie is left to the host's PID 1.
            let pid = child.id();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    let _ = reader.join();
    Ok(Timed {
        lines: rx.try_iter().collect(),
        status,
        took,
        started,
    })
}
