//! The agent explains itself: `check` names every problem before anything changes,
//! `diagnose` names a failed join, `status` says where it stands, the metrics count
//! what happened, and the Node carries the join's story (annotations and Events) where
//! `kubectl` sees it. The token's secret is in none of it.

use anyhow::{Context, Result, anyhow, bail, ensure};
use kja_e2e::artifacts;
use kja_e2e::install::{AGENT_UNIT, DEFAULT_TOKEN_SECRET};
use kja_e2e::scenario::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The agent installed but not enabled: `check` runs on a node nothing has touched.
fn idle_node(test: &str) -> (kja_e2e::Node, kja_e2e::FakeControlPlane) {
    let (node, cp) = prepare(test, |i| i);
    node.remove_file(&format!(
        "/etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}"
    ))
    .unwrap_or_else(|e| panic!("{e:#}"));
    (node, cp)
}

/// `kube-join-agent check --json`: (exit code, the document).
fn check(node: &kja_e2e::Node) -> Result<(i32, Value)> {
    let out = node.exec(&["kube-join-agent", "check", "--json"])?;
    ensure!(
        !out.stdout.contains(DEFAULT_TOKEN_SECRET) && !out.stderr.contains(DEFAULT_TOKEN_SECRET),
        "check shows the token's secret"
    );
    let doc: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("check --json is not JSON: {out}"))?;
    ensure!(doc["schema"] == "kube-join-agent.check/v1", "{doc}");
    Ok((out.status.code().unwrap_or(-1), doc))
}

/// The row of `name` with `verdict`, whose reason (and fix) say each of `says`.
fn row<'a>(doc: &'a Value, name: &str, verdict: &str, says: &[&str]) -> Result<&'a Value> {
    let rows = doc["rows"]
        .as_array()
        .ok_or_else(|| anyhow!("no rows: {doc}"))?;
    let row = rows
        .iter()
        .find(|r| r["check"] == name && r["verdict"] == verdict)
        .ok_or_else(|| anyhow!("no {verdict} row for {name}: {doc:#}"))?;
    let text = format!("{} {}", row["reason"], row["fix"]);
    for s in says {
        ensure!(text.contains(s), "the {name} row does not say {s:?}: {row}");
    }
    Ok(row)
}

/// Sets net.ipv4.ip_forward in the node's network namespace.
fn ip_forward(node: &kja_e2e::Node, value: u8) -> Result<()> {
    let out = node
        .netns()
        .command("sysctl")?
        .args(["-w", &format!("net.ipv4.ip_forward={value}")])
        .output()
        .context("running sysctl in the node's network namespace")?;
    ensure!(
        out.status.success(),
        "sysctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn fails(doc: &Value) -> Vec<String> {
    doc["rows"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|r| r["verdict"] == "fail")
        .map(|r| r.to_string())
        .collect()
}

#[test]
fn check_passes_on_a_fresh_node_and_names_each_problem() {
    let (node, cp) = idle_node("check_names_problems");
    let _a = artifacts::Guard::new("check_names_problems", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        // `check` looks once, as it is: on a fresh node it passes only once containerd,
        // started beside it at boot, answers on its socket.
        kja_e2e::wait::until_ok(
            "containerd to serve its CRI socket",
            Duration::from_secs(60),
            POLL,
            || {
                let s = node.unit_state("containerd.service")?;
                ensure!(s == "active", "containerd is {s}");
                ensure!(node.exists("/run/containerd/containerd.sock")?, "no socket");
                Ok(())
            },
        )?;
        let (code, doc) = check(&node)?;
        ensure!(
            code == 0 && doc["ok"] == true,
            "fresh node: {:?}",
            fails(&doc)
        );
        row(&doc, "discovery", "pass", &["abcdef"])?;
        row(&doc, "version-skew", "pass", &[])?;

        // The API server down.
        let dir = cp.dir().to_path_buf();
        cp.stop();
        let (code, doc) = check(&node)?;
        ensure!(code == 1 && doc["ok"] == false, "{doc}");
        row(&doc, "api-server", "fail", &["6443"])?;
        let cp = kja_e2e::FakeControlPlane::restart(node.netns(), dir)?;

        // An expired token.
        cp.set_knobs(
            json!({"tokens": [{"id": "abcdef", "secret": "0123456789abcdef", "expired": true}]}),
        )?;
        let (code, doc) = check(&node)?;
        ensure!(code == 1, "{doc}");
        eprintln!(
            "---- kube-join-agent check (expired token) ----\n{}",
            node.exec(&["kube-join-agent", "check"])?.stdout
        );
        row(
            &doc,
            "discovery",
            "fail",
            &["abcdef", "kubeadm token create"],
        )?;
        cp.set_knobs(json!({}))?;

        // A wrong pin.
        let wrong = format!("sha256:{}", "ab".repeat(32));
        node.write_file(
            "/etc/kube-join-agent/config.d/60-pin.toml",
            format!("[join]\nca_cert_hashes = [\"{wrong}\"]\n").as_bytes(),
            0o644,
        )?;
        let (code, doc) = check(&node)?;
        ensure!(code == 1, "{doc}");
        row(
            &doc,
            "discovery",
            "fail",
            &[wrong.as_str(), cp.pin()?.as_str()],
        )?;
        node.remove_file("/etc/kube-join-agent/config.d/60-pin.toml")?;

        // A kubelet newer than the API server (the fake kubelet is v1.29.7).
        cp.set_knobs(json!({"kubernetes_version": "v1.28.2"}))?;
        let (code, doc) = check(&node)?;
        ensure!(code == 1, "{doc}");
        row(
            &doc,
            "version-skew",
            "fail",
            &["v1.29.7", "v1.28.2", "never be newer"],
        )?;
        cp.set_knobs(json!({}))?;

        // ip_forward off in the node's network namespace (set from the host: the node's
        // /proc/sys is read-only, as in any container).
        ip_forward(&node, 0)?;
        let (code, doc) = check(&node)?;
        ensure!(code == 1, "{doc}");
        row(&doc, "ip_forward", "fail", &["sysctl"])?;
        ip_forward(&node, 1)?;

        // Swap on, as /proc/swaps lists it: a warning (kubeadm only warns).
        node.write_file(
            "/tmp/swaps",
            b"Filename\tType\tSize\tUsed\tPriority\n/swapfile\tfile\t1048572\t0\t-2\n",
            0o644,
        )?;
        node.exec_ok(&["mount", "--bind", "/tmp/swaps", "/proc/swaps"])?;
        let (_, doc) = check(&node)?;
        node.exec_ok(&["umount", "/proc/swaps"])?;
        row(&doc, "swap", "warn", &["swap is on", "swapoff"])?;

        let (code, doc) = check(&node)?;
        ensure!(code == 0, "all fixed, still failing: {:?}", fails(&doc));
        // check changed nothing: no kubeadm join, kubelet not gated.
        no_kubeadm_join(&node)?;
        ensure!(
            !node
                .unit_enablement("kubelet.service")?
                .starts_with("masked"),
            "check masked kubelet"
        );
        Ok(())
    })());
}

#[test]
fn diagnose_and_status_name_a_failed_join() {
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (node, cp) = prepare("diagnose_failed_join", |mut i| {
        if let Some(j) = &mut i.join {
            j.ca_cert_hashes = vec![wrong.clone()];
        }
        i
    });
    let _a = artifacts::Guard::new("diagnose_failed_join", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        check_stopped(&node, "ca-pin-mismatch", 78, &[wrong.as_str()])?;
        let out = node.exec_ok(&["kube-join-agent", "diagnose", "--json"])?;
        ensure!(
            !out.contains(DEFAULT_TOKEN_SECRET),
            "diagnose shows the secret"
        );
        let d: Value = serde_json::from_str(&out)?;
        ensure!(d["schema"] == "kube-join-agent.diagnose/v1", "{d}");
        ensure!(
            d["status"]["last_failure"]["class"] == "ca-pin-mismatch",
            "{:#}",
            d["status"]
        );
        let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
        ensure!(
            attempts.iter().any(|a| a["failure"] == "ca-pin-mismatch"),
            "attempts: {attempts:?}"
        );
        ensure!(
            d["configuration"]["token_id"] == "abcdef",
            "{:#}",
            d["configuration"]
        );
        let kubelet = d["units"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["unit"] == "kubelet.service"))
            .ok_or_else(|| anyhow!("no kubelet unit in {:#}", d["units"]))?;
        ensure!(kubelet["unit_file_state"] == "masked-runtime", "{kubelet}");
        let text = node.exec_ok(&["kube-join-agent", "diagnose"])?;
        // Shown with --nocapture: the README's example is this output.
        eprintln!("---- kube-join-agent diagnose ----\n{text}");
        eprintln!(
            "---- kube-join-agent status ----\n{}",
            node.exec(&["kube-join-agent", "status"])?.stdout
        );
        ensure!(
            text.contains("ca-pin-mismatch") && !text.contains(DEFAULT_TOKEN_SECRET),
            "{text}"
        );
        let status = node.exec_ok(&["kube-join-agent", "status", "--json"])?;
        let s: Value = serde_json::from_str(&status)?;
        ensure!(
            s["schema"] == "kube-join-agent.status/v1"
                && s["joined"] == false
                && s["last_failure"]["class"] == "ca-pin-mismatch"
                && s["seconds_in_phase"].is_u64(),
            "{s:#}"
        );
        Ok(())
    })());
}

/// GET `path` on the agent's metrics socket, from inside the node.
fn scrape(node: &kja_e2e::Node, path: &str) -> Result<String> {
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect('/run/kube-join-agent/metrics.sock')\ns.sendall(b'GET {path} HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n')\nd=b''\nwhile True:\n    c=s.recv(65536)\n    if not c: break\n    d+=c\nsys.stdout.write(d.decode())\n"
    );
    node.exec_ok(&["python3", "-c", &script])
}

/// The body of an HTTP response, after its status line is checked.
fn body(response: &str, status: u16) -> Result<String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not HTTP: {response:?}"))?;
    ensure!(
        head.starts_with(&format!("HTTP/1.1 {status}")),
        "expected {status}: {head}"
    );
    Ok(body.to_string())
}

/// A sample's value by metric name and labels.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn a_join_that_needed_two_attempts_is_recorded_and_measured() {
    let (node, cp) = prepare("recorded_two_attempts", |i| {
        i.kubeadm_env("FAIL_TIMES=1\n").extra_toml(FAST_RETRY)
    });
    let _a = artifacts::Guard::new("recorded_two_attempts", &node, Some(&cp));
    must((|| {
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        let name = node.name().to_string();

        // status
        let status_json = node.exec_ok(&["kube-join-agent", "status", "--json"])?;
        eprintln!(
            "---- kube-join-agent status ----\n{}\n---- status --json ----\n{status_json}",
            node.exec_ok(&["kube-join-agent", "status"])?
        );
        let s: Value = serde_json::from_str(&status_json)?;
        ensure!(
            s["joined"] == true
                && s["phase"] == "serve"
                && s["joined_since"].is_string()
                && s["join_duration_seconds"].as_f64().is_some_and(|d| d > 0.0)
                && s["last_failure"].is_null(),
            "{s:#}"
        );

        // The Node's annotations and Events (the record is posted right after serve).
        let annotations = kja_e2e::wait::until_ok(
            "the join record on the Node",
            Duration::from_secs(30),
            POLL,
            || {
                let n = cp.node(&name).ok_or_else(|| anyhow!("no Node"))?;
                let a = n["metadata"]["annotations"].clone();
                if a["kube-join-agent.io/attempts"].is_string() {
                    Ok(a)
                } else {
                    bail!("annotations: {a}")
                }
            },
        )?;
        ensure!(
            annotations["kube-join-agent.io/attempts"] == "2"
                && annotations["kube-join-agent.io/failure-classes"] == "kubeadm-failed"
                && annotations["kube-join-agent.io/kubeadm-version"] == "v1.29.7"
                && annotations["kube-join-agent.io/joined-at"].is_string(),
            "{annotations:#}"
        );
        eprintln!("---- the Node's annotations ----\n{annotations:#}");
        let events = cp.events("default");
        let about_node: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["involvedObject"]["kind"] == "Node" && e["involvedObject"]["name"] == name
            })
            .collect();
        for e in &about_node {
            eprintln!(
                "---- Event {} {} {} ----\n{}",
                e["type"], e["reason"], e["metadata"]["name"], e["message"]
            );
        }
        let reasons: Vec<&str> = about_node
            .iter()
            .filter_map(|e| e["reason"].as_str())
            .collect();
        ensure!(
            reasons.contains(&"JoinAttemptFailed") && reasons.contains(&"Joined"),
            "events about the Node: {about_node:#?}"
        );
        let failed = about_node
            .iter()
            .find(|e| e["reason"] == "JoinAttemptFailed")
            .expect("found above");
        ensure!(
            failed["message"]
                .as_str()
                .is_some_and(|m| m.contains("kubeadm-failed") && m.contains("FAIL_TIMES")),
            "{failed}"
        );

        // Metrics: what happened, counted.
        let text = body(&scrape(&node, "/metrics")?, 200)?;
        eprintln!("---- /metrics ----\n{text}");
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .context("the metrics do not parse as the Prometheus text format")?;
        let get = |name: &str, labels: &[(&str, &str)]| {
            sample(&parsed, name, labels).ok_or_else(|| anyhow!("no {name}{labels:?} in:\n{text}"))
        };
        ensure!(
            get("kube_join_agent_attempts_total", &[("outcome", "failed")])? == 1.0,
            "{text}"
        );
        ensure!(
            get("kube_join_agent_attempts_total", &[("outcome", "joined")])? == 1.0,
            "{text}"
        );
        ensure!(
            get(
                "kube_join_agent_failures_total",
                &[("class", "kubeadm-failed")]
            )? == 1.0,
            "{text}"
        );
        ensure!(get("kube_join_agent_joined", &[])? == 1.0, "{text}");
        ensure!(
            get("kube_join_agent_phase", &[("phase", "serve")])? == 1.0,
            "{text}"
        );
        ensure!(
            get("kube_join_agent_phase", &[("phase", "join")])? == 0.0,
            "{text}"
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        ensure!(
            get(
                "kube_join_agent_kubelet_client_certificate_expiry_timestamp_seconds",
                &[]
            )? > now,
            "{text}"
        );
        ensure!(
            get("kube_join_agent_join_duration_seconds", &[])? > 0.0,
            "{text}"
        );
        ensure!(body(&scrape(&node, "/readyz")?, 200)?.contains("joined"));
        body(&scrape(&node, "/healthz")?, 200)?;

        // The secret is in none of it.
        for (what, text) in [
            ("metrics", text.clone()),
            ("annotations", annotations.to_string()),
            ("events", serde_json::to_string(&events)?),
            (
                "status",
                node.exec_ok(&["kube-join-agent", "status", "--json"])?,
            ),
            (
                "diagnose",
                node.exec_ok(&["kube-join-agent", "diagnose", "--json"])?,
            ),
            (
                "check",
                node.exec(&["kube-join-agent", "check", "--json"])?.stdout,
            ),
        ] {
            ensure!(
                !text.contains(DEFAULT_TOKEN_SECRET),
                "{what} shows the token's secret"
            );
        }
        Ok(())
    })());
}

/// The API server does not take Events for a while after the join: the record is
/// asked again later (not given up), and lands once the server takes it.
#[test]
fn a_join_record_the_api_server_was_too_busy_for_is_posted_later() {
    let (node, cp) = prepare("record_later", |i| i);
    let _a = artifacts::Guard::new("record_later", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"events_unavailable_for_secs": 25}))?;
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        check_joined(&node, &cp)?;
        journal_says(
            &node,
            "the API server did not take the join record yet",
            Duration::from_secs(60),
        )?;
        let name = node.name().to_string();
        kja_e2e::wait::until_ok(
            "the Joined Event once the server takes Events again",
            Duration::from_secs(120),
            POLL,
            || {
                let joined = cp.events("default").into_iter().any(|e| {
                    e["reason"] == "Joined" && e["involvedObject"]["name"] == name.as_str()
                });
                ensure!(joined, "no Joined Event yet");
                Ok(())
            },
        )?;
        journal_says(&node, "join recorded on Node", Duration::from_secs(10))?;
        let j = node.journal(Some(AGENT_UNIT))?;
        ensure!(
            !j.contains("refused the join record"),
            "a busy server was taken for a refusal:\n{j}"
        );
        Ok(())
    })());
}

/// The serve phase watches the kubelet's client certificate: a short-lived one (the
/// signer's duration set to 45 s) is warned about when the warning threshold comes due
/// and reported when it expires, in the journal and in `status`, with the recovery.
#[test]
fn a_client_certificate_that_expires_is_reported() {
    let (node, cp) = prepare("certificate_expires", |i| {
        i.extra_toml("[kubelet]\ncertificate_warning = \"35s\"\n")
    });
    let _a = artifacts::Guard::new("certificate_expires", &node, Some(&cp));
    must((|| {
        cp.set_knobs(json!({"client_cert_lifetime_secs": 45}))?;
        boot(&node)?;
        wait_joined(&node, JOIN_TIMEOUT)?;
        // Valid for 45 s, warned about 35 s before the end: about 10 s after signing.
        journal_says(&node, "has not been rotated", Duration::from_secs(60))?;
        let s: Value =
            serde_json::from_str(&node.exec_ok(&["kube-join-agent", "status", "--json"])?)?;
        let problems = s["problems"].to_string();
        ensure!(
            problems.contains("has not been rotated") && problems.contains("rotateCertificates"),
            "status does not name the expiring certificate: {s:#}"
        );
        journal_says(
            &node,
            "the kubelet's credentials are no longer valid",
            Duration::from_secs(90),
        )?;
        let j = node.journal(Some(AGENT_UNIT))?;
        ensure!(
            j.contains("restart kube-join-agent to rejoin"),
            "the expiry line does not say how to recover:\n{j}"
        );
        let s: Value =
            serde_json::from_str(&node.exec_ok(&["kube-join-agent", "status", "--json"])?)?;
        ensure!(
            s["problems"].to_string().contains("no longer valid"),
            "status after the expiry: {s:#}"
        );
        Ok(())
    })());
}
