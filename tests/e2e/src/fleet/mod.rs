//! The fleet simulation (src/bin/fleet.rs): setup, the run, the report.
//!
//! Every simulated node is a tokio task in this process running the agent's library
//! code (discovery, the Node-name check, the join record): a thousand processes would
//! measure the machine's fork and exec more than the agent, and the agent's waits are
//! all async. The fake API server runs in-process too, on its own runtime and threads,
//! with one port per node (`--also-listen`), so its requests.log says which node sent
//! each request and what it was answered.

pub mod analysis;
pub mod node;
pub mod plot;

use anyhow::{Context, Result, bail};
use clap::Parser;
use kja_fakes::apiserver::{Args as ServerArgs, State as ServerState, server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "fleet",
    about = "A fleet of simulated nodes joining at once against one overloaded fake API server"
)]
pub struct Options {
    /// Nodes, all started within `--start-window-ms`.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Requests the API server handles at once; the rest get 429 (or 503).
    #[arg(long, default_value_t = 50)]
    pub max_inflight: u64,
    /// Fraction of the refused requests answered 503 instead of 429.
    #[arg(long = "busy-503", default_value_t = 0.1)]
    pub busy_503: f64,
    /// Retry-After the server sends, in seconds (kube-apiserver sends 1).
    #[arg(long, default_value_t = 1)]
    pub retry_after: u64,
    /// How long the server takes to handle one request, in ms (its throughput is
    /// max-inflight / this).
    #[arg(long, default_value_t = 50)]
    pub service_ms: u64,
    /// The nodes' start times are spread uniformly over this window.
    #[arg(long, default_value_t = 1000)]
    pub start_window_ms: u64,
    /// Seed for the start times and for the agent's jitter generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Node i gets port base+i; the server's main port is base-1.
    #[arg(long, default_value_t = 40000)]
    pub base_port: u16,
    /// Output directory (default: <target>/fleet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the API server's state and the nodes' directories live during the run
    /// (default: a directory in /dev/shm, removed afterwards). On tmpfs the fake's
    /// fsync per stored object costs nothing, so the server's throughput is what
    /// --max-inflight and --service-ms make it, not the disk's.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Give up on the run after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub deadline_secs: u64,
}

/// Runs the fleet and writes the report.
pub fn run(o: Options) -> Result<()> {
    if o.nodes == 0 || o.nodes + 1 > usize::from(u16::MAX - o.base_port) {
        bail!("--nodes must be 1.. and fit above --base-port");
    }
    if !(0.0..=1.0).contains(&o.busy_503) {
        bail!("--busy-503 must be a fraction from 0 to 1");
    }
    kja_fakes::install_crypto_provider();
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| kja_e2e::paths::target_dir().join("fleet"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let work = o
        .work
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/dev/shm/kja-fleet-{}", std::process::id())));
    for sub in ["apiserver", "nodes"] {
        let dir = work.join(sub);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }

    // The API server: knobs first (present at start), then its state, in-process.
    let state_dir = work.join("apiserver");
    std::fs::create_dir_all(&state_dir)?;
    let knobs = json!({
        "tokens": [{"id": "abcdef", "secret": "0123456789abcdef"}],
        "max_inflight": o.max_inflight,
        "retry_after_secs": o.retry_after,
        "busy_503_fraction": o.busy_503,
        "response_delay_ms": o.service_ms,
    });
    std::fs::write(
        state_dir.join("knobs.json"),
        serde_json::to_vec_pretty(&knobs)?,
    )?;
    let listen: SocketAddr = format!("127.0.0.1:{}", o.base_port - 1).parse()?;
    let also: Vec<SocketAddr> = (0..o.nodes)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], o.base_port + i as u16)))
        .collect();
    let args = ServerArgs {
        listen,
        state_dir: state_dir.clone(),
        also_listen: also.clone(),
    };
    let mut state = ServerState::open(&args)?;
    state.echo_requests = false;
    let pin = state.pki.pin.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("fake-apiserver".into())
        .spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("apiserver")
                .enable_all()
                .build()?;
            rt.block_on(server::serve_until(state, listen, &also, async {
                let _ = stop_rx.await;
            }))
        })?;
    let ready = state_dir.join("ready");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if server.is_finished() || std::time::Instant::now() > deadline {
            let result = server.join();
            bail!("the fake API server did not start: {result:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The nodes: a configuration directory each, start times drawn from the seed.
    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut specs = Vec::with_capacity(o.nodes);
    for i in 0..o.nodes {
        let name = format!("node-{:04}", i + 1);
        let spec = node::NodeSpec {
            index: i,
            root: node::root_of(&work, &name),
            name,
            port: o.base_port + i as u16,
            offset: Duration::from_micros(rng.u64(0..o.start_window_ms.max(1) * 1000)),
        };
        spec.write_config(&pin)?;
        specs.push(spec);
    }

    // The agents: two threads (the machine has two cores), each a single-threaded
    // runtime running its half of the nodes as local tasks (the agent's waits are
    // async closures whose futures are not Send, so they are not spawned across
    // threads), each seeding the agent's jitter generator from the run's seed.
    let cpu_before = cpu_seconds();
    let wall = std::time::Instant::now();
    let start = std::time::Instant::now() + Duration::from_millis(300);
    let start_epoch_ms = (std::time::SystemTime::now() + Duration::from_millis(300))
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let deadline = Duration::from_secs(o.deadline_secs);
    let mut groups: Vec<Vec<node::NodeSpec>> = vec![Vec::new(), Vec::new()];
    for (i, spec) in specs.into_iter().enumerate() {
        groups[i % 2].push(spec);
    }
    let threads: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(g, group)| {
            let seed = o.seed;
            std::thread::Builder::new()
                .name(format!("fleet-{g}"))
                .spawn(move || -> Result<(Vec<node::Outcome>, bool)> {
                    fastrand::seed(
                        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            .wrapping_add(g as u64),
                    );
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    Ok(local.block_on(&rt, async move {
                        let watcher = (g == 0).then(|| tokio::task::spawn_local(inotify_watch()));
                        let start = tokio::time::Instant::from_std(start);
                        let tasks: Vec<_> = group
                            .into_iter()
                            .map(|spec| tokio::task::spawn_local(node::run(spec, start)))
                            .collect();
                        let mut outcomes = Vec::with_capacity(tasks.len());
                        let all = async {
                            for t in tasks {
                                if let Ok(o) = t.await {
                                    outcomes.push(o);
                                }
                            }
                        };
                        let timed_out = tokio::time::timeout(deadline, all).await.is_err();
                        if let Some(w) = watcher {
                            w.abort();
                        }
                        (outcomes, timed_out)
                    }))
                })
        })
        .collect::<Result<_, _>>()?;
    let mut outcomes = Vec::new();
    let mut timed_out = false;
    for t in threads {
        match t.join() {
            Ok(Ok((o, late))) => {
                outcomes.extend(o);
                timed_out |= late;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("a fleet thread panicked"),
        }
    }
    outcomes.sort_by_key(|o| o.index);
    let inotify_peak = INOTIFY_PEAK.load(Ordering::SeqCst);
    let wall_s = wall.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    let _ = stop_tx.send(());
    let _ = server.join();

    let log = std::fs::read_to_string(state_dir.join("requests.log"))?;
    std::fs::write(out.join("requests.log"), &log)?;
    std::fs::copy(state_dir.join("knobs.json"), out.join("knobs.json"))?;
    if o.work.is_none() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let report = report(
        &o,
        &outcomes,
        &log,
        (timed_out, wall_s, cpu_s, inotify_peak, start_epoch_ms),
        &out,
    )?;
    let json_path = out.join("fleet.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    print_summary(&report, &out);
    Ok(())
}

static INOTIFY_PEAK: AtomicUsize = AtomicUsize::new(0);

/// The most inotify instances this process held at once (sampled every second): the
/// agent's waits each open one, and the kernel's per-user limit
/// (fs.inotify.max_user_instances) is usually 128.
async fn inotify_watch() {
    loop {
        let n = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.as_os_str() == "anon_inode:inotify")
                    })
                    .count()
            })
            .unwrap_or(0);
        INOTIFY_PEAK.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime), counted from the state field (3) after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn read_limit(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How the run went: timed out, wall and CPU seconds, inotify peak, start (epoch ms).
type RunFacts = (bool, f64, f64, usize, i64);

fn report(
    o: &Options,
    outcomes: &[node::Outcome],
    log: &str,
    (timed_out, wall_s, cpu_s, inotify_peak, start_epoch_ms): RunFacts,
    out: &Path,
) -> Result<Value> {
    use analysis::*;
    let requests = parse_log(log, o.base_port);
    // How long after its start each node's first request reached the server (the
    // start-up of a thousand TLS clients on two cores spreads the front of the herd).
    let mut first_by_node: std::collections::BTreeMap<usize, i64> = Default::default();
    for r in &requests {
        if let Some(n) = r.node {
            let e = first_by_node.entry(n).or_insert(r.ms);
            *e = (*e).min(r.ms);
        }
    }
    let mut first_lag: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| {
            let first = first_by_node.get(&o.index)?;
            Some((*first - start_epoch_ms) as f64 / 1000.0 - o.started_s)
        })
        .collect();
    first_lag.sort_by(f64::total_cmp);
    let mut first_at: Vec<f64> = first_by_node
        .values()
        .map(|ms| (*ms - start_epoch_ms) as f64 / 1000.0)
        .collect();
    first_at.sort_by(f64::total_cmp);
    let nodes_requests: Vec<&Request> = requests.iter().filter(|r| r.node.is_some()).collect();
    let first = nodes_requests.iter().map(|r| r.ms).min().unwrap_or(0);
    let last = nodes_requests.iter().map(|r| r.ms).max().unwrap_or(0);
    let secs = ((last - first) / 1000 + 1) as usize;
    let total = rate(&nodes_requests, first, 1000, secs);
    let refused_reqs: Vec<&Request> = nodes_requests
        .iter()
        .copied()
        .filter(|r| r.refused())
        .collect();
    let refused = rate(&refused_reqs, first, 1000, secs);
    let fine = rate(&nodes_requests, first, 100, secs * 10);
    let mean = nodes_requests.len() as f64 / ((last - first) as f64 / 1000.0).max(1.0);
    let peak = total.iter().copied().max().unwrap_or(0);
    let peak_second = total.iter().position(|v| *v == peak).unwrap_or(0);
    let fine_peak = fine.iter().copied().max().unwrap_or(0) * 10;
    // Without the start: the second in which the nodes were started.
    let later_peak = total.iter().skip(2).copied().max().unwrap_or(0);

    // What the requests of each second were: first contact, a retry after a refusal
    // (and whose), or the next step after an answer.
    let why = reasons(&requests);
    let mut composition: Vec<serde_json::Map<String, Value>> = vec![Default::default(); secs];
    for (r, why) in requests.iter().zip(&why) {
        if r.node.is_none() {
            continue;
        }
        let i = ((r.ms - first) / 1000) as usize;
        let key = if *why == "after a refusal" {
            format!("after a refusal: {}", sender(r))
        } else {
            why.to_string()
        };
        let e = composition[i].entry(key).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + 1);
    }
    let top_seconds: Vec<Value> = {
        let mut idx: Vec<usize> = (0..secs).collect();
        idx.sort_by_key(|i| std::cmp::Reverse(total[*i]));
        idx.into_iter()
            .take(5)
            .map(|i| json!({"second": i, "requests": total[i], "refused": refused[i], "why": composition[i]}))
            .collect()
    };
    let (gaps, last_refused) = gaps(&requests);
    let retry = retry_after_report(&gaps, last_refused);
    let mut statuses: std::collections::BTreeMap<u16, u64> = Default::default();
    for r in &nodes_requests {
        *statuses.entry(r.status).or_default() += 1;
    }

    let joined: Vec<&node::Outcome> = outcomes.iter().filter(|o| o.joined).collect();
    let not_joined: Vec<Value> = outcomes
        .iter()
        .filter(|o| !o.joined)
        .map(|o| json!({"node": o.name, "why": o.why_not, "attempts": o.attempts, "failures": o.failures}))
        .collect();
    let mut join_times: Vec<f64> = joined
        .iter()
        .filter_map(|o| {
            o.milestones
                .iter()
                .find(|(m, _)| *m == "recorded")
                .map(|(_, t)| o.started_s + t)
        })
        .collect();
    join_times.sort_by(f64::total_cmp);
    let milestone_stats: serde_json::Map<String, Value> =
        ["discovered", "name-checked", "certified", "registered", "recorded"]
            .iter()
            .map(|m| {
                let mut v: Vec<f64> = outcomes
                    .iter()
                    .filter_map(|o| o.milestones.iter().find(|(x, _)| x == m).map(|(_, t)| *t))
                    .collect();
                v.sort_by(f64::total_cmp);
                (
                    m.to_string(),
                    json!({"nodes": v.len(), "p50_s": quantile(&v, 0.5), "p95_s": quantile(&v, 0.95), "max_s": v.last()}),
                )
            })
            .collect();
    let record_retried = outcomes.iter().filter(|o| o.record_retries > 0).count();

    let title = format!(
        "{} nodes, max-inflight {}, {}% of refusals 503, Retry-After {} s: peak {} req/s, mean {:.0} req/s (peak/mean {:.2})",
        o.nodes,
        o.max_inflight,
        (o.busy_503 * 100.0).round(),
        o.retry_after,
        peak,
        mean,
        peak as f64 / mean
    );
    let png = out.join("fleet.png");
    plot::draw(
        &png,
        &plot::Series {
            total: &total,
            refused: &refused,
            fine: &fine,
            mean,
            title,
        },
    )?;

    Ok(json!({
        "options": {
            "nodes": o.nodes, "max_inflight": o.max_inflight, "busy_503_fraction": o.busy_503,
            "retry_after_secs": o.retry_after, "service_ms": o.service_ms,
            "start_window_ms": o.start_window_ms, "seed": o.seed,
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))),
            "inotify_max_user_instances": read_limit("/proc/sys/fs/inotify/max_user_instances"),
        },
        "run": {
            "wall_s": wall_s, "cpu_s": cpu_s, "timed_out": timed_out,
            "busy_period_s": (last - first) as f64 / 1000.0,
            "inotify_instances_peak": inotify_peak,
        },
        "nodes": {
            "started": outcomes.len(), "joined": joined.len(), "not_joined": not_joined,
            "first_request_after_node_start_s": {"p50": quantile(&first_lag, 0.5), "p95": quantile(&first_lag, 0.95), "max": first_lag.last()},
            "first_request_after_fleet_start_s": {"p50": quantile(&first_at, 0.5), "p95": quantile(&first_at, 0.95), "max": first_at.last()},
            "joined_after_s": {"p50": quantile(&join_times, 0.5), "p95": quantile(&join_times, 0.95), "max": join_times.last()},
            "milestones_after_node_start": milestone_stats,
            "attempts_failed": outcomes.iter().map(|o| o.failures.len()).sum::<usize>(),
            "record_retried_nodes": record_retried,
            "record_retries": outcomes.iter().map(|o| o.record_retries).sum::<u32>(),
        },
        "requests": {
            "total": nodes_requests.len(), "by_status": statuses,
            "per_second": total, "refused_per_second": refused,
            "peak_per_second": peak, "peak_second": peak_second,
            "peak_per_second_at_100ms": fine_peak,
            "mean_per_second": mean, "peak_to_mean": peak as f64 / mean,
            "peak_to_mean_after_the_start_second": later_peak as f64 / mean,
            "busiest_seconds": top_seconds,
        },
        "retry_after": retry,
        "plot": png,
    }))
}

fn print_summary(r: &Value, out: &Path) {
    let n = &r["nodes"];
    let q = &r["requests"];
    let ra = &r["retry_after"];
    println!(
        "nodes: {} started, {} joined (p50 {:.1} s, max {:.1} s after the fleet's start)",
        n["started"],
        n["joined"],
        n["joined_after_s"]["p50"].as_f64().unwrap_or(f64::NAN),
        n["joined_after_s"]["max"].as_f64().unwrap_or(f64::NAN)
    );
    for nj in n["not_joined"].as_array().into_iter().flatten().take(10) {
        println!("  not joined: {nj}");
    }
    println!(
        "requests: {} over {:.1} s, by status {}; peak {} /s (second {}), mean {:.1} /s, peak/mean {:.2} ({:.2} after the start second)",
        q["total"],
        r["run"]["busy_period_s"].as_f64().unwrap_or(0.0),
        q["by_status"],
        q["peak_per_second"],
        q["peak_second"],
        q["mean_per_second"].as_f64().unwrap_or(0.0),
        q["peak_to_mean"].as_f64().unwrap_or(0.0),
        q["peak_to_mean_after_the_start_second"]
            .as_f64()
            .unwrap_or(0.0)
    );
    println!(
        "Retry-After: {} refusals followed by another request, {} sooner than told; min gap - Retry-After {} ms",
        ra["refused_then_asked_again"],
        ra["sooner_than_retry_after"],
        ra["min_gap_minus_retry_after_ms"]
    );
    println!(
        "  sooner than told, by who was refused and who asked next: {}",
        ra["sooner_by_sender"]
    );
    println!(
        "inotify instances held at most: {} (limit {}); wall {:.1} s, CPU {:.1} s",
        r["run"]["inotify_instances_peak"],
        r["machine"]["inotify_max_user_instances"],
        r["run"]["wall_s"].as_f64().unwrap_or(0.0),
        r["run"]["cpu_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "wrote {} and {}",
        out.join("fleet.json").display(),
        out.join("fleet.png").display()
    );
}
