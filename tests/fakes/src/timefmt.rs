//! Timestamps in the exact shapes Kubernetes components print them.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

fn utc(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

/// RFC 3339 with milliseconds, UTC (request logs, invocation logs).
pub fn rfc3339(t: SystemTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    utc(t).format(&fmt).unwrap_or_default()
}

/// RFC 3339 with microseconds, UTC (the fake kubeadm's invocation and event logs, which
/// time sub-millisecond intervals such as kubeadm's last file → kubelet started).
pub fn rfc3339_micros(t: SystemTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    utc(t).format(&fmt).unwrap_or_default()
}

/// `metav1.Time` as JSON: RFC 3339, whole seconds, UTC.
pub fn k8s(t: SystemTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc(t).format(&fmt).unwrap_or_default()
}

/// The suffix of kubelet's rotated cert files: `kubelet-client-2006-01-02-15-04-05.pem`.
pub fn cert_file_stamp(t: SystemTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    utc(t).format(&fmt).unwrap_or_default()
}

/// klog's header time: `0102 15:04:05.000000` (month, day, microseconds). klog uses
/// local time; the test nodes run in UTC, so UTC it is.
pub fn klog(t: SystemTime) -> String {
    let fmt = format_description!("[month][day] [hour]:[minute]:[second].[subsecond digits:6]");
    utc(t).format(&fmt).unwrap_or_default()
}

/// Seconds since the Unix epoch as f64 (the knobs use this unit).
pub fn unix_f64(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_micros(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(k8s(t), "2023-11-14T22:13:20Z");
        assert_eq!(cert_file_stamp(t), "2023-11-14-22-13-20");
        assert_eq!(klog(t), "1114 22:13:20.123456");
    }
}
