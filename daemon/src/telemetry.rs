//! Logging (journald with structured fields, or stderr) and systemd notifications.
//!
//! Journal fields come from tracing fields with no prefix: an event's `phase` field is
//! `PHASE=` and the attempt span's `attempt`/`node_name` are `ATTEMPT=`/`NODE_NAME=`, so
//! `journalctl -u kube-join-agent PHASE=discovery` works. The notify helpers log instead
//! of failing: a lost status update must not stop a join.

use sd_notify::NotifyState;
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The journal when it is there (the daemon under systemd), else stderr.
    Daemon,
    /// stderr only (interactive subcommands).
    Terminal,
}

/// Installs the global subscriber. `verbosity` counts `-v` flags.
pub fn init(sink: Sink, verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // Our own crate at the chosen level; dependencies (zbus, hyper, rustls) one notch
    // quieter unless -vv, so the journal stays readable.
    let directives = if verbosity >= 2 {
        level.to_string()
    } else {
        format!("warn,kube_join_agent={level}")
    };
    let filter = EnvFilter::try_from_env("KUBE_JOIN_AGENT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(directives));
    let journald = (sink == Sink::Daemon && journal_available())
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| {
            layer
                .with_field_prefix(None)
                .with_syslog_identifier("kube-join-agent".to_string())
        });
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .init(),
    }
}

/// The journal is there when systemd connected our output to it, or its socket exists.
fn journal_available() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
        || std::path::Path::new("/run/systemd/journal/socket").exists()
}

/// Tells systemd that startup is finished (Type=notify).
pub fn notify_ready() {
    send(&[NotifyState::Ready], "READY");
}

/// Sets the one-line status `systemctl status` shows. Control characters become
/// spaces: a newline in an error's text would otherwise end the STATUS= line and let
/// the rest be read as other sd_notify fields (READY=1, MAINPID=...).
pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))], "STATUS");
}

/// `text` with every control character replaced by a space.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Tells systemd the agent is stopping, and clears the status.
pub fn notify_stopping() {
    send(
        &[NotifyState::Stopping, NotifyState::Status("")],
        "STOPPING",
    );
}

fn send(states: &[NotifyState], what: &str) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot send {what} to systemd: {e}");
    }
}

/// Pings systemd's watchdog at half its interval, for as long as the runtime runs.
/// The ping comes from the async runtime, so a wedged runtime stops it and systemd
/// restarts the agent.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(500));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog], "WATCHDOG");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_status_stays_one_line() {
        let hostile = "kubeadm said: x\nREADY=1\nMAINPID=1\r\u{7}";
        let line = super::one_line(hostile);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(line, "kubeadm said: x READY=1 MAINPID=1  ");
    }
}
