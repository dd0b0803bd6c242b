//! The command line: `bench [--runs N] [--baseline-agent PATH] [--only NAME,...]
//! [--json FILE] [--cap SECS]`.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: cargo run -p kja-e2e --release --bin bench -- [options]   (as root)

Measures the agent on real systemd nodes against a fake control plane and prints, per
measure, min / median / max over the runs for the agent under test ($KJA_AGENT_BIN, else
target/release/kube-join-agent, else the debug build; the fakes from $KJA_BIN_DIR, else
target/release when built there), the baseline agent if given, and
the no-agent reference where the measure has one; then a Markdown table with the
targets of the issue \"React at once\" (reported, never asserted).

options:
  --runs N                runs per measure and column (default 7)
  --baseline-agent PATH   also measure this (older) agent binary, interleaved run by run
  --only NAME,...         only these measures (\"fix\" = all four fix-*):
                          handoff kubelet-starts gate join join-before-kubeadm sandbox
                          fix-grace fix-token fix-backoff fix-name cold failure rss
                          wakeups size
  --json FILE             write every raw sample and the machine description as JSON
  --cap SECS              give up waiting for kubeadm after a fix after this long and
                          report \"> cap\" (default 90)
";

#[derive(Debug, Clone)]
pub struct Options {
    pub runs: usize,
    pub baseline: Option<PathBuf>,
    pub only: Option<Vec<String>>,
    pub json: Option<PathBuf>,
    pub cap: Duration,
}

/// Parses the arguments after the program name. `Ok(None)`: help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        runs: 7,
        baseline: None,
        only: None,
        json: None,
        cap: Duration::from_secs(90),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--runs" => {
                o.runs = value()?.parse().context("--runs")?;
                if o.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--baseline-agent" => o.baseline = Some(PathBuf::from(value()?)),
            "--json" => o.json = Some(PathBuf::from(value()?)),
            "--cap" => o.cap = Duration::from_secs_f64(value()?.parse().context("--cap")?),
            "--only" => {
                let mut names = Vec::new();
                for n in value()?.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if n == "fix" {
                        names.extend(
                            ["fix-grace", "fix-token", "fix-backoff", "fix-name"].map(String::from),
                        );
                    } else if super::measure(n).is_some() {
                        names.push(n.to_string());
                    } else {
                        bail!("--only: unknown measure {n:?}\n{USAGE}");
                    }
                }
                o.only = Some(names);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_documented_flags() {
        let o = parse(&args(&[
            "--runs",
            "3",
            "--baseline-agent=/tmp/old",
            "--only",
            "handoff,fix",
            "--json",
            "out.json",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.runs, 3);
        assert_eq!(o.baseline, Some(PathBuf::from("/tmp/old")));
        assert_eq!(o.only.unwrap().len(), 5);
        assert_eq!(o.json, Some(PathBuf::from("out.json")));
        assert!(parse(&args(&["--only", "nope"])).is_err());
        assert!(parse(&args(&["--runs"])).is_err());
        assert!(parse(&args(&["--help"])).unwrap().is_none());
        assert_eq!(parse(&[]).unwrap().unwrap().runs, 7);
    }
}
