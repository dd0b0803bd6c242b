//! kubeadm's error classes and how they end the process (kubeadm/util/error.go):
//! exit 1 generic, 2 preflight, 3 validation; the message goes to stderr followed by
//! "To see the stack trace of this error execute with --v=5 or higher".

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
    pub fn in_phase(self, phase: &str) -> Self {
        let wrap = |m: String| format!("error execution phase {phase}: {m}");
        match self {
            KubeadmError::Validation(m) => KubeadmError::Validation(wrap(m)),
            // preflight.Error's text: the header, the `[ERROR ...]` lines, the hint.
            KubeadmError::Preflight(lines) => KubeadmError::Preflight(wrap(format!(
                "[preflight] Some fatal errors occurred:\n{lines}[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
            ))),
            KubeadmError::Generic(m) => KubeadmError::Generic(wrap(m)),
        }
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
        let e = KubeadmError::Preflight("\t[ERROR X]: y\n".into()).in_phase("preflight");
        assert_eq!(e.exit_code(), 2);
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
