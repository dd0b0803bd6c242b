//! What the fake API server's requests.log says about the fleet: requests per second,
//! the herd's peak against its mean, and, per node, whether each request after a 429
//! or 503 came no sooner than the Retry-After that answer carried.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One requests.log line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Arrival, ms since the Unix epoch.
    pub ms: i64,
    /// `GET`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The authenticated user.
    pub user: String,
    /// The node (by its port), if the request came in on a node's port.
    pub node: Option<usize>,
    /// The Retry-After the answer carried.
    pub retry_after: Option<u64>,
    /// The answer's status.
    pub status: u16,
}

impl Request {
    /// Refused for load (429, or 503 with Retry-After).
    pub fn refused(&self) -> bool {
        self.retry_after.is_some() && matches!(self.status, 429 | 503)
    }
}

/// Which code sent a request, by what it asked for: the agent's discovery (its wait,
/// `Look::AgainAfter`), the agent's `ApiClient` (Node-name check and join record), or
/// the kubelet's client-go (CSR and registration, emulated).
pub fn sender(r: &Request) -> &'static str {
    if r.path.ends_with("/configmaps/cluster-info") {
        "agent discovery"
    } else if r.path.starts_with("/apis/certificates.k8s.io/")
        || (r.method == "POST" && r.path == "/api/v1/nodes")
    {
        "kubelet (client-go)"
    } else {
        "agent ApiClient"
    }
}

/// Parses requests.log; `base_port` is node 0's port.
pub fn parse_log(text: &str, base_port: u16) -> Vec<Request> {
    text.lines()
        .filter_map(|l| parse_line(l, base_port))
        .collect()
}

fn parse_line(line: &str, base_port: u16) -> Option<Request> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() < 5 {
        return None;
    }
    let ms = parse_rfc3339_ms(f[0])?;
    let status = f.last()?.parse().ok()?;
    let user = f[3].strip_prefix("user=")?.to_owned();
    let mut node = None;
    let mut retry_after = None;
    for extra in &f[4..f.len() - 1] {
        if let Some(addr) = extra.strip_prefix("via=") {
            let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
            node = port.checked_sub(base_port).map(usize::from);
        } else if let Some(s) = extra.strip_prefix("retry-after=") {
            retry_after = s.parse().ok();
        }
    }
    Some(Request {
        ms,
        method: f[1].to_owned(),
        path: f[2].to_owned(),
        user,
        node,
        retry_after,
        status,
    })
}

/// `2026-01-02T03:04:05.678Z` as ms since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// Requests per `bucket_ms` from `start`, `len` buckets.
pub fn rate(requests: &[&Request], start: i64, bucket_ms: i64, len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len];
    for r in requests {
        let i = (r.ms - start).div_euclid(bucket_ms);
        if (0..len as i64).contains(&i) {
            out[i as usize] += 1;
        }
    }
    out
}

/// The gap from each refused request to the same node's next request, against the
/// Retry-After it was told.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The node.
    pub node: usize,
    /// Who sent the refused request (and so waited).
    pub sender: &'static str,
    /// Who sent the node's next request.
    pub next: &'static str,
    /// 429 or 503.
    pub status: u16,
    /// The Retry-After, in ms.
    pub told_ms: i64,
    /// Arrival of the next request minus arrival of the refused one, in ms.
    pub gap_ms: i64,
}

/// Every refused request followed by another from the same node.
pub fn gaps(requests: &[Request]) -> (Vec<Gap>, usize) {
    let mut by_node: BTreeMap<usize, Vec<&Request>> = BTreeMap::new();
    for r in requests {
        if let Some(n) = r.node {
            by_node.entry(n).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    let mut last_refused = 0;
    for (node, mut rs) in by_node {
        rs.sort_by_key(|r| r.ms);
        for pair in rs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.refused() {
                out.push(Gap {
                    node,
                    sender: sender(a),
                    next: sender(b),
                    status: a.status,
                    told_ms: a.retry_after.unwrap_or(0) as i64 * 1000,
                    gap_ms: b.ms - a.ms,
                });
            }
        }
        if rs.last().is_some_and(|r| r.refused()) {
            last_refused += 1;
        }
    }
    (out, last_refused)
}

/// The q-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The Retry-After verdict: every gap against what the server said.
pub fn retry_after_report(gaps: &[Gap], last_refused: usize) -> Value {
    let violations: Vec<&Gap> = gaps.iter().filter(|g| g.gap_ms < g.told_ms).collect();
    let mut by_sender: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for g in gaps {
        by_sender
            .entry(g.sender)
            .or_default()
            .push(g.gap_ms as f64 / g.told_ms.max(1) as f64);
    }
    let senders: serde_json::Map<String, Value> = by_sender
        .into_iter()
        .map(|(s, mut ratios)| {
            ratios.sort_by(f64::total_cmp);
            (
                s.to_owned(),
                json!({
                    "waits": ratios.len(),
                    "gap_over_retry_after": {
                        "min": ratios.first(), "p50": quantile(&ratios, 0.5),
                        "p99": quantile(&ratios, 0.99), "max": ratios.last(),
                    }
                }),
            )
        })
        .collect();
    let min_excess = gaps.iter().map(|g| g.gap_ms - g.told_ms).min();
    let mut sooner_by: BTreeMap<String, usize> = BTreeMap::new();
    for g in &violations {
        *sooner_by
            .entry(format!("{} refused, then {}", g.sender, g.next))
            .or_default() += 1;
    }
    json!({
        "refused_then_asked_again": gaps.len(),
        "refused_as_last_request": last_refused,
        "sooner_than_retry_after": violations.len(),
        "sooner_by_sender": sooner_by,
        "honoured": violations.is_empty(),
        "min_gap_minus_retry_after_ms": min_excess,
        "by_sender": senders,
        "violations": violations.iter().take(20).map(|g| json!({
            "node": g.node, "sender": g.sender, "next": g.next, "status": g.status,
            "told_ms": g.told_ms, "gap_ms": g.gap_ms})).collect::<Vec<_>>(),
        "resolution_ms": 1,
    })
}

/// Why each request was sent: the node's first, the one after a refusal, or the next
/// step after an answer.
pub fn reasons(requests: &[Request]) -> Vec<&'static str> {
    let mut last: BTreeMap<usize, bool> = BTreeMap::new();
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| requests[i].ms);
    let mut out = vec!["other"; requests.len()];
    for i in order {
        let r = &requests[i];
        let Some(n) = r.node else { continue };
        out[i] = match last.insert(n, r.refused()) {
            None => "first request",
            Some(true) => "after a refusal",
            Some(false) => "next step",
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_with_and_without_extras() {
        let log = "2026-03-01T10:00:00.250Z GET /api/v1/namespaces/kube-public/configmaps/cluster-info user=system:anonymous via=127.0.0.1:20007 retry-after=1 429\n\
                   2026-03-01T10:00:01.300Z GET /api/v1/namespaces/kube-public/configmaps/cluster-info user=system:anonymous via=127.0.0.1:20007 200\n\
                   2026-03-01T10:00:01.400Z GET /version user=system:anonymous 200\n\
                   garbage\n";
        let rs = parse_log(log, 20000);
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].node, Some(7));
        assert_eq!(rs[0].retry_after, Some(1));
        assert!(rs[0].refused() && !rs[1].refused());
        assert_eq!(rs[1].ms - rs[0].ms, 1050);
        assert_eq!(rs[2].node, None);
        let (g, last) = gaps(&rs);
        assert_eq!(last, 0);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].told_ms, g[0].gap_ms), (1000, 1050));
        assert_eq!(g[0].sender, "agent discovery");
        let report = retry_after_report(&g, last);
        assert_eq!(report["honoured"], true);
        assert_eq!(reasons(&rs), ["first request", "after a refusal", "other"]);
    }

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(
            parse_rfc3339_ms("2026-03-01T00:00:00.000Z"),
            Some(1_772_323_200_000)
        );
        assert_eq!(parse_rfc3339_ms("x"), None);
    }

    #[test]
    fn rates_and_quantiles() {
        let r = |ms| Request {
            ms,
            method: "GET".into(),
            path: "/".into(),
            user: "u".into(),
            node: Some(0),
            retry_after: None,
            status: 200,
        };
        let rs = [r(0), r(999), r(1000), r(2500)];
        let refs: Vec<&Request> = rs.iter().collect();
        assert_eq!(rate(&refs, 0, 1000, 3), [2, 1, 1]);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
