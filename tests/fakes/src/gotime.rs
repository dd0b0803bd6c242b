//! Go `time.Duration` text: parsing kubeadm's `timeouts:` values and printing
//! durations the way kubeadm's messages do (`40s`, `4m0s`, `1m20.5s`, `500ms`).

use std::time::Duration;

use anyhow::{Result, bail};

/// Parses a Go duration such as `4m0s`, `1h30m`, `1.5s`, `300ms`. Negative durations
/// are rejected: none of kubeadm's timeouts may be negative.
pub fn parse(s: &str) -> Result<Duration> {
    let orig = s;
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        bail!("time: invalid duration {orig:?}");
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            bail!("time: invalid duration {orig:?}");
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| anyhow::anyhow!("time: invalid duration {orig:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => bail!("time: missing unit in duration {orig:?}"),
            u => bail!("time: unknown unit {u:?} in duration {orig:?}"),
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

/// Formats like Go's `Duration.String()`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (div, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", frac(nanos, div));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let secs = frac(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `n / div` with the fraction printed without trailing zeros.
fn frac(n: u128, div: u128) -> String {
    let whole = n / div;
    let rem = n % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("4m0s").unwrap(), Duration::from_secs(240));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert!(parse("").is_err());
        assert!(parse("5").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(40)), "40s");
        assert_eq!(format(Duration::from_secs(240)), "4m0s");
        assert_eq!(format(Duration::from_millis(80_500)), "1m20.5s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format(Duration::from_nanos(1_000_123_000)), "1.000123s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
