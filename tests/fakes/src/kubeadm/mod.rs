//! `fake-kubeadm`, installed in the node as `/usr/bin/kubeadm`: `version`, `join` (and
//! `join phase ...`, worker and stacked control-plane), `reset`, with upstream's output,
//! files, exit codes and timings, steered by `/etc/fake-k8s/kubeadm.env`.

pub mod args;
pub mod config;
pub mod cp;
pub mod discovery;
pub mod env;
pub mod error;
pub mod events;
pub mod join;
pub mod kubelet_start;
pub mod preflight;
pub mod reset;
pub mod systemd;
pub mod waits;

use std::time::SystemTime;

use crate::fsroot::{self, Root};
use crate::kubeversion::KubeVersion;
use crate::timefmt;
use args::{GLOBAL, JOIN, RESET, VERSION};

/// HANG_AFTER: stop making progress, silently, until killed. No signal handler is
/// installed, so SIGTERM and SIGKILL end the process at once (and, like Go's defers,
/// no cleanup runs).
pub fn hang() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

const USAGE: &str = "
    ┌──────────────────────────────────────────────────────────┐
    │ KUBEADM                                                  │
    │ Easily bootstrap a secure Kubernetes cluster             │
    │                                                          │
    │ (fake-kubeadm: version, join, join phase, reset)         │
    └──────────────────────────────────────────────────────────┘

Usage:
  kubeadm [command]

Available Commands:
  join        Run this on any machine you wish to join an existing cluster
  reset       Performs a best effort revert of changes made to this host by 'kubeadm init' or 'kubeadm join'
  version     Print the version of kubeadm
";

fn log_invocation(root: &Root, argv: &[String]) {
    let shown: Vec<String> = args::redacted_argv(argv)
        .into_iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) || a.contains('\'') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect();
    let line = format!(
        "{} {}",
        timefmt::rfc3339_micros(SystemTime::now()),
        shown.join(" ")
    );
    if let Err(e) = fsroot::append_line(&root.path(env::INVOCATION_LOG), &line) {
        eprintln!("fake-kubeadm: warning: {e:#}");
    }
    events::record(root, &format!("start {}", shown.join(" ")));
}

fn cobra_error(msg: &str) -> i32 {
    eprintln!("{msg}\nTo see the stack trace of this error execute with --v=5 or higher");
    1
}

fn version_info(v: KubeVersion) -> String {
    format!(
        "&version.Info{{Major:\"{}\", Minor:\"{}\", GitVersion:\"{v}\", GitCommit:\"0000000000000000000000000000000000000000\", GitTreeState:\"clean\", BuildDate:\"2024-07-16T14:47:02Z\", GoVersion:\"go1.22.5\", Compiler:\"gc\", Platform:\"linux/amd64\"}}",
        v.major, v.minor
    )
}

fn version_cmd(p: &args::Parsed, v: KubeVersion) -> i32 {
    match p.value("output").unwrap_or("") {
        "" => println!("kubeadm version: {}", version_info(v)),
        "short" => println!("{v}"),
        "json" => {
            let info = crate::apiserver::objects::version_info(v);
            let out = serde_json::json!({ "clientVersion": info });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        "yaml" => {
            let info = crate::apiserver::objects::version_info(v);
            let out = serde_json::json!({ "clientVersion": info });
            print!("{}", serde_norway::to_string(&out).unwrap_or_default());
        }
        other => return cobra_error(&format!("invalid output format: {other}")),
    }
    0
}

/// Runs kubeadm with `argv` (including the program name); returns the exit code, which
/// the event log records last.
pub fn run(argv: Vec<String>) -> i32 {
    let root = Root::from_env();
    let code = run_in(root.clone(), argv);
    events::record(&root, &format!("exit {code}"));
    code
}

fn run_in(root: Root, argv: Vec<String>) -> i32 {
    log_invocation(&root, &argv);
    let knobs = match env::Knobs::load(&root) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("fake-kubeadm: invalid knobs: {e:#}");
            return 1;
        }
    };
    let rest = argv.get(1..).unwrap_or_default();
    let (cmd, rest) = args::split_command(rest);
    let parse = |specs: &[&[args::Spec]]| args::parse(&rest, specs);
    match cmd.as_deref() {
        None => {
            if let Err(e) = parse(&[GLOBAL]) {
                return cobra_error(&e);
            }
            print!("{USAGE}");
            0
        }
        Some("version") => match parse(&[GLOBAL, VERSION]) {
            Ok(p) => version_cmd(&p, knobs.reported_version.unwrap_or(knobs.version)),
            Err(e) => cobra_error(&e),
        },
        Some("reset") => match parse(&[GLOBAL, RESET]) {
            Ok(p) if p.bool("help") => {
                println!(
                    "Performs a best effort revert of changes made to this host by 'kubeadm init' or 'kubeadm join'"
                );
                0
            }
            Ok(p) => match reset::run(&p, &root, knobs.version) {
                Ok(()) => 0,
                Err(e) => e.report(p.verbosity()),
            },
            Err(e) => cobra_error(&e),
        },
        Some("join") => {
            let p = match parse(&[GLOBAL, JOIN]) {
                Ok(p) => p,
                Err(e) => return cobra_error(&e),
            };
            if p.bool("help") {
                println!("Run this on any machine you wish to join an existing cluster");
                return 0;
            }
            let phase = match p.args.first().map(String::as_str) {
                Some("phase") => match p.args.get(1).map(String::as_str) {
                    Some(name) if join::PHASES.contains(&name) => {
                        match join::phase_steps(
                            name,
                            p.args.get(2).map(String::as_str),
                            knobs.version,
                        ) {
                            Ok(Some(steps)) => Some(steps),
                            Ok(None) => {
                                println!(
                                    "Use this command to invoke single phase of the {name} workflow"
                                );
                                return 0;
                            }
                            Err(e) => return cobra_error(&e),
                        }
                    }
                    Some(other) => {
                        return cobra_error(&format!(
                            "unknown command {other:?} for \"kubeadm join phase\""
                        ));
                    }
                    None => {
                        println!("Use this command to invoke single phase of the join workflow");
                        return 0;
                    }
                },
                _ => None,
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fake-kubeadm: starting the runtime: {e}");
                    return 1;
                }
            };
            crate::install_crypto_provider();
            runtime.block_on(join::run(&p, phase, root, knobs))
        }
        Some(other) => cobra_error(&format!("unknown command {other:?} for \"kubeadm\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_matches_upstream_shape() {
        let v = KubeVersion::parse("v1.29.7").unwrap();
        assert!(
            version_info(v)
                .starts_with("&version.Info{Major:\"1\", Minor:\"29\", GitVersion:\"v1.29.7\"")
        );
    }
}
