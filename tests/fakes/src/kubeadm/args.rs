//! Command-line parsing with Go pflag/cobra semantics (`--flag=value`, `--flag value`,
//! `-v5`, repeated and comma-separated list flags), because kubeadm's users (the agent)
//! write flags that way and expect cobra's error texts.

use std::collections::BTreeSet;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` or `--flag=true|false`.
    Bool,
    /// `--flag=value` or `--flag value`.
    Value,
    /// Like `Value`, repeatable, comma-separated.
    List,
}

/// One known flag.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Long name.
    pub name: &'static str,
    /// Shorthand letter.
    pub short: Option<char>,
    /// Value kind.
    pub kind: Kind,
}

const fn f(name: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        short: None,
        kind,
    }
}

const fn s(name: &'static str, short: char, kind: Kind) -> Spec {
    Spec {
        name,
        short: Some(short),
        kind,
    }
}

/// klog and cobra flags every kubeadm command accepts.
pub const GLOBAL: &[Spec] = &[
    s("v", 'v', Kind::Value),
    s("help", 'h', Kind::Bool),
    f("log-file", Kind::Value),
    f("log-file-max-size", Kind::Value),
    f("rootfs", Kind::Value),
    f("add-dir-header", Kind::Bool),
    f("skip-headers", Kind::Bool),
    f("skip-log-headers", Kind::Bool),
    f("one-output", Kind::Bool),
];

/// `kubeadm join` (and `join phase ...`) flags of v1.29.
pub const JOIN: &[Spec] = &[
    f("apiserver-advertise-address", Kind::Value),
    f("apiserver-bind-port", Kind::Value),
    f("certificate-key", Kind::Value),
    f("config", Kind::Value),
    f("control-plane", Kind::Bool),
    f("cri-socket", Kind::Value),
    f("discovery-file", Kind::Value),
    f("discovery-token", Kind::Value),
    f("discovery-token-ca-cert-hash", Kind::List),
    f("discovery-token-unsafe-skip-ca-verification", Kind::Bool),
    f("dry-run", Kind::Bool),
    f("ignore-preflight-errors", Kind::List),
    f("node-name", Kind::Value),
    f("patches", Kind::Value),
    f("skip-phases", Kind::List),
    f("tls-bootstrap-token", Kind::Value),
    f("token", Kind::Value),
];

/// `kubeadm reset` flags.
pub const RESET: &[Spec] = &[
    s("force", 'f', Kind::Bool),
    f("cert-dir", Kind::Value),
    f("cleanup-tmp-dir", Kind::Bool),
    f("cri-socket", Kind::Value),
    f("dry-run", Kind::Bool),
    f("ignore-preflight-errors", Kind::List),
    f("kubeconfig", Kind::Value),
    f("skip-phases", Kind::List),
];

/// `kubeadm version` flags.
pub const VERSION: &[Spec] = &[s("output", 'o', Kind::Value)];

/// Flags whose values are secrets: never logged.
pub const SECRET_FLAGS: &[&str] = &[
    "token",
    "discovery-token",
    "tls-bootstrap-token",
    "certificate-key",
];

/// Parsed flags and positional arguments.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// Positional arguments, in order.
    pub args: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Parsed {
    /// Whether the flag was given at all.
    pub fn changed(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    /// The last value given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a list flag, comma-split.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A boolean flag's value.
    pub fn bool(&self, name: &str) -> bool {
        self.value(name) == Some("true")
    }

    /// Names of all flags given (sorted, as pflag's `Visit` walks them).
    pub fn names(&self) -> BTreeSet<String> {
        self.flags.iter().map(|(n, _)| n.clone()).collect()
    }

    /// `--v` as a number.
    pub fn verbosity(&self) -> u32 {
        self.value("v").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

fn find<'a>(specs: &[&'a [Spec]], pred: impl Fn(&Spec) -> bool) -> Option<&'a Spec> {
    specs.iter().flat_map(|s| s.iter()).find(|s| pred(s))
}

fn parse_bool(flag: &str, v: &str) -> Result<String, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true".into()),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false".into()),
        _ => Err(format!(
            "invalid argument {v:?} for {flag:?} flag: strconv.ParseBool: parsing {v:?}: invalid syntax"
        )),
    }
}

/// Parses `argv` (without the program name) against the given flag tables. Errors are
/// cobra's texts (`unknown flag: --x`, `flag needs an argument: --config`).
pub fn parse(argv: &[String], specs: &[&[Spec]]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < argv.len() {
        let tok = &argv[i];
        i += 1;
        if tok == "--" {
            out.args.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(long) = tok.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let spec =
                find(specs, |s| s.name == name).ok_or_else(|| format!("unknown flag: --{name}"))?;
            let value = match (spec.kind, inline) {
                (Kind::Bool, Some(v)) => parse_bool(&format!("--{name}"), &v)?,
                (Kind::Bool, None) => "true".into(),
                (_, Some(v)) => v,
                (_, None) if i < argv.len() => {
                    i += 1;
                    argv[i - 1].clone()
                }
                (_, None) => return Err(format!("flag needs an argument: --{name}")),
            };
            out.flags.push((spec.name.to_owned(), value));
        } else if let Some(shorts) = tok.strip_prefix('-').filter(|s| !s.is_empty()) {
            // Shorthand: -f, -v5, -v=5, -v 5, or clustered booleans -fh.
            let chars: Vec<char> = shorts.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let spec = find(specs, |s| s.short == Some(c))
                    .ok_or_else(|| format!("unknown shorthand flag: '{c}' in -{shorts}"))?;
                j += 1;
                if spec.kind == Kind::Bool {
                    out.flags.push((spec.name.to_owned(), "true".into()));
                    continue;
                }
                let rest: String = chars[j..].iter().collect();
                let value = if !rest.is_empty() {
                    rest.strip_prefix('=').unwrap_or(&rest).to_owned()
                } else if i < argv.len() {
                    i += 1;
                    argv[i - 1].clone()
                } else {
                    return Err(format!("flag needs an argument: '{c}' in -{c}"));
                };
                out.flags.push((spec.name.to_owned(), value));
                break;
            }
        } else {
            out.args.push(tok.clone());
        }
    }
    if let Some(v) = out.value("v")
        && v.parse::<u32>().is_err()
    {
        return Err(format!(
            "invalid argument {v:?} for \"-v, --v\" flag: strconv.ParseInt: parsing {v:?}: invalid syntax"
        ));
    }
    Ok(out)
}

/// Splits off the subcommand: global flags may precede it (`kubeadm --v=5 join ...`).
/// Returns the subcommand (if any) and the remaining arguments, flags included.
pub fn split_command(argv: &[String]) -> (Option<String>, Vec<String>) {
    let mut i = 0;
    while i < argv.len() {
        let tok = &argv[i];
        if tok == "--" {
            break;
        }
        if !tok.starts_with('-') || tok == "-" {
            let mut rest = argv[..i].to_vec();
            rest.extend(argv[i + 1..].iter().cloned());
            return (Some(tok.clone()), rest);
        }
        // A global value flag written as two words swallows the next one.
        let takes_next = match tok.strip_prefix("--") {
            Some(long) => {
                !long.contains('=')
                    && GLOBAL
                        .iter()
                        .any(|s| s.name == long && s.kind != Kind::Bool)
            }
            None => {
                tok.len() == 2
                    && GLOBAL
                        .iter()
                        .any(|s| tok.ends_with(s.short.unwrap_or('\0')) && s.kind != Kind::Bool)
            }
        };
        i += if takes_next { 2 } else { 1 };
    }
    (None, argv.to_vec())
}

/// The argv for the invocation log, with secret flag values replaced.
pub fn redacted_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    for a in argv {
        if redact_next {
            out.push("<redacted>".to_owned());
            redact_next = false;
            continue;
        }
        let name = a.trim_start_matches('-');
        let (flag, has_value) = match name.split_once('=') {
            Some((n, _)) => (n, true),
            None => (name, false),
        };
        if a.starts_with("--") && SECRET_FLAGS.contains(&flag) {
            if has_value {
                out.push(format!("--{flag}=<redacted>"));
            } else {
                out.push(a.clone());
                redact_next = true;
            }
        } else {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pflag_forms() {
        let p = parse(
            &v(&[
                "--config",
                "/run/j.yaml",
                "--v=5",
                "--ignore-preflight-errors=Swap,Port-10250",
                "--ignore-preflight-errors",
                "all",
                "--dry-run",
                "ep:6443",
            ]),
            &[GLOBAL, JOIN],
        )
        .unwrap();
        assert_eq!(p.value("config"), Some("/run/j.yaml"));
        assert_eq!(p.verbosity(), 5);
        assert_eq!(
            p.list("ignore-preflight-errors"),
            v(&["Swap", "Port-10250", "all"])
        );
        assert!(p.bool("dry-run"));
        assert_eq!(p.args, v(&["ep:6443"]));
        let p = parse(&v(&["-v5", "-f"]), &[GLOBAL, RESET]).unwrap();
        assert_eq!(p.verbosity(), 5);
        assert!(p.bool("force"));
    }

    #[test]
    fn cobra_errors() {
        assert_eq!(
            parse(&v(&["--nope"]), &[GLOBAL, JOIN]).unwrap_err(),
            "unknown flag: --nope"
        );
        assert_eq!(
            parse(&v(&["--config"]), &[GLOBAL, JOIN]).unwrap_err(),
            "flag needs an argument: --config"
        );
        assert!(
            parse(&v(&["-f"]), &[GLOBAL, JOIN])
                .unwrap_err()
                .contains("unknown shorthand flag: 'f'")
        );
        assert!(parse(&v(&["--v=x"]), &[GLOBAL]).is_err());
    }

    #[test]
    fn finds_subcommand_after_global_flags() {
        let (cmd, rest) = split_command(&v(&["--v", "5", "join", "--config", "x"]));
        assert_eq!(cmd.as_deref(), Some("join"));
        assert_eq!(rest, v(&["--v", "5", "--config", "x"]));
        assert_eq!(split_command(&v(&["-h"])).0, None);
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(
            redacted_argv(&v(&[
                "join",
                "--token",
                "abcdef.0123456789abcdef",
                "--discovery-token=x",
                "--config",
                "f"
            ])),
            v(&[
                "join",
                "--token",
                "<redacted>",
                "--discovery-token=<redacted>",
                "--config",
                "f"
            ])
        );
    }
}
