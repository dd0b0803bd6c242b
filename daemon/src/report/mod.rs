//! What the agent tells the operator on the node: `status` (where the join stands),
//! `check` (everything it would verify, changing nothing) and `diagnose` (one report for
//! a human or a bug report). Each prints text for a terminal or, with `--json`, a
//! document with a `schema` name whose shape is documented in docs/json.md and kept
//! stable. No output ever holds a secret: every document goes through
//! [`redact`] on its way out, whatever built it.

pub mod check;
pub mod diagnose;
pub mod status;

use crate::config::Settings;
use crate::preflight::{Finding, Verdict};
use serde::Serialize;

/// One checked thing: pass, warn or fail, with the reason and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The check's stable name (those of `preflight.warn_only`, plus configuration,
    /// discovery, clock-skew and node-name).
    pub check: String,
    /// `pass`, `warn` or `fail`.
    pub verdict: &'static str,
    /// What was found.
    pub reason: String,
    /// What to do; empty for a pass.
    pub fix: String,
}

impl Row {
    /// A passing row.
    pub fn pass(check: &str, reason: impl Into<String>) -> Self {
        Self::new(check, "pass", reason.into(), String::new())
    }

    /// A warning.
    pub fn warn(check: &str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, "warn", reason.into(), fix.into())
    }

    /// A failure.
    pub fn fail(check: &str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, "fail", reason.into(), fix.into())
    }

    fn new(check: &str, verdict: &'static str, reason: String, fix: String) -> Self {
        Self {
            check: check.to_string(),
            verdict,
            reason,
            fix,
        }
    }

    /// A preflight finding; `waiting_fix` is the fix for a check that would be waited
    /// for (check waits for nothing: not up now is a failure now).
    pub fn from_finding(f: &Finding, waiting_fix: &str) -> Self {
        match &f.verdict {
            Verdict::Pass(what) => Self::pass(f.check, what.clone()),
            Verdict::Warn { reason, fix } => Self::warn(f.check, reason.clone(), fix.clone()),
            Verdict::Fail { reason, fix } => Self::fail(f.check, reason.clone(), fix.clone()),
            Verdict::Wait(why) => Self::fail(f.check, why.clone(), waiting_fix),
        }
    }

    /// Whether it fails.
    pub fn fails(&self) -> bool {
        self.verdict == "fail"
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.verdict {
            "pass" => "[pass]",
            "warn" => "[warn]",
            _ => "[FAIL]",
        };
        write!(f, "{tag} {}: {}", self.check, self.reason)?;
        if !self.fix.is_empty() {
            write!(f, "\n       fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Removes the bootstrap token's secret and the certificate key from `text`.
pub fn redact(settings: Option<&Settings>, text: &str) -> String {
    let Some(s) = settings else {
        return text.to_string();
    };
    let mut text = s.join.token.secret().redact(text);
    if let Some(cp) = &s.join.control_plane {
        text = cp.certificate_key.redact(&text);
    }
    text
}

/// `value` as pretty JSON, redacted.
pub fn json(settings: Option<&Settings>, value: &impl Serialize) -> String {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    redact(settings, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_as_the_journal_does() {
        let row = Row::fail("swap", "swap is on", "swapoff -a");
        assert_eq!(
            row.to_string(),
            "[FAIL] swap: swap is on\n       fix: swapoff -a"
        );
        assert!(row.fails());
        let waiting = Finding {
            check: "api-server",
            verdict: Verdict::Wait("cannot connect".into()),
        };
        let row = Row::from_finding(&waiting, "start it");
        assert_eq!((row.verdict, row.fix.as_str()), ("fail", "start it"));
        assert_eq!(
            serde_json::to_value(Row::pass("dns", "ok")).unwrap(),
            serde_json::json!({"check": "dns", "verdict": "pass", "reason": "ok", "fix": ""})
        );
    }
}
