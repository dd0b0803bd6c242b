//! Running host commands with a deadline, capturing their output.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
    /// Standard output as bytes.
    pub raw_stdout: Vec<u8>,
    /// The command line, for messages.
    pub command: String,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, if it exited (not killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output with surrounding whitespace removed.
    pub fn trimmed(&self) -> &str {
        self.stdout.trim()
    }

    /// `Ok(self)` on exit status 0, else an error showing the command and its output.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{self}")
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ended with {}", self.command, self.status)?;
        if !self.stdout.trim().is_empty() {
            write!(f, "\nstdout:\n{}", self.stdout.trim_end())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "\nstderr:\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` in a process group of its own, feeds it `stdin`, and waits up to `timeout`.
/// On timeout the whole group (everything it started that did not leave the group) gets
/// SIGKILL, and the result is an error naming the command.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    run_inner(cmd, stdin, timeout, None)
}

/// [`run`], with the command tied to this process ([`spawn_tied`] with `signal`), for
/// commands that must not outlive it (nsenter into a node).
pub fn run_tied(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    signal: Signal,
) -> Result<Output> {
    run_inner(&mut cmd, stdin, timeout, Some(signal))
}

fn run_inner(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    tie: Option<Signal>,
) -> Result<Output> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = match tie {
        Some(signal) => {
            let taken = std::mem::replace(cmd, Command::new("/nonexistent"));
            spawn_tied(taken, signal)?
        }
        None => cmd
            .spawn()
            .with_context(|| format!("starting `{command}`"))?,
    };
    let pgid = Pid::from_raw(child.id() as i32);

    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A writer thread, so a child that does not read cannot block us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let (tx_out, rx_out) = mpsc::channel();
    let (tx_err, rx_err) = mpsc::channel();
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        let _ = tx_out.send(buf);
    });
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        let _ = tx_err.send(buf);
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for child")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let Some(status) = status else {
        // Kill the group's other members first and give its leader a moment to reap them:
        // killing nsenter together with its child (in the node's PID namespace) would
        // orphan the child's zombie to the host's PID 1, and the node's shutdown would
        // then wait 10 s for a process that can never go away.
        for pid in group_members(pgid.as_raw()) {
            if pid != pgid.as_raw() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let reaped = (0..150).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !reaped {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
        let out = rx_out
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        let err = rx_err
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        bail!(
            "`{command}` did not finish within {timeout:?} and was killed\nstdout so far:\n{}\nstderr so far:\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
    };
    // A grandchild that kept the pipes open must not hang us: give readers a moment.
    let raw_stdout = rx_out
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    let raw_stderr = rx_err
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&raw_stdout).into_owned(),
        stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
        raw_stdout,
        command,
    })
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns a helper (systemd-nspawn, the fake API server, nsenter) so that it gets `signal`
/// if this process dies without cleaning up (a test binary killed, Ctrl-C on the demo):
/// SIGTERM to nspawn is an orderly poweroff. PR_SET_PDEATHSIG fires when the
/// spawning *thread* exits, so every such child is spawned from one thread that lives as
/// long as the process, never from the (short-lived) test thread.
pub fn spawn_tied(mut cmd: Command, signal: Signal) -> Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("kja-e2e-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    let parent = nix::unistd::getpid();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let what = describe(&cmd);
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, tx))
        .map_err(|_| anyhow::anyhow!("the spawner thread is gone"))?;
    rx.recv()
        .context("the spawner thread is gone")?
        .with_context(|| format!("starting `{what}`"))
}

/// PIDs whose process group is `pgid` (from /proc/*/stat).
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after "comm)": state, ppid, pgrp.
            stat.rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(2)?.parse::<i32>().ok())
                == Some(pgid)
        })
        .collect()
}

/// Runs a host program with arguments (30 s deadline) and fails unless it exits 0.
pub fn host(program: &str, args: &[&str]) -> Result<Output> {
    run(
        Command::new(program).args(args),
        None,
        Duration::from_secs(30),
    )?
    .ok()
}
