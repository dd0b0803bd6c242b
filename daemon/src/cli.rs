//! Command line: `run` (the daemon), `check`, `diagnose`, `status`, `version`.

use crate::agent::{self, Exit};
use crate::config;
use crate::paths::Paths;
use crate::report;
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
    /// Check everything the agent would verify before joining; change nothing. Exit 0
    /// when nothing fails, 1 otherwise.
    Check {
        /// Print JSON (schema kube-join-agent.check/v1).
        #[arg(long)]
        json: bool,
    },
    /// One report for a human or a bug report: configuration (secrets redacted), state
    /// and attempts, units, versions, kubelet files and certificate, kubelet's journal,
    /// pending CSRs, etcd; change nothing.
    Diagnose {
        /// Print JSON (schema kube-join-agent.diagnose/v1).
        #[arg(long)]
        json: bool,
    },
    /// Where the join stands: phase, attempt, time in phase, last failure, joined since.
    Status {
        /// Print JSON (schema kube-join-agent.status/v1).
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
        Command::Check { json } => {
            telemetry::init(Sink::Terminal, cli.verbose);
            runtime().block_on(check(&paths, json))
        }
        Command::Diagnose { json } => {
            telemetry::init(Sink::Terminal, cli.verbose);
            runtime().block_on(diagnose(&paths, json))
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
    let stop_paths = paths.clone();
    tokio::select! {
        exit = agent::run(paths) => exit,
        signal = stop => {
            // Dropping the agent kills a running kubeadm's process group. kubelet keeps
            // its runtime mask if the join was under way; the next start gates again.
            telemetry::notify_stopping();
            tracing::info!("{signal}: stopping");
            // exit() runs no destructors: the join configuration goes by hand.
            agent::remove_secret_files(&stop_paths);
            std::process::exit(0);
        }
    }
}

fn status(paths: &Paths, json: bool) -> ExitCode {
    let state = match State::load(&paths.state_file()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("kube-join-agent: {e}");
            return ExitCode::from(1);
        }
    };
    let status = report::status::from_state(&state, std::time::SystemTime::now());
    // The state file holds no secret; redact anyway, as every report does.
    let settings = config::load(paths).ok();
    if json {
        println!("{}", report::json(settings.as_ref(), &status));
    } else {
        print!(
            "{}",
            report::redact(settings.as_ref(), &report::status::text(&status))
        );
    }
    ExitCode::SUCCESS
}

/// Every check once, no waiting, nothing changed.
async fn check(paths: &Paths, json: bool) -> ExitCode {
    let settings = match config::load(paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(Exit::Config as u8);
        }
    };
    let check = report::check::run(paths, &settings).await;
    if json {
        println!("{}", report::json(Some(&settings), &check));
    } else {
        print!("{}", report::redact(Some(&settings), &check.text()));
    }
    if check.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The diagnosis, even when the configuration does not load.
async fn diagnose(paths: &Paths, json: bool) -> ExitCode {
    let loaded = config::load(paths);
    let settings = loaded.as_ref().ok();
    let diagnosis = report::diagnose::run(paths, loaded.as_ref().map_err(|e| e.to_string())).await;
    if json {
        println!("{}", report::json(settings, &diagnosis));
    } else {
        print!(
            "{}",
            report::redact(settings, &report::diagnose::text(&diagnosis))
        );
    }
    ExitCode::SUCCESS
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
