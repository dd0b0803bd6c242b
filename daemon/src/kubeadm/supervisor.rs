//! kubeadm as a supervised child: its own process group, every output line forwarded to
//! the journal as it comes, a deadline and a no-progress watchdog, and the whole group
//! killed on timeout (kubeadm runs `systemctl` and other helpers that must die with it).

use crate::failure::Failure;
use crate::secret::Secret;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Time limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Kill after this long in total.
    pub deadline: Duration,
    /// Kill after this long without a line of output.
    pub no_progress: Duration,
}

/// Why the agent killed the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// Ran past the deadline.
    Deadline(Duration),
    /// Printed nothing for this long.
    NoProgress(Duration),
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// "stdout" or "stderr".
    pub stream: &'static str,
    /// The text, secrets redacted.
    pub text: String,
}

/// How the child ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The signal, if one ended it.
    pub signal: Option<i32>,
    /// Everything it printed (the most recent `MAX_LINES`).
    pub output: Vec<Line>,
    /// Set when the agent killed it.
    pub killed: Option<Killed>,
    /// How long it ran.
    pub elapsed: Duration,
}

const MAX_LINES: usize = 2000;
const TERM_GRACE: Duration = Duration::from_secs(5);

impl Finished {
    /// The last non-empty line, for diagnoses.
    pub fn last_line(&self) -> String {
        self.output
            .iter()
            .rev()
            .map(|l| l.text.trim())
            .find(|t| !t.is_empty())
            .unwrap_or("(no output)")
            .to_string()
    }

    /// Whether any line contains `needle`.
    pub fn said(&self, needle: &str) -> bool {
        self.output.iter().any(|l| l.text.contains(needle))
    }
}

/// A line to look out for while the child runs: `seen` turns true when a line contains
/// `needle` (kubeadm saying its restart of kubelet failed, say).
pub struct LineWatch {
    /// The text to look for.
    pub needle: &'static str,
    /// Set to true at the first line that contains it.
    pub seen: tokio::sync::watch::Sender<bool>,
}

/// Runs `program args`, forwarding each line (with `secrets` redacted) to the log when
/// `forward` is set. Returns when the child exits or has been killed.
pub async fn run(
    program: &Path,
    args: &[String],
    limits: Limits,
    secrets: &[&Secret],
    forward: bool,
) -> Result<Finished, Failure> {
    run_watching(program, args, limits, secrets, forward, None).await
}

/// [`run`], telling `watch` when its line goes by.
pub async fn run_watching(
    program: &Path,
    args: &[String],
    limits: Limits,
    secrets: &[&Secret],
    forward: bool,
    watch: Option<LineWatch>,
) -> Result<Finished, Failure> {
    let redact = |text: &str| secrets.iter().fold(text.to_string(), |t, s| s.redact(&t));
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        )
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Failure::KubeadmMissing {
                    detail: format!("cannot execute {}: {e}", program.display()),
                }
            }
            _ => Failure::Local {
                detail: format!("cannot start {}: {e}", program.display()),
            },
        })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // Whatever happens to this future (cancelled by SIGTERM, panicking), the group dies.
    let _group = GroupGuard(pgid);

    let (tx, mut rx) = mpsc::channel::<Line>(256);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, "stdout", tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, "stderr", tx.clone()));
    }
    drop(tx);

    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let deadline = started + limits.deadline;
    let mut last_progress = Instant::now();
    let mut output = Vec::new();
    let mut killed = None;
    let mut open = true;
    let status = loop {
        let quiet_until = last_progress + limits.no_progress;
        tokio::select! {
            line = rx.recv(), if open => match line {
                Some(mut line) => {
                    last_progress = Instant::now();
                    if let Some(w) = &watch && line.text.contains(w.needle) {
                        let _ = w.seen.send(true);
                    }
                    line.text = redact(&line.text);
                    if forward {
                        tracing::info!(kubeadm_stream = line.stream, "{name}: {}", line.text);
                    }
                    if output.len() == MAX_LINES {
                        output.remove(0);
                    }
                    output.push(line);
                }
                None => open = false,
            },
            status = child.wait() => break status,
            _ = tokio::time::sleep_until(deadline) => {
                killed = Some(Killed::Deadline(limits.deadline));
                break terminate(&mut child, pgid).await;
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                killed = Some(Killed::NoProgress(limits.no_progress));
                break terminate(&mut child, pgid).await;
            }
        }
    };
    // Collect what is still buffered in the pipes (bounded: helpers may hold them open).
    let drain = async {
        while let Some(mut line) = rx.recv().await {
            line.text = redact(&line.text);
            if forward {
                tracing::info!(kubeadm_stream = line.stream, "{name}: {}", line.text);
            }
            output.push(line);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;

    let status = status.map_err(|e| Failure::Local {
        detail: format!("waiting for {}: {e}", program.display()),
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(Finished {
        code: status.code(),
        signal: status.signal(),
        output,
        killed,
        elapsed: started.elapsed(),
    })
}

/// Lines longer than this are cut: kubeadm's lines are short, and a child that
/// writes hundreds of MiB without a newline must not grow the agent (it did: 256 MiB
/// without a newline took the agent to 779 MiB).
const MAX_LINE: usize = 16 * 1024;

async fn forward_lines(
    pipe: impl tokio::io::AsyncRead + Unpin,
    stream: &'static str,
    tx: mpsc::Sender<Line>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) => {
                if !line.is_empty() || cut {
                    let _ = tx.send(finish(stream, &mut line, &mut cut)).await;
                }
                return;
            }
            Ok(buf) => buf,
            Err(_) => return,
        };
        let (taken, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        let body = &buf[..if complete { taken - 1 } else { taken }];
        line.extend_from_slice(&body[..body.len().min(room)]);
        cut |= body.len() > room;
        reader.consume(taken);
        if complete && tx.send(finish(stream, &mut line, &mut cut)).await.is_err() {
            return;
        }
    }
}

/// One output line, taken out of `line` (lossily decoded: a line that is not UTF-8
/// is still worth reading), marked when it was cut.
fn finish(stream: &'static str, line: &mut Vec<u8>, cut: &mut bool) -> Line {
    let mut text = String::from_utf8_lossy(line)
        .trim_end_matches('\r')
        .to_string();
    if std::mem::take(cut) {
        text.push_str(&format!(" [line cut at {} KiB]", MAX_LINE / 1024));
    }
    line.clear();
    Line { stream, text }
}

/// SIGTERM to the group, then SIGKILL after a grace period.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    match tokio::time::timeout(TERM_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            child.wait().await
        }
    }
}

/// Kills the process group when dropped, so no helper of kubeadm outlives the run.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
