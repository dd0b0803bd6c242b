//! kubeadm's error classes and how they end the process (kubeadm/util/error.go):
//! exit 1 generic, 2 preflight, 3 validation; the message goes to stderr followed by
//! "To see the stack trace of this error execute with --v=5 or higher".
//!
//! `checkErr` picks the code with a type switch on the error it is handed (v1.13 through
//! v1.33), and the phase runner (cmd/phases/workflow/runner.go) hands it
//! `errors.Wrapf(err, "error execution phase %s")`: a pkg/errors wrapper, which is neither
//! a `preflightError` nor an `Aggregate`. So an error raised inside any phase exits 1,
//! whatever it wraps; only errors outside the runner (config loading, flag validation)
//! keep 3. A failed join preflight exits 1 (measured with real v1.20.2); v1.34 dropped
//! the other codes altogether (kubernetes PR #132080).

use std::fmt;

/// A failed kubeadm command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeadmError {
    /// Bad flags or configuration: not worth retrying.
    Validation(String),
    /// Preflight checks failed; the text is the `\t[ERROR ...]: ...\n` lines.
    Preflight(String),
    /// Anything else.
    Generic(String),
}

impl KubeadmError {
    /// The process exit code upstream uses for this class.
    pub fn exit_code(&self) -> i32 {
        match self {
            KubeadmError::Generic(_) => 1,
            KubeadmError::Preflight(_) => 2,
            KubeadmError::Validation(_) => 3,
        }
    }

    /// Prefixes the message as the phase runner does: `error execution phase X: ...`.
    /// The wrapped error is a plain (generic) one to `checkErr`: it exits 1, whatever
    /// class it wrapped.
    pub fn in_phase(self, phase: &str) -> Self {
        let wrap = |m: String| format!("error execution phase {phase}: {m}");
        KubeadmError::Generic(match self {
            // preflight.Error's text: the header, the `[ERROR ...]` lines, the hint.
            KubeadmError::Preflight(lines) => wrap(format!(
                "[preflight] Some fatal errors occurred:\n{lines}[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
            )),
            KubeadmError::Validation(m) | KubeadmError::Generic(m) => wrap(m),
        })
    }

    /// The message as printed (without the stack-trace hint).
    pub fn message(&self) -> &str {
        match self {
            KubeadmError::Validation(m) | KubeadmError::Preflight(m) | KubeadmError::Generic(m) => {
                m
            }
        }
    }

    /// Prints the error the way `kubeadmutil.CheckErr` does and returns the exit code.
    pub fn report(&self, verbosity: u32) -> i32 {
        if verbosity >= 5 {
            eprintln!("{}", self.message());
        } else {
            eprintln!(
                "{}\nTo see the stack trace of this error execute with --v=5 or higher",
                self.message()
            );
        }
        self.exit_code()
    }
}

impl fmt::Display for KubeadmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for KubeadmError {}

/// Shorthand for a generic error.
pub fn generic(msg: impl Into<String>) -> KubeadmError {
    KubeadmError::Generic(msg.into())
}

/// Shorthand for a validation error.
pub fn validation(msg: impl Into<String>) -> KubeadmError {
    KubeadmError::Validation(msg.into())
}

/// `utilerrors.NewAggregate(errs).Error()`: one error alone, several as `[a, b]`.
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_wrapping_and_codes() {
        // Unwrapped, the classes keep their codes (as checkErr's type switch sees them).
        assert_eq!(KubeadmError::Preflight("x".into()).exit_code(), 2);
        assert_eq!(validation("x").exit_code(), 3);
        // The phase runner's wrapper hides the class: a failed join preflight exits 1.
        let e = KubeadmError::Preflight("\t[ERROR X]: y\n".into()).in_phase("preflight");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(validation("x").in_phase("preflight").exit_code(), 1);
        assert_eq!(
            e.message(),
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR X]: y\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
        );
        let e = generic("boom").in_phase("kubelet-start");
        assert_eq!(e.message(), "error execution phase kubelet-start: boom");
        assert_eq!(validation("x").exit_code(), 3);
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }
}
