//! The diagnosis as a terminal shows it.

use super::super::status;
use super::Diagnosis;

/// The report as a terminal shows it.
pub fn text(d: &Diagnosis) -> String {
    let mut out = String::new();
    out += "== status\n";
    out += &status::text(&d.status);
    out += "\n== attempts\n";
    for a in &d.attempts {
        out += &format!(
            "attempt {} at {}: {}\n",
            a.attempt,
            a.started_at,
            match (&a.failure, &a.message) {
                (Some(class), Some(m)) => format!("failed ({class}): {m}"),
                (Some(class), None) => format!("failed ({class})"),
                (None, _) if a.ended_at.is_some() => "did not fail".into(),
                (None, _) => "under way".into(),
            }
        );
    }
    out += "\n== configuration\n";
    match (&d.configuration, &d.configuration_error) {
        (Some(c), _) => out += &serde_json::to_string_pretty(c).expect("serializes"),
        (None, Some(e)) => out += &format!("does not load: {e}"),
        _ => {}
    }
    out += "\n\n== units\n";
    for u in &d.units {
        out += &format!(
            "{}: {} {} ({}), {} automatic restarts\n",
            u.unit, u.active_state, u.sub_state, u.unit_file_state, u.restarts
        );
    }
    out += &format!(
        "\n== versions\nagent {}, kubeadm {}, kubelet {}, API server {}\n",
        d.versions.agent,
        or_unknown(&d.versions.kubeadm),
        or_unknown(&d.versions.kubelet),
        or_unknown(&d.versions.api_server)
    );
    out += "\n== kubelet files\n";
    for f in &d.kubelet_files {
        out += &format!(
            "{}: {}{}\n",
            f.path,
            match (f.present, f.valid) {
                (false, _) => "missing",
                (true, Some(true)) => "present, valid",
                (true, Some(false)) => "present, NOT valid",
                (true, None) => "present",
            },
            f.problem
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &d.client_certificate {
        out += &format!(
            "\n== client certificate\n{} issued by {}, expires {} (in {}s)\n",
            c.subject, c.issuer, c.not_after, c.expires_in_seconds
        );
    }
    out += "\n== kubelet's journal (this boot)\n";
    if d.kubelet_journal.is_empty() {
        out += "no signs of standalone mode, anonymous requests or a missing config\n";
    }
    for j in &d.kubelet_journal {
        out += &format!(
            "{} ({} lines): {}\n  last: {}\n",
            j.sign, j.count, j.meaning, j.last
        );
    }
    if !d.pending_csrs.is_empty() {
        out += &format!("\n== pending CSRs\n{}\n", d.pending_csrs.join(", "));
    }
    if !d.etcd.is_empty() {
        out += "\n== etcd\n";
        for row in &d.etcd {
            out += &format!("{row}\n");
        }
    }
    if !d.notes.is_empty() {
        out += "\n== not looked at\n";
        for n in &d.notes {
            out += &format!("{n}\n");
        }
    }
    out
}

/// A version not learned (the reason is in the notes): said, not left blank.
fn or_unknown(v: &str) -> &str {
    if v.is_empty() {
        "unknown (see notes)"
    } else {
        v
    }
}
