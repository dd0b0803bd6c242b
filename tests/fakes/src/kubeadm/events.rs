//! `/var/lib/fake-k8s/kubeadm-events.log`: what this kubeadm did and when, to the
//! microsecond, for measuring what happens around it (kubeadm's last kubelet file →
//! kubelet started; kubeadm's exit → the agent's reaction). Nothing upstream writes it;
//! recording changes neither the order of the fake's steps nor its output.
//!
//! One line per event, `<RFC 3339 µs UTC> pid=<pid> <event>`:
//! - `start <argv>`: the invocation (argv as in the invocation log, secrets redacted);
//! - `wrote <node path>`: right after a kubelet-start file is in place;
//! - `systemctl <args> exit=<code>`: right after a `systemctl` call returns (`exit=signal`
//!   when killed, `exit=error` when it could not be started);
//! - `exit <code>`: right before the process exits.

use std::time::SystemTime;

use super::env::EVENT_LOG;
use crate::fsroot::{self, Root};
use crate::timefmt;

/// The line for `event` at `t`.
pub fn line(t: SystemTime, pid: u32, event: &str) -> String {
    format!("{} pid={pid} {event}", timefmt::rfc3339_micros(t))
}

/// Appends `event`, stamped now, to the event log under `root`. A failure to record is
/// a warning on stderr, never a change in behaviour.
pub fn record(root: &Root, event: &str) {
    let t = SystemTime::now();
    let path = root.path(EVENT_LOG);
    if let Err(e) = fsroot::append_line(&path, &line(t, std::process::id(), event)) {
        eprintln!("fake-kubeadm: warning: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_carry_microseconds_and_the_pid() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            line(t, 42, "wrote /var/lib/kubelet/config.yaml"),
            "2023-11-14T22:13:20.123456Z pid=42 wrote /var/lib/kubelet/config.yaml"
        );
    }
}
