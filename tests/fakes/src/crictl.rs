//! `fake-crictl`, installed in the test nodes as `/usr/bin/crictl`: kubeadm's preflight
//! finds `crictl` on PATH (`FileExisting-crictl`) and runs `crictl -r <endpoint> info`
//! (`CRI`). The fake answers `info` (and `version`, `pods`, `ps`) by dialling the
//! endpoint's socket, which is all kubeadm learns from the real tool: exit 0 with the
//! runtime's status, or crictl's fatal line and exit 1.

use std::os::unix::net::UnixStream;
use std::time::SystemTime;

use crate::fsroot::{Root, go_errno_text};
use crate::timefmt;

/// crictl's built-in default endpoint when none is given (containerd's).
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The parsed command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-r`/`--runtime-endpoint`.
    pub runtime_endpoint: Option<String>,
    /// The subcommand and its arguments.
    pub rest: Vec<String>,
}

/// Parses crictl's global flags (`-r X`, `--runtime-endpoint=X`, `-i`, `--timeout`, `-D`).
pub fn parse(argv: &[String]) -> Args {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let tok = argv[i].as_str();
        i += 1;
        let (name, inline) = match tok.split_once('=') {
            Some((n, v)) if n.starts_with('-') => (n, Some(v.to_owned())),
            _ => (tok, None),
        };
        let mut value = || {
            inline.clone().or_else(|| {
                i += 1;
                argv.get(i - 1).cloned()
            })
        };
        match name {
            "-r" | "--runtime-endpoint" => a.runtime_endpoint = value(),
            "-i" | "--image-endpoint" | "-t" | "--timeout" | "-c" | "--config" => {
                let _ = value();
            }
            "-D" | "--debug" => {}
            _ => {
                a.rest = argv[i - 1..].to_vec();
                break;
            }
        }
    }
    a
}

/// Dials the endpoint; Err is crictl's fatal message for a runtime that does not answer.
pub fn dial(root: &Root, endpoint: &str) -> Result<(), String> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    UnixStream::connect(root.path(path)).map(|_| ()).map_err(|e| {
        format!(
            "validate service connection: validate CRI v1 runtime API for endpoint {endpoint:?}: rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix {path}: connect: {}\"",
            go_errno_text(&e)
        )
    })
}

fn fatal(msg: &str) -> i32 {
    eprintln!(
        "time=\"{}\" level=fatal msg={}",
        timefmt::rfc3339(SystemTime::now()),
        crate::klog::quote(msg)
    );
    1
}

/// Runs crictl with `argv` (including the program name); returns the exit code.
pub fn run(argv: Vec<String>) -> i32 {
    let root = Root::from_env();
    let a = parse(argv.get(1..).unwrap_or_default());
    let endpoint = a
        .runtime_endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    let cmd = a.rest.first().map(String::as_str);
    match cmd {
        Some("info" | "version" | "pods" | "ps" | "images") => {
            if let Err(e) = dial(&root, &endpoint) {
                return fatal(&e);
            }
            match cmd {
                Some("info") => println!(
                    "{{\n  \"status\": {{\n    \"conditions\": [\n      {{\n        \"type\": \"RuntimeReady\",\n        \"status\": true,\n        \"reason\": \"\",\n        \"message\": \"\"\n      }},\n      {{\n        \"type\": \"NetworkReady\",\n        \"status\": true,\n        \"reason\": \"\",\n        \"message\": \"\"\n      }}\n    ]\n  }}\n}}"
                ),
                Some("version") => println!(
                    "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  1.6.20\nRuntimeApiVersion:  v1"
                ),
                // No pods or containers: the fakes run none.
                _ => {}
            }
            0
        }
        Some(other) => {
            eprintln!("No help topic for '{other}'");
            3
        }
        None => {
            println!(
                "NAME:\n   crictl - client for CRI (fake-crictl: info, version, pods, ps, images)"
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_kubeadm_command_lines() {
        let a = parse(&v(&["-r", "unix:///run/c.sock", "info"]));
        assert_eq!(a.runtime_endpoint.as_deref(), Some("unix:///run/c.sock"));
        assert_eq!(a.rest, v(&["info"]));
        let a = parse(&v(&["-r", "unix:///x", "-i", "unix:///x", "info"]));
        assert_eq!(a.rest, v(&["info"]));
        let a = parse(&v(&[
            "--runtime-endpoint=unix:///y",
            "-D=false",
            "pods",
            "-q",
        ]));
        assert_eq!(a.runtime_endpoint.as_deref(), Some("unix:///y"));
        assert_eq!(a.rest, v(&["pods", "-q"]));
    }

    #[test]
    fn a_missing_socket_is_crictls_unavailable_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = dial(
            &Root::at(dir.path()),
            "unix:///run/containerd/containerd.sock",
        )
        .unwrap_err();
        assert!(e.starts_with("validate service connection: validate CRI v1 runtime API for endpoint \"unix:///run/containerd/containerd.sock\": rpc error: code = Unavailable"), "{e}");
        assert!(e.contains(
            "dial unix /run/containerd/containerd.sock: connect: no such file or directory"
        ));
        let sock = dir.path().join("run/containerd/containerd.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(dial(&Root::at(dir.path()), "/run/containerd/containerd.sock").is_ok());
    }
}
