//! `cargo run -p kja-e2e --bin real_facts -- <measurement>` (as root): measures how the
//! real Kubernetes v1.20.2 binaries behave (tests/real/README.md, "Facts"), so the fakes
//! can be held to them. Each measurement boots what it needs (a real control plane in a
//! network namespace, a real systemd node), prints a report on stdout and cleans up.
//!
//! | measurement | what |
//! | --- | --- |
//! | `tls-stall` | kube-controller-manager stopped after the token was signed: what `kubeadm join` prints until it gives up, kubelet's log, the CSR as the admin and as the bootstrap token see it |
//! | `warmup [N]` | kube-apiserver restarted N times (default 3), cluster-info and /readyz polled every 100 ms from before the port opens |
//! | `kubelet-start` | what kubeadm runs against systemd at kubelet-start (a logging systemctl wrapper), file times against kubelet's start job |
//! | `masked` | the same join with kubelet runtime-masked |
//! | `rbac` | what a bootstrap token, an unknown token and anonymous requests may read; how fast a deleted token stops working |
//! | `crictl` | the fakes' `fake-crictl` as `/usr/bin/crictl`: can it serve real kubeadm (join without ignored checks, then `kubeadm reset -f`)? |
//! | `up` | a node and control plane to poke at by hand; Ctrl-C (or SIGTERM) tears them down |
//!
//! Honours `KJA_E2E_NAME_PREFIX` for node and namespace names.

use anyhow::{Context, Result, bail};
use kja_e2e::netns::Netns;
use kja_e2e::node::Node;
use kja_e2e::real::control_plane::{Component, ENDPOINT, RealControlPlane, condition};
use kja_e2e::real::{node_image, timed};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The preflight checks real kubeadm 1.20 fails on these nodes (no crictl anywhere).
const IGNORE_PREFLIGHT: &str = "--ignore-preflight-errors=FileExisting-crictl";

fn main() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = kja_e2e::require_root().and_then(|()| match args.first().map(String::as_str) {
        Some("tls-stall") => tls_stall(),
        Some("warmup") => warmup(args.get(1).map(|n| n.parse()).transpose()?.unwrap_or(3)),
        Some("kubelet-start") => kubelet_start(false),
        Some("masked") => kubelet_start(true),
        Some("rbac") => rbac(),
        Some("crictl") => fake_crictl(),
        Some("up") => up(),
        _ => bail!("usage: real_facts tls-stall|warmup [N]|kubelet-start|masked|rbac|crictl|up"),
    });
    if let Err(e) = result {
        eprintln!("real_facts: {e:#}");
        std::process::exit(1);
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A node with the real image and a real control plane in its namespace, booted, with a
/// signed token.
struct Setup {
    // Field order is drop order: the control plane goes before the node (and its netns).
    cp: RealControlPlane,
    node: Node,
    token: String,
    pin: String,
}

fn setup(test: &str, before_boot: impl FnOnce(&Node) -> Result<()>) -> Result<Setup> {
    let name = kja_e2e::node_name(test);
    let node = Node::create(node_image::node_spec(&name)).context("creating the node")?;
    node_image::install(&node)?;
    before_boot(&node)?;
    let t0 = Instant::now();
    let cp = RealControlPlane::start(node.netns(), node.dir().join("control-plane"))?;
    eprintln!("control plane up in {:.1}s", t0.elapsed().as_secs_f64());
    let token = cp.create_token()?;
    let t0 = Instant::now();
    cp.wait_token_signed(&token, Duration::from_secs(60))?;
    eprintln!(
        "token signed in cluster-info {:.1}s after creation",
        t0.elapsed().as_secs_f64()
    );
    let pin = cp.pin()?;
    node.start()?;
    let state = node.wait_running()?;
    eprintln!("node {name} booted: {state}");
    Ok(Setup {
        cp,
        node,
        token,
        pin,
    })
}

fn join_argv<'a>(s: &'a Setup, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "kubeadm",
        "join",
        ENDPOINT,
        "--token",
        &s.token,
        "--discovery-token-ca-cert-hash",
        &s.pin,
        IGNORE_PREFLIGHT,
    ];
    v.extend_from_slice(extra);
    v
}

fn tls_stall() -> Result<()> {
    let s = setup("facts_tls_stall", |_| Ok(()))?;
    s.cp.stop_controller_manager();
    println!("== kube-controller-manager stopped after the token was signed");
    let bearer = format!("Authorization: Bearer {}", s.token);
    let node = &s.node;
    let cp = &s.cp;
    let watching = AtomicBool::new(true);
    let joined = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let t0 = Instant::now();
            let mut seen_pending = false;
            while watching.load(Ordering::SeqCst) {
                let csrs = cp.csrs().unwrap_or_default();
                let summary: Vec<String> = csrs
                    .iter()
                    .map(|c| {
                        format!(
                            "{} by {} conditions={} cert={}",
                            c["metadata"]["name"].as_str().unwrap_or("?"),
                            c["spec"]["username"].as_str().unwrap_or("?"),
                            c["status"]["conditions"],
                            c["status"]["certificate"].is_string()
                        )
                    })
                    .collect();
                let kubectl = cp.kubectl(&["get", "csr"]).map(|o| o.stdout).unwrap_or_default();
                if !csrs.is_empty() && !seen_pending {
                    seen_pending = true;
                    let name = csrs[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
                    let base = "https://127.0.0.1:6443/apis/certificates.k8s.io/v1/certificatesigningrequests";
                    for (what, url) in [
                        ("LIST", base.to_string()),
                        ("GET", format!("{base}/{name}")),
                    ] {
                        let (code, body) = cp.http_get(&url, &["-H", &bearer]).unwrap_or_default();
                        println!(
                            "[+{:.1}s] {what} certificatesigningrequests with the bootstrap token: HTTP {code} {}",
                            t0.elapsed().as_secs_f64(),
                            one_line(&body, 400)
                        );
                    }
                    println!("[+{:.1}s] kubectl get csr:\n{kubectl}", t0.elapsed().as_secs_f64());
                }
                let files: Vec<String> = [
                    "/etc/kubernetes/bootstrap-kubelet.conf",
                    "/etc/kubernetes/kubelet.conf",
                    "/var/lib/kubelet/pki/kubelet-client-current.pem",
                ]
                .iter()
                .map(|f| format!("{f}={}", node.exists(f).unwrap_or(false)))
                .collect();
                eprintln!(
                    "[+{:.1}s] csrs={summary:?} files={files:?} kubelet={}",
                    t0.elapsed().as_secs_f64(),
                    node.unit_state("kubelet.service").unwrap_or_default()
                );
                for _ in 0..50 {
                    if !watching.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let joined = timed::run_in_node(node, &join_argv(&s, &[]), Duration::from_secs(900));
        watching.store(false, Ordering::SeqCst);
        let _ = watcher.join();
        joined
    })?;
    println!(
        "== kubeadm join (controller manager down), started {:.3}",
        unix(joined.started)
    );
    print!("{}", joined.transcript());
    println!(
        "== exit {:?} after {:.1}s",
        joined.code(),
        joined.took.as_secs_f64()
    );
    if let (Some(wait), Some(last)) = (
        joined.find("Waiting for the kubelet to perform the TLS Bootstrap"),
        joined.lines.last(),
    ) {
        println!(
            "== from the TLS Bootstrap wait line to the last line: {:.1}s",
            (last.after - wait.after).as_secs_f64()
        );
    }
    println!(
        "== after kubeadm exited: bootstrap-kubelet.conf exists={} kubelet.conf exists={} kubelet={}",
        node.exists("/etc/kubernetes/bootstrap-kubelet.conf")?,
        node.exists("/etc/kubernetes/kubelet.conf")?,
        node.unit_state("kubelet.service")?
    );
    std::thread::sleep(Duration::from_secs(20));
    println!(
        "== 20 s later: kubelet={} csrs={}",
        node.unit_state("kubelet.service")?,
        s.cp.csrs()?.len()
    );
    println!("== kubelet journal (this boot)");
    print!("{}", node.journal(Some("kubelet.service"))?);
    Ok(())
}

fn one_line(s: &str, max: usize) -> String {
    let mut t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.len() > max {
        t.truncate(max);
        t.push('…');
    }
    t
}

/// A poll result: code 0 = no HTTP answer.
#[derive(Clone, PartialEq)]
struct Answer {
    code: u16,
    body: String,
}

fn warmup(runs: usize) -> Result<()> {
    let name = kja_e2e::node_name("facts_warmup");
    let netns: Arc<Netns> = Netns::create(&format!("kja-{name}"))?;
    let dir = kja_e2e::paths::run_dir().join(&name);
    let cp = RealControlPlane::start(&netns, dir.join("control-plane"))?;
    for run in 1..=runs {
        cp.stop_apiserver();
        std::thread::sleep(Duration::from_secs(2));
        let stop = AtomicBool::new(false);
        let urls = [
            "https://127.0.0.1:6443/api/v1/namespaces/kube-public/configmaps/cluster-info",
            "https://127.0.0.1:6443/readyz",
        ];
        let (spawned, samples) = std::thread::scope(|scope| -> Result<_> {
            // One poller per URL, each every 100 ms (a poll is stamped when it starts).
            let pollers: Vec<_> = urls
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    let stop = &stop;
                    let cp = &cp;
                    scope.spawn(move || {
                        let mut samples: Vec<(Instant, usize, Answer)> = Vec::new();
                        while !stop.load(Ordering::SeqCst) {
                            let at = Instant::now();
                            let (code, body) = cp
                                .http_get(url, &["--max-time", "1"])
                                .unwrap_or((0, "harness error".to_string()));
                            samples.push((at, i, Answer { code, body }));
                            let next = at + Duration::from_millis(100);
                            std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        }
                        samples
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            let spawned = cp.spawn_component(Component::ApiServer)?;
            let waited = cp.wait_serving(Component::ApiServer, Duration::from_secs(120));
            // Two more seconds of steady state.
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::SeqCst);
            let mut samples: Vec<(Instant, usize, Answer)> = pollers
                .into_iter()
                .flat_map(|p| p.join().expect("poller"))
                .collect();
            samples.sort_by_key(|(t, _, _)| *t);
            waited?;
            Ok((spawned, samples))
        })?;
        let open = samples
            .iter()
            .find(|(_, _, a)| a.code != 0)
            .map(|(t, _, _)| *t)
            .context("the port never answered")?;
        let accepting = samples
            .iter()
            .find(|(_, _, a)| a.code != 0 || a.body != "curl exit 7")
            .map(|(t, _, _)| t.duration_since(spawned).as_secs_f64());
        let log = cp.read_log("kube-apiserver.log");
        let this_start = log
            .rsplit("===== kja-e2e: starting")
            .next()
            .unwrap_or_default();
        let serving: Vec<&str> = this_start
            .lines()
            .filter(|l| {
                l.contains("Serving securely")
                    || l.contains("Started DynamicServingCertificateController")
            })
            .collect();
        println!(
            "== run {run} (spawned at {:.3}): TCP connections accepted from {accepting:?}s, \
             first HTTP answer (t=0 below) {:.3}s after spawning kube-apiserver; its log: {serving:?}",
            unix(SystemTime::now()) - spawned.elapsed().as_secs_f64(),
            open.duration_since(spawned).as_secs_f64()
        );
        for (i, url) in urls.iter().enumerate() {
            println!("  {url}");
            let mut windows: Vec<(Instant, Instant, Answer, usize)> = Vec::new();
            for (t, _, a) in samples.iter().filter(|(_, j, _)| *j == i) {
                let key = Answer {
                    code: a.code,
                    body: normalize(&a.body),
                };
                match windows.last_mut() {
                    Some(w) if w.2 == key => {
                        w.1 = *t;
                        w.3 += 1;
                    }
                    _ => windows.push((*t, *t, key, 1)),
                }
            }
            for (from, to, a, n) in windows {
                let rel = |t: Instant| {
                    if t >= open {
                        t.duration_since(open).as_secs_f64()
                    } else {
                        -open.duration_since(t).as_secs_f64()
                    }
                };
                let what = if a.code == 0 {
                    format!("no HTTP answer ({})", a.body)
                } else {
                    format!("HTTP {} {}", a.code, one_line(&a.body, 600))
                };
                println!(
                    "    {:+8.3}s .. {:+8.3}s ({n:3} polls) {what}",
                    rel(from),
                    rel(to)
                );
            }
        }
    }
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Bodies that differ only in volatile details (JSON key order is stable) compare equal.
fn normalize(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("managedFields");
                m.remove("creationTimestamp");
                m.remove("uid");
            }
            if v["kind"] == "ConfigMap" {
                // The data is long; its keys are what matters.
                let keys: Vec<String> = v["data"]
                    .as_object()
                    .map(|d| d.keys().cloned().collect())
                    .unwrap_or_default();
                return format!("ConfigMap cluster-info, data keys {keys:?}");
            }
            v.to_string()
        }
        // /readyz's failure text: the failing checks and the verdict line.
        Err(_) if body.contains("[-]") => {
            let failed: Vec<&str> = body
                .lines()
                .filter(|l| l.starts_with("[-]") || l.ends_with("check failed"))
                .collect();
            format!(
                "{} checks ok, then: {}",
                body.lines().filter(|l| l.starts_with("[+]")).count(),
                failed.join(" | ")
            )
        }
        Err(_) => body.trim().to_string(),
    }
}

const SYSTEMCTL_LOG: &str = "/var/log/systemctl-argv.log";

fn kubelet_start(masked: bool) -> Result<()> {
    let test = if masked {
        "facts_masked"
    } else {
        "facts_kubelet_start"
    };
    let s = setup(test, |node| {
        // Earlier in PATH (/usr/sbin before /usr/bin) than the real systemctl.
        let wrapper = format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$(date +%s.%N)\" \"$*\" >>{SYSTEMCTL_LOG}\nexec /usr/bin/systemctl \"$@\"\n"
        );
        node.write_file("/usr/sbin/systemctl", wrapper.as_bytes(), 0o755)
    })?;
    let node = &s.node;
    if masked {
        node.exec_ok(&["/usr/bin/systemctl", "mask", "--runtime", "kubelet"])?;
        println!(
            "== kubelet: {}",
            node.exec(&["/usr/bin/systemctl", "is-enabled", "kubelet"])?
                .trimmed()
        );
    }
    node.write_file(SYSTEMCTL_LOG, b"", 0o644)?;
    let joined = timed::run_in_node(node, &join_argv(&s, &[]), Duration::from_secs(600))?;
    println!("== kubeadm join started {:.3}", unix(joined.started));
    for l in &joined.lines {
        println!(
            "{:.3} +{:7.3}s {}",
            unix(l.at),
            l.after.as_secs_f64(),
            l.text
        );
    }
    println!(
        "== exit {:?} after {:.1}s",
        joined.code(),
        joined.took.as_secs_f64()
    );
    println!("== systemctl invocations (unix time, argv)");
    print!("{}", node.read_to_string(SYSTEMCTL_LOG)?);
    println!("== file modification times (unix time) and modes");
    let stat = node.exec(&[
        "sh",
        "-c",
        "cd / && stat -c '%.9Y %a %U %n' /etc/kubernetes/pki/ca.crt /var/lib/kubelet/config.yaml \
         /var/lib/kubelet/kubeadm-flags.env /etc/kubernetes/kubelet.conf \
         /var/lib/kubelet/pki/kubelet-client-current.pem /var/lib/kubelet/pki/kubelet-client-*.pem \
         /etc/kubernetes/bootstrap-kubelet.conf 2>&1",
    ])?;
    print!("{}", stat.stdout);
    println!("== kubelet-flags.env");
    print!(
        "{}",
        node.read_to_string("/var/lib/kubelet/kubeadm-flags.env")
            .unwrap_or_default()
    );
    println!("== systemd's and kubelet's journal for kubelet.service (unix time)");
    for e in node.journal_entries(Some("kubelet.service"))? {
        let t = e["__REALTIME_TIMESTAMP"]
            .as_str()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e6;
        let msg = e["MESSAGE"].as_str().unwrap_or_default();
        let who = e["_COMM"].as_str().unwrap_or("?");
        if who == "systemd" || msg.contains("Version") || msg.contains("bootstrap") {
            println!("{t:.6} {who}: {}", one_line(msg, 300));
        }
    }
    if !masked {
        let t0 = Instant::now();
        let ready = loop {
            let ready = s.cp.node(node.name())?.and_then(|n| condition(&n, "Ready"));
            if ready.as_deref() == Some("True") || t0.elapsed() > Duration::from_secs(120) {
                break ready;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        println!(
            "== Node Ready={ready:?} {:.1}s after kubeadm exited",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn rbac() -> Result<()> {
    let name = kja_e2e::node_name("facts_rbac");
    let netns: Arc<Netns> = Netns::create(&format!("kja-{name}"))?;
    let dir = kja_e2e::paths::run_dir().join(&name);
    let cp = RealControlPlane::start(&netns, dir.join("control-plane"))?;
    let token = cp.create_token()?;
    cp.wait_token_signed(&token, Duration::from_secs(60))?;
    let base = "https://127.0.0.1:6443";
    let paths = [
        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
        "/api/v1/namespaces/kube-system/configmaps/kubelet-config-1.20",
        "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
        "/api/v1/nodes/no-such-node",
        "/api/v1/nodes",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests/no-such-csr",
        "/api/v1/namespaces/kube-system/secrets/kubeadm-certs",
        "/version",
        "/healthz",
        "/readyz",
    ];
    let bearer = format!("Authorization: Bearer {token}");
    let unknown = "Authorization: Bearer zzzzzz.0123456789abcdef".to_string();
    for (who, header) in [
        ("bootstrap token", Some(bearer.as_str())),
        ("anonymous", None),
        ("unknown token", Some(unknown.as_str())),
    ] {
        println!("== as {who}");
        for p in paths {
            let extra: Vec<&str> = header.map(|h| vec!["-H", h]).unwrap_or_default();
            let (code, body) = cp.http_get(&format!("{base}{p}"), &extra)?;
            println!("  GET {p}: {code} {}", summary(&body));
        }
    }
    let id = token.split('.').next().unwrap_or_default().to_string();
    let t0 = Instant::now();
    cp.delete_token(&token)?;
    println!("== token {id} deleted (kubeadm token delete)");
    let (mut jws_gone, mut unauthorized) = (None, None);
    while (jws_gone.is_none() || unauthorized.is_none()) && t0.elapsed() < Duration::from_secs(120)
    {
        let (_, info) = cp.http_get(&format!("{base}{}", paths[0]), &[])?;
        if jws_gone.is_none() && !info.contains(&format!("jws-kubeconfig-{id}")) {
            jws_gone = Some(t0.elapsed());
        }
        let (code, body) = cp.http_get(&format!("{base}{}", paths[1]), &["-H", &bearer])?;
        if unauthorized.is_none() && code == 401 {
            unauthorized = Some((t0.elapsed(), summary(&body)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("  jws-kubeconfig-{id} gone from cluster-info after {jws_gone:?}");
    println!("  the token gets 401 after {unauthorized:?}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A Status body as `reason: message`, anything else shortened.
fn summary(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["kind"] == "Status" => format!(
            "{} {:?}",
            v["reason"].as_str().unwrap_or(""),
            v["message"].as_str().unwrap_or("")
        ),
        Ok(v) => format!(
            "{} {}",
            v["kind"].as_str().unwrap_or("?"),
            v["metadata"]["name"].as_str().unwrap_or("")
        ),
        Err(_) => one_line(body, 120),
    }
}

/// Real kubeadm with the fakes' crictl on PATH: preflight's `FileExisting-crictl` and `CRI`
/// checks, a whole join without any ignored check, then `kubeadm reset -f` (which lists
/// and removes pods with crictl).
fn fake_crictl() -> Result<()> {
    let crictl = kja_e2e::paths::fake_bin("fake-crictl");
    kja_e2e::paths::require_file(&crictl, "build the fakes: cargo build -p kja-fakes")?;
    let s = setup("facts_crictl", |node| {
        node.copy_in(&crictl, "/usr/bin/crictl", 0o755)
    })?;
    let mut argv = join_argv(&s, &[]);
    argv.retain(|a| *a != IGNORE_PREFLIGHT);
    argv.push("--v=1");
    println!("== {} (no ignored preflight checks)", argv.join(" "));
    let joined = timed::run_in_node(&s.node, &argv, Duration::from_secs(300))?;
    println!("{}", joined.transcript());
    println!(
        "== exit {:?} after {:.1}s",
        joined.code(),
        joined.took.as_secs_f64()
    );
    let reset = timed::run_in_node(
        &s.node,
        &["kubeadm", "reset", "-f", "--v=1"],
        Duration::from_secs(180),
    )?;
    println!("== kubeadm reset -f --v=1\n{}", reset.transcript());
    println!(
        "== exit {:?} after {:.1}s",
        reset.code(),
        reset.took.as_secs_f64()
    );
    Ok(())
}

fn up() -> Result<()> {
    let s = setup("facts_up", |_| Ok(()))?;
    println!(
        "node {} booted (leader PID {:?}), netns {}, control plane in {}",
        s.node.name(),
        s.node.leader(),
        s.node.netns().name(),
        s.cp.dir().display()
    );
    println!(
        "join: {} (run inside: nsenter -t LEADER -a -- ...)",
        join_argv(&s, &[]).join(" ")
    );
    println!("Ctrl-C or SIGTERM to tear down");
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
