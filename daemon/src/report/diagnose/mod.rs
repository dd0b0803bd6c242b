//! `kube-join-agent diagnose [--json]`: the facts people in the incidents collected by
//! hand, in one report for a human or a bug report: the configuration (secrets
//! redacted), the state and every attempt with its failure class, the units and their
//! restarts, versions, kubeadm's kubelet files, the kubelet client certificate, signs
//! of standalone mode or anonymous requests in kubelet's journal (seeds 001, 002, 004),
//! this node's pending CSR, and on control planes the etcd findings. It changes nothing.

mod schema;
mod text;

pub use schema::*;
pub use text::text;

use super::Row;
use super::status;
use crate::apiserver::ApiClient;
use crate::config::Settings;
use crate::kubelet;
use crate::paths::Paths;
use crate::pki;
use crate::state::State;
use std::time::SystemTime;

/// Lines of kubelet's journal (this boot) that are read for signs.
const JOURNAL_LINES: &str = "5000";

/// Signs of trouble in kubelet's journal: the text, the name, what it means.
const SIGNS: &[(&str, &str, &str)] = &[
    (
        "kubeclient not set, assuming standalone kubelet",
        "standalone",
        "the kubelet runs without a kubeconfig and never contacts the API server (seed 001)",
    ),
    (
        "running in standalone mode",
        "standalone",
        "the kubelet runs without a kubeconfig and never contacts the API server (seed 001)",
    ),
    (
        "User \"system:anonymous\"",
        "anonymous",
        "the kubelet's requests carry no credentials: its client certificate is missing or not yet issued (seed 004)",
    ),
    (
        "Unauthorized",
        "unauthorized",
        "the API server refuses the kubelet's credentials",
    ),
    (
        "failed to load kubelet config file",
        "no-config",
        "the kubelet started before kubeadm wrote /var/lib/kubelet/config.yaml (seed 001's crash loop)",
    ),
];

/// Collects the report. `settings` is `Err` when the configuration does not load: the
/// rest is reported anyway.
pub async fn run(paths: &Paths, settings: Result<&Settings, String>) -> Diagnosis {
    let mut notes = Vec::new();
    let state = State::load(&paths.state_file()).unwrap_or_else(|e| {
        notes.push(e.to_string());
        State::default()
    });
    let s = settings.as_ref().ok().copied();
    let ca = cluster_ca(paths, &mut notes);
    let versions = versions(s, ca.as_deref(), &mut notes).await;
    let units = units(s, &mut notes).await;
    let (kubelet_files, client_certificate) = kubelet_side(paths, s, ca.as_deref());
    let kubelet_unit = s
        .map(|s| s.kubelet_unit.as_str())
        .unwrap_or("kubelet.service");
    let kubelet_journal = journal_signs(kubelet_unit, &mut notes).await;
    let pending_csrs = match (s, ca.as_deref()) {
        (Some(s), Some(ca)) => pending_csrs(s, ca, &mut notes).await,
        _ => Vec::new(),
    };
    let etcd = match s {
        Some(s) => crate::etcd::findings(s, paths)
            .await
            .iter()
            .map(|f| Row::from_finding(f, ""))
            .collect(),
        None => Vec::new(),
    };
    Diagnosis {
        schema: "kube-join-agent.diagnose/v1",
        configuration: s.map(configuration),
        configuration_error: settings.err(),
        status: status::from_state(&state, SystemTime::now()),
        attempts: state.history.clone(),
        units,
        versions,
        kubelet_files,
        client_certificate,
        kubelet_journal,
        pending_csrs,
        etcd,
        notes,
    }
}

fn configuration(s: &Settings) -> Configuration {
    let r = &s.join.registration;
    Configuration {
        files: s.files.iter().map(|f| f.display().to_string()).collect(),
        api_server: s.join.api_server.to_string(),
        token_id: s.join.token.id().to_string(),
        token_source: s.join.token_source.to_string(),
        ca_cert_hashes: s.join.ca_pins.iter().map(|p| p.0.clone()).collect(),
        node_name: s.join.node_name.clone(),
        control_plane: s.join.control_plane.is_some(),
        labels: r.labels.clone(),
        taints: r
            .taints
            .as_ref()
            .map(|t| t.iter().map(|t| t.to_string()).collect()),
        kubelet_extra_args: r.kubelet_extra_args.clone(),
        ignore_preflight_errors: r.ignore_preflight_errors.clone(),
        cri_socket: format!("unix://{}", s.containerd_socket.display()),
        kubeadm: s.kubeadm_path.display().to_string(),
    }
}

/// The cluster CA kubeadm wrote, if any.
fn cluster_ca(
    paths: &Paths,
    notes: &mut Vec<String>,
) -> Option<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(paths.cluster_ca()).ok()?;
    match pki::pem_certificates(&pem, "cluster CA") {
        Ok(ca) => Some(ca),
        Err(e) => {
            notes.push(format!("{}: {e}", paths.cluster_ca().display()));
            None
        }
    }
}

async fn versions(
    s: Option<&Settings>,
    ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    notes: &mut Vec<String>,
) -> Versions {
    let mut v = Versions {
        agent: env!("CARGO_PKG_VERSION").to_string(),
        ..Versions::default()
    };
    let kubeadm_path = s
        .map(|s| s.kubeadm_path.clone())
        .unwrap_or_else(|| "kubeadm".into());
    match crate::kubeadm::query_version(&kubeadm_path).await {
        Ok(k) => v.kubeadm = k.to_string(),
        Err(e) => notes.push(format!("kubeadm version: {e}")),
    }
    match crate::kubeadm::query_kubelet_version(std::path::Path::new("kubelet")).await {
        Ok(k) => v.kubelet = k.to_string(),
        Err(e) => notes.push(format!("kubelet version: {e}")),
    }
    match (s, ca) {
        (Some(s), Some(ca)) => match ApiClient::anonymous(&s.join.api_server, ca) {
            Ok(client) => match client.server_version().await {
                Ok(a) => v.api_server = a,
                Err(e) => notes.push(e.to_string()),
            },
            Err(e) => notes.push(e.to_string()),
        },
        // Asking without a verified CA would trust whoever answers.
        (Some(_), None) => notes.push(
            "API server version: not asked, the cluster CA is not on this node yet".to_string(),
        ),
        (None, _) => {}
    }
    v
}

async fn units(s: Option<&Settings>, notes: &mut Vec<String>) -> Vec<UnitReport> {
    let systemd = match crate::systemd::Systemd::connect().await {
        Ok(systemd) => systemd,
        Err(e) => {
            notes.push(format!("units not read: {e}"));
            return Vec::new();
        }
    };
    let kubelet = s
        .map(|s| s.kubelet_unit.clone())
        .unwrap_or_else(|| "kubelet.service".into());
    let mut out = Vec::new();
    for unit in [
        kubelet.as_str(),
        "containerd.service",
        "kube-join-agent.service",
    ] {
        match systemd.unit_info(unit).await {
            Ok(info) => out.push(UnitReport {
                unit: unit.to_string(),
                load_state: info.load_state,
                active_state: info.active_state,
                sub_state: info.sub_state,
                unit_file_state: info.unit_file_state,
                restarts: systemd.restarts(unit).await.unwrap_or(0),
            }),
            Err(e) => notes.push(e.to_string()),
        }
    }
    out
}

/// kubeadm's three kubelet files, kubelet.conf, and the client certificate it names.
fn kubelet_side(
    paths: &Paths,
    s: Option<&Settings>,
    ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> (Vec<FileReport>, Option<CertificateReport>) {
    let three = ca.map(|ca| kubelet::check_kubelet_files(paths, ca));
    let mut files: Vec<FileReport> = [
        paths.bootstrap_kubelet_conf(),
        paths.kubelet_config_yaml(),
        paths.kubeadm_flags_env(),
    ]
    .iter()
    .map(|p| FileReport {
        path: p.display().to_string(),
        present: p.exists(),
        valid: three.as_ref().map(Result::is_ok),
        problem: three
            .as_ref()
            .and_then(|r| r.as_ref().err())
            .map(|e| format!("{e:?}")),
    })
    .collect();
    let node = s.map(|s| s.join.node_name.as_str()).unwrap_or_default();
    let conf = paths.kubelet_conf();
    let (valid, problem, cert) = match ca.map(|ca| kubelet::check_kubelet_conf(paths, ca, node)) {
        None => (
            None,
            Some("the cluster CA is not on this node yet".to_string()),
            None,
        ),
        Some(Ok(creds)) => (
            Some(true),
            None,
            Some(CertificateReport {
                subject: creds.summary.subject,
                issuer: creds.summary.issuer,
                not_after: creds.summary.not_after,
                expires_in_seconds: creds.summary.expires_in_secs,
                valid: true,
                problem: None,
            }),
        ),
        Some(Err(problem)) => (Some(false), Some(problem.to_string()), None),
    };
    files.push(FileReport {
        path: conf.display().to_string(),
        present: conf.exists(),
        valid,
        problem,
    });
    (files, cert)
}

async fn journal_signs(unit: &str, notes: &mut Vec<String>) -> Vec<JournalSign> {
    let output = tokio::process::Command::new("journalctl")
        .args([
            "-b",
            "-u",
            unit,
            "-o",
            "cat",
            "--no-pager",
            "-n",
            JOURNAL_LINES,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let text = match output {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            notes.push(format!(
                "kubelet's journal not read: journalctl exited {}",
                o.status.code().unwrap_or(-1)
            ));
            return Vec::new();
        }
        Err(e) => {
            notes.push(format!("kubelet's journal not read: {e}"));
            return Vec::new();
        }
    };
    let mut signs: Vec<JournalSign> = Vec::new();
    for line in text.lines() {
        for (needle, sign, meaning) in SIGNS {
            if line.contains(needle) {
                let last: String = line.chars().take(500).collect();
                match signs.iter_mut().find(|s| s.sign == *sign) {
                    Some(s) => {
                        s.count += 1;
                        s.last = last;
                    }
                    None => signs.push(JournalSign {
                        sign,
                        meaning,
                        count: 1,
                        last,
                    }),
                }
            }
        }
    }
    signs
}

async fn pending_csrs(
    s: &Settings,
    ca: &[rustls::pki_types::CertificateDer<'static>],
    notes: &mut Vec<String>,
) -> Vec<String> {
    let username = format!("system:bootstrap:{}", s.join.token.id());
    let listed = match ApiClient::bootstrap(&s.join.api_server, ca, &s.join.token) {
        Ok(client) => client.pending_csrs(&username).await,
        Err(e) => Err(e),
    };
    listed.unwrap_or_else(|e| {
        notes.push(format!("pending CSRs not listed: {e}"));
        Vec::new()
    })
}
