//! Command line: `run` (the daemon), `check`, `status`, `version`.

use crate::agent::{self, Exit};
use crate::config;
use crate::discovery;
use crate::kubeadm;
use crate::paths::Paths;
use crate::preflight::{self, Verdict};
use crate::state::State;
use crate::telemetry::{self, Sink};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Joins this machine to a Kubernetes cluster with kubeadm, and hands off to kubelet
/// only once its configuration is valid.
#[derive(Debug, Parser)]
#[command(name = "kube-join-agent", version, about, long_about = None)]
pub struct Cli {
    /// More output: -v for debug, -vv for everything (dependencies included).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Treat this directory as the file-system root (for testing against a copy).
    #[arg(long, hide = true, global = true, default_value = "/")]
    pub root: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the join and stay running (what kube-join-agent.service starts).
    Run,
    /// Check configuration, host, runtime, API server and discovery; change nothing.
    Check,
    /// Show the state file: phase, attempts, last failure.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the version.
    Version,
}

/// Parses arguments and runs; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider: choose ring, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let paths = Paths::new(&cli.root);
    match cli.command {
        Command::Version => {
            println!("kube-join-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Status { json } => status(&paths, json),
        Command::Check => {
            telemetry::init(Sink::Terminal, cli.verbose);
            runtime().block_on(check(&paths))
        }
        Command::Run => {
            telemetry::init(Sink::Daemon, cli.verbose);
            let exit = runtime().block_on(run_until_signalled(paths));
            ExitCode::from(exit as u8)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// The daemon until SIGTERM/SIGINT. SIGHUP makes a waiting agent reread its
/// configuration now (it rereads it at every attempt anyway).
async fn run_until_signalled(paths: Paths) -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return Exit::Restart;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::reload::request_reload();
        }
    });
    let stop = async {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    tokio::select! {
        exit = agent::run(paths) => exit,
        signal = stop => {
            // Dropping the agent kills a running kubeadm's process group. kubelet keeps
            // its runtime mask if the join was under way; the next start gates again.
            telemetry::notify_stopping();
            tracing::info!("{signal}: stopping");
            std::process::exit(0);
        }
    }
}

fn status(paths: &Paths, json: bool) -> ExitCode {
    let path = paths.state_file();
    match State::load(&path) {
        Err(e) => {
            eprintln!("kube-join-agent: {e}");
            ExitCode::from(1)
        }
        Ok(state) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&state).expect("state serializes")
            );
            ExitCode::SUCCESS
        }
        Ok(state) if state.phase.is_empty() => {
            println!(
                "no state yet ({} does not exist): the agent has not run",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(state) => {
            println!("node:       {}", state.node_name);
            println!("joined:     {}", if state.joined { "yes" } else { "no" });
            println!("phase:      {}", state.phase);
            println!("attempt:    {}", state.attempt);
            if let Some(f) = &state.failure {
                println!("failure:    {f}");
            }
            if let Some(e) = &state.last_error {
                println!("last error: {e}");
            }
            println!("updated:    {}", state.updated_at);
            ExitCode::SUCCESS
        }
    }
}

/// Preflight and discovery once, no waiting, nothing changed.
async fn check(paths: &Paths) -> ExitCode {
    let settings = match config::load(paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(Exit::Config as u8);
        }
    };
    println!(
        "configuration: {} file(s): {}",
        settings.files.len(),
        settings
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("node name:     {}", settings.join.node_name);
    let mut findings = preflight::static_checks(paths, &settings);
    findings.push(preflight::runtime::check(&settings.containerd_socket).await);
    findings.extend(preflight::network::check(&settings.join.api_server).await);
    findings.extend(crate::etcd::findings(&settings, paths).await);
    let findings = preflight::downgrade(findings, &settings.preflight.warn_only);
    let mut failed = false;
    for f in &findings {
        failed |= matches!(f.verdict, Verdict::Fail { .. } | Verdict::Wait(_));
        println!("{f}");
    }
    match kubeadm::query_version(&settings.kubeadm_path).await {
        Ok(v) => println!(
            "[pass] kubeadm: {v}, JoinConfiguration {}",
            kubeadm::ConfigApi::for_version(v).api_version()
        ),
        Err(e) => {
            failed = true;
            println!("[FAIL] kubeadm: {e}");
        }
    }
    match discovery::discover(
        &settings.join.api_server,
        &settings.join.token,
        &settings.join.ca_pins,
    )
    .await
    {
        Ok(info) => println!(
            "[pass] discovery: cluster-info signed for token id {}, CA pinned, server {}",
            settings.join.token.id(),
            info.server
        ),
        Err(e) => {
            failed = true;
            println!("[FAIL] discovery: {e}");
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["kube-join-agent", "-vv", "run"]).unwrap();
        assert_eq!(cli.verbose, 2);
        assert!(matches!(cli.command, Command::Run));
        assert!(Cli::try_parse_from(["kube-join-agent", "bogus"]).is_err());
    }
}
