//! Reading what the node recorded: the fake kubeadm's event and invocation logs (RFC 3339
//! with microseconds, UTC), the fake API server's request log, and journal entries.
//! Every timestamp is wall-clock microseconds since the Unix epoch: the nodes share the
//! host's kernel, so host, node and journal clocks are one clock.

use anyhow::{Context, Result, anyhow, bail};
use kja_e2e::scenario::{string_field, timestamp};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// The fake kubeadm's event log in the node.
pub const KUBEADM_EVENTS_LOG: &str = "/var/lib/fake-k8s/kubeadm-events.log";
/// The kubelet files kubeadm's kubelet-start writes (design/kubeadm-facts.md).
pub const KUBELET_FILES: [&str; 3] = [
    "/etc/kubernetes/bootstrap-kubelet.conf",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
];
/// systemd's catalog ids: a unit's start job began, and a start job finished.
pub const MESSAGE_UNIT_STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
pub const MESSAGE_UNIT_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";

/// Now, in µs since the epoch.
pub fn now_us() -> u64 {
    to_us(SystemTime::now())
}

pub fn to_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds between two µs timestamps (negative if `to` is earlier).
pub fn ms(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1000.0
}

/// `2023-11-14T22:13:20.123456Z` (any number of fraction digits, or none) → µs.
pub fn parse_rfc3339(s: &str) -> Result<u64> {
    let bad = || anyhow!("not an RFC 3339 UTC time: {s:?}");
    let s = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) => (y, m, day),
        _ => return Err(bad()),
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, sec) = match (t.next(), t.next(), t.next()) {
        (Some(Ok(h)), Some(Ok(min)), Some(Ok(sec))) => (h, min, sec),
        _ => return Err(bad()),
    };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut micros = 0i64;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    u64::try_from(secs * 1_000_000 + micros).map_err(|_| bad())
}

/// One line of the fake kubeadm's event log.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: u64,
    pub pid: u32,
    /// `start ...`, `wrote PATH`, `systemctl ARGS exit=N`, `exit N`.
    pub what: String,
}

pub fn parse_events(text: &str) -> Result<Vec<Event>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (Some(at), Some(pid), Some(what)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("event line {l:?}");
            };
            Ok(Event {
                at: parse_rfc3339(at)?,
                pid: pid
                    .strip_prefix("pid=")
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("event line {l:?}"))?,
                what: what.to_string(),
            })
        })
        .collect()
}

/// One kubeadm process, from its event log lines.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub pid: u32,
    pub args: String,
    pub start: u64,
    pub exit: Option<(u64, i32)>,
    pub events: Vec<Event>,
}

impl Invocation {
    pub fn is_join(&self) -> bool {
        self.args
            .split_whitespace()
            .skip(1)
            .take(1)
            .any(|w| w == "join")
    }

    /// When kubeadm wrote the last of the kubelet's three files.
    pub fn last_kubelet_file(&self) -> Option<u64> {
        self.events
            .iter()
            .filter(|e| {
                e.what
                    .strip_prefix("wrote ")
                    .is_some_and(|p| KUBELET_FILES.contains(&p))
            })
            .map(|e| e.at)
            .max()
    }

    /// When an event starting with `prefix` happened first.
    pub fn first(&self, prefix: &str) -> Option<u64> {
        self.events
            .iter()
            .find(|e| e.what.starts_with(prefix))
            .map(|e| e.at)
    }
}

/// Groups events by process, in order of start. (PIDs are not reused within one boot's
/// few hundred processes, and every process starts with a `start` line.)
pub fn invocations(events: &[Event]) -> Vec<Invocation> {
    let mut out: Vec<Invocation> = Vec::new();
    for e in events {
        if let Some(args) = e.what.strip_prefix("start ") {
            out.push(Invocation {
                pid: e.pid,
                args: args.to_string(),
                start: e.at,
                exit: None,
                events: Vec::new(),
            });
            continue;
        }
        let Some(inv) = out.iter_mut().rev().find(|i| i.pid == e.pid) else {
            continue;
        };
        if let Some(code) = e.what.strip_prefix("exit ") {
            inv.exit = code.trim().parse().ok().map(|c| (e.at, c));
        }
        inv.events.push(e.clone());
    }
    out
}

/// The join lines of the invocation log with their µs timestamps.
pub fn join_invocation_times(log: &str) -> Vec<u64> {
    kja_e2e::scenario::join_invocations(log)
        .iter()
        .filter_map(|l| parse_rfc3339(l.split_whitespace().next()?).ok())
        .collect()
}

/// A line of the fake API server's requests.log: `RFC3339 METHOD PATH user=USER STATUS`.
pub fn request_seen(log: &str, method: &str, path: &str, user_prefix: &str, status: &str) -> bool {
    log.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 5
            && f[1] == method
            && f[2] == path
            && f[3]
                .strip_prefix("user=")
                .is_some_and(|u| u.starts_with(user_prefix))
            && f[f.len() - 1] == status
    })
}

/// Journal entries of `unit` (by systemd's `UNIT=` field) with a message id.
pub fn unit_messages<'a>(
    entries: &'a [Value],
    unit: &'a str,
    message_id: &'a str,
) -> impl Iterator<Item = &'a Value> + 'a {
    entries.iter().filter(move |e| {
        string_field(e, "UNIT") == Some(unit) && string_field(e, "MESSAGE_ID") == Some(message_id)
    })
}

/// systemd's "Started" entries for `unit` (JOB_TYPE start or restart, JOB_RESULT=done,
/// the "unit started" message id), as timestamps. The message id matters: systemd 252
/// logs the stop half of a restart job as "Stopped" with JOB_TYPE=restart and
/// JOB_RESULT=done, and its start half as JOB_TYPE=start.
pub fn start_jobs_done(entries: &[Value], unit: &str) -> Vec<u64> {
    entries
        .iter()
        .filter(|e| {
            string_field(e, "UNIT") == Some(unit)
                && string_field(e, "JOB_RESULT") == Some("done")
                && matches!(string_field(e, "JOB_TYPE"), Some("start" | "restart"))
                && string_field(e, "MESSAGE_ID") == Some(MESSAGE_UNIT_STARTED)
        })
        .map(timestamp)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_half_of_a_restart_is_no_start() {
        let entry = |t: &str, id: &str, ty: &str| {
            serde_json::json!({"__REALTIME_TIMESTAMP": t, "UNIT": "kubelet.service",
                               "MESSAGE_ID": id, "JOB_TYPE": ty, "JOB_RESULT": "done"})
        };
        let stopped = "9d1aaa27d60140bd96365438aad20286";
        let entries = [
            entry("1", MESSAGE_UNIT_STARTED, "start"),
            entry("2", stopped, "restart"),
            entry("3", MESSAGE_UNIT_STARTED, "start"),
            entry("4", stopped, "stop"),
        ];
        assert_eq!(start_jobs_done(&entries, "kubelet.service"), vec![1, 3]);
    }

    #[test]
    fn rfc3339_round_trips_the_fakes_format() {
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456Z").unwrap(),
            1_700_000_000_123_456
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z").unwrap(),
            1_700_000_000_123_000
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:01Z").unwrap(),
            1_709_164_801_000_000
        );
        assert!(parse_rfc3339("2023-11-14 22:13:20Z").is_err());
    }

    #[test]
    fn events_group_by_process() {
        let log = "\
2023-11-14T22:13:20.000000Z pid=7 start kubeadm join --config /run/x
2023-11-14T22:13:20.100000Z pid=7 wrote /etc/kubernetes/bootstrap-kubelet.conf
2023-11-14T22:13:20.200000Z pid=8 start kubeadm version
2023-11-14T22:13:20.300000Z pid=7 wrote /var/lib/kubelet/config.yaml
2023-11-14T22:13:20.400000Z pid=7 wrote /var/lib/kubelet/kubeadm-flags.env
2023-11-14T22:13:20.500000Z pid=8 exit 0
2023-11-14T22:13:20.600000Z pid=7 systemctl restart kubelet exit=1
2023-11-14T22:13:21.000000Z pid=7 exit 0
";
        let inv = invocations(&parse_events(log).unwrap());
        assert_eq!(inv.len(), 2);
        assert!(inv[0].is_join() && !inv[1].is_join());
        assert_eq!(inv[0].last_kubelet_file(), Some(1_700_000_000_400_000));
        assert_eq!(inv[0].exit, Some((1_700_000_001_000_000, 0)));
        assert_eq!(
            inv[0].first("systemctl restart"),
            Some(1_700_000_000_600_000)
        );
    }
}
