//! `cargo run -p kja-e2e --bin demo` (as root): boots one test node with the fake control
//! plane and the agent, waits for the join (or a failure, up to 180 s), prints the agent's
//! and kubelet's journal and a one-line summary, then powers the node off and cleans up.
//! Builds nothing itself: `cargo build -p kube-join-agent -p kja-fakes` first.

use anyhow::{Context, Result};
use kja_e2e::control_plane::FakeControlPlane;
use kja_e2e::install::{self, AGENT_STATE_PATH, AGENT_UNIT, Install};
use kja_e2e::node::{Node, NodeSpec};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde_json::Value;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The vendor defaults shipped with the agent, embedded at build time.
const DEFAULT_CONFIG: &str = include_str!("../../../../config/config.toml");
const DEFAULT_CONFIG_PATH: &str = "/usr/lib/kube-join-agent/config.d/10-defaults.toml";
const NODE_NAME: &str = "demo";
const JOIN_TIMEOUT: Duration = Duration::from_secs(180);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    // Ctrl-C must still power the node off: nspawn runs in its own session and would
    // otherwise outlive us.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool> {
    kja_e2e::require_root()?;
    let node = Node::create(NodeSpec::new(NODE_NAME)).context("creating the node")?;
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .context("starting the fake API server")?;
    install::install(&node, &Install::agent(&cp.pin()?)).context("installing into the node")?;
    node.write_file(DEFAULT_CONFIG_PATH, DEFAULT_CONFIG.as_bytes(), 0o644)?;
    println!(
        "demo: booting node {NODE_NAME} ({}); fake API server on 127.0.0.1:6443 in netns {}",
        node.dir().display(),
        node.netns().name()
    );
    let t0 = Instant::now();
    node.start()?;
    let state = node.wait_running()?;
    println!(
        "demo: node {state} after {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    let mut last_phase = String::new();
    let (joined, state) = loop {
        let state: Option<Value> = node
            .read_to_string(AGENT_STATE_PATH)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let unit = node.unit_state(AGENT_UNIT).unwrap_or_default();
        let phase = state
            .as_ref()
            .and_then(|s| s["phase"].as_str())
            .unwrap_or("-")
            .to_string();
        if phase != last_phase {
            println!(
                "demo: +{:.1}s phase {phase} (agent {unit})",
                t0.elapsed().as_secs_f64()
            );
            last_phase = phase.clone();
        }
        let joined = state
            .as_ref()
            .is_some_and(|s| s["joined"] == Value::Bool(true));
        if joined && phase == "serve" {
            break (true, state);
        }
        if unit == "failed" || t0.elapsed() > JOIN_TIMEOUT || INTERRUPTED.load(Ordering::SeqCst) {
            break (false, state);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let elapsed = t0.elapsed();

    let journal = node.journalctl(&[
        "-b",
        "-o",
        "short-precise",
        "-u",
        AGENT_UNIT,
        "-u",
        "kubelet.service",
    ])?;
    println!("----- journalctl -b -u {AGENT_UNIT} -u kubelet.service -----\n{journal}-----");
    let kubelet = node.unit_state("kubelet.service").unwrap_or_default();
    let agent = node.unit_state(AGENT_UNIT).unwrap_or_default();
    let on_api = cp.node(NODE_NAME).is_some();
    let state_text = state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "none".into());
    if joined {
        println!(
            "demo: JOINED in {:.1}s; agent {agent}, kubelet {kubelet}, Node on API server: {}; state {state_text}",
            elapsed.as_secs_f64(),
            if on_api { "yes" } else { "no" }
        );
    } else {
        let why = if INTERRUPTED.load(Ordering::SeqCst) {
            "interrupted"
        } else if agent == "failed" {
            "agent failed"
        } else {
            "timed out"
        };
        println!(
            "demo: NOT JOINED ({why}) after {:.1}s; agent {agent}, kubelet {kubelet}, Node on API server: {}; state {state_text}",
            elapsed.as_secs_f64(),
            if on_api { "yes" } else { "no" }
        );
    }
    drop(cp);
    drop(node);
    println!("demo: node powered off and cleaned up");
    Ok(joined)
}
