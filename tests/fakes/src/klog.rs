//! klog-formatted lines on stderr, as kubelet and kubeadm write them:
//! `I1121 01:02:03.123456    1234 server.go:487] "Kubelet version" kubeletVersion="v1.29.7"`.
//! systemd forwards stderr to the journal, where the agent and the tests read them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use crate::timefmt;

static VERBOSITY: AtomicU32 = AtomicU32::new(0);

/// Sets `-v`/`--v`: lines logged at `klog.V(n)` show only when n <= this.
pub fn set_verbosity(v: u32) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// `klog.V(level).Enabled()`.
pub fn v(level: u32) -> bool {
    VERBOSITY.load(Ordering::Relaxed) >= level
}

/// klog severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `I`
    Info,
    /// `W`
    Warning,
    /// `E`
    Error,
}

impl Severity {
    fn letter(self) -> char {
        match self {
            Severity::Info => 'I',
            Severity::Warning => 'W',
            Severity::Error => 'E',
        }
    }
}

/// The header klog puts before every message; `source` is the `file.go:line` upstream logs from.
pub fn header(sev: Severity, source: &str) -> String {
    format!(
        "{}{} {:>7} {source}] ",
        sev.letter(),
        timefmt::klog(SystemTime::now()),
        std::process::id()
    )
}

/// Go's `%q` for the strings klog quotes (messages and values of structured logs).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A structured line: `"msg" key="value" ...`.
pub fn structured(sev: Severity, source: &str, msg: &str, kvs: &[(&str, &str)]) -> String {
    let mut line = header(sev, source);
    line.push_str(&quote(msg));
    for (k, v) in kvs {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&quote(v));
    }
    line
}

/// Prints a structured line to stderr.
pub fn log(sev: Severity, source: &str, msg: &str, kvs: &[(&str, &str)]) {
    eprintln!("{}", structured(sev, source, msg, kvs));
}

/// Prints a printf-style line (kubeadm's `klog.Warningf`) to stderr.
pub fn printf(sev: Severity, source: &str, msg: &str) {
    eprintln!("{}{}", header(sev, source), msg.trim_end_matches('\n'));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_line_shape() {
        let line = structured(
            Severity::Error,
            "run.go:74",
            "command failed",
            &[("err", "a \"b\"\nc")],
        );
        assert!(line.starts_with('E'));
        assert!(
            line.ends_with(r#"run.go:74] "command failed" err="a \"b\"\nc""#),
            "{line}"
        );
    }
}
