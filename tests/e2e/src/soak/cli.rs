//! The command line: `soak [--runs N] [--seed S] [--replay S:RUN] [--parallel P]`.

use anyhow::{Context, Result, bail};

pub const USAGE: &str = "\
usage: cargo run -p kja-e2e --release --bin soak -- [options]   (as root)

Joins fresh systemd nodes (systemd-nspawn, real containerd, the fakes) with the agent
($KJA_AGENT_BIN, else target/debug/kube-join-agent) while one to three faults, drawn
from the seed, strike at random moments of the join: the agent or kubeadm killed,
kubeadm stopped past the no-progress limit, containerd stopped, the API server down,
the bootstrap token deleted, the node powered off, kubelet restarted by hand, the state
file truncated, an invalid fragment dropped in while the agent waits. Each run must end
joined, or stopped with a failure class that names a fault left in place, and nothing
that must never happen may happen. Prints each run's faults and outcome, evidence for
every violation (saved under target/e2e-artifacts/soak-SEED-RUN/), and a summary; exits
1 if any run had a violation.

options:
  --runs N           runs (default 10), numbered 0 to N-1
  --seed S           the seed (default: a random one, printed)
  --replay S:RUN     only run RUN of the soak seeded S, with the same faults and moments
  --parallel P       runs at a time (default 1; 2 on a 2-core machine)
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub seed: u64,
    /// The run numbers to run.
    pub runs: Vec<u64>,
    pub parallel: usize,
    /// The seed was drawn, not given.
    pub random_seed: bool,
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ std::process::id() as u64).to_le_bytes();
    }
    // Short enough to type back.
    u64::from_le_bytes(bytes) % 1_000_000_000
}

/// Parses the arguments after the program name. `Ok(None)`: help was asked for.
pub fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut seed = None;
    let mut runs = 10u64;
    let mut replay = None;
    let mut parallel = 1usize;
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
                runs = value()?.parse().context("--runs")?;
                if runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--seed" => seed = Some(value()?.parse().context("--seed")?),
            "--replay" => {
                let v = value()?;
                let (s, r) = v
                    .split_once(':')
                    .with_context(|| format!("--replay takes SEED:RUN, not {v:?}"))?;
                replay = Some((
                    s.parse::<u64>().context("--replay's seed")?,
                    r.parse::<u64>().context("--replay's run")?,
                ));
            }
            "--parallel" => {
                parallel = value()?.parse().context("--parallel")?;
                if parallel == 0 {
                    bail!("--parallel must be at least 1");
                }
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if let Some((s, r)) = replay {
        if seed.is_some_and(|given| given != s) {
            bail!("--seed and --replay name different seeds");
        }
        return Ok(Some(Options {
            seed: s,
            runs: vec![r],
            parallel: 1,
            random_seed: false,
        }));
    }
    Ok(Some(Options {
        random_seed: seed.is_none(),
        seed: seed.unwrap_or_else(random_seed),
        runs: (0..runs).collect(),
        parallel,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_documented_flags() {
        let o = parse(&args(&["--runs", "3", "--seed=42", "--parallel", "2"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.runs, vec![0, 1, 2]);
        assert_eq!((o.seed, o.parallel, o.random_seed), (42, 2, false));
        let r = parse(&args(&["--replay", "42:17"])).unwrap().unwrap();
        assert_eq!((r.seed, r.runs.clone()), (42, vec![17]));
        assert!(parse(&args(&["--replay", "42"])).is_err());
        assert!(parse(&args(&["--seed", "1", "--replay", "2:3"])).is_err());
        assert!(parse(&args(&["--runs", "0"])).is_err());
        assert!(parse(&args(&["--help"])).unwrap().is_none());
        assert!(parse(&[]).unwrap().unwrap().random_seed);
    }
}
