//! Writes `kube-join-agent(8)` from the agent's clap definition
//! ([`kube_join_agent::cli::Cli`]), so the page cannot drift from `--help`: name,
//! synopsis, description and options come from clap (via clap_mangen); each subcommand
//! is documented inline with its own options; files, exit status, journal fields and
//! related pages are added here.
//!
//! Usage: `kja-manpage OUT_DIR` writes `OUT_DIR/kube-join-agent.8` (packaging/build.sh
//! compresses it for the packages). `SOURCE_DATE_EPOCH`, when set, dates the page.

#![deny(unused_must_use)]

use clap::CommandFactory;
use clap_mangen::Man;
use kube_join_agent::cli::Cli;
use roff::{Roff, bold, italic, roman};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The manual section: system administration commands and daemons.
pub const SECTION: &str = "8";

fn main() -> ExitCode {
    let Some(out_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: kja-manpage OUT_DIR");
        return ExitCode::from(2);
    };
    // Reproducible builds set SOURCE_DATE_EPOCH (packaging/build.sh does); else today.
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let date = civil_date(epoch);
    let page = match render(&date) {
        Ok(page) => page,
        Err(e) => {
            eprintln!("kja-manpage: rendering: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = out_dir.join(format!("kube-join-agent.{SECTION}"));
    let written = std::fs::create_dir_all(&out_dir)
        .and_then(|()| std::fs::File::create(&path))
        .and_then(|mut f| f.write_all(&page));
    match written {
        Ok(()) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kja-manpage: writing {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The whole page, in roff.
pub fn render(date: &str) -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .date(date)
        .source(format!("kube-join-agent {version}"))
        .manual("System Administration");

    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    description(&cmd, &mut out)?;
    man.render_options_section(&mut out)?;
    commands(&cmd, &mut out)?;
    static_sections(&mut out)?;
    Ok(out)
}

fn description(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    let about = cmd.get_about().map(|s| s.to_string()).unwrap_or_default();
    r.text([roman(format!("{}.", about.trim_end_matches('.')))]);
    r.control("PP", [] as [&str; 0]);
    r.text([
        roman(
            "kube-join-agent runs as kube-join-agent.service, ordered before kubelet.service, on \
         every boot. On a machine that is not yet a Kubernetes node it keeps kubelet stopped \
         and runtime-masked, checks the host, the container runtime and the API server, \
         verifies the bootstrap token and pins the cluster CA, runs ",
        ),
        bold("kubeadm join"),
        roman(
            " under supervision, and unmasks and starts kubelet only once kubeadm has written a \
         valid configuration. On a node that has joined it checks kubelet's credentials and \
         changes nothing. It then stays running and watches the kubelet client certificate.",
        ),
    ]);
    r.control("PP", [] as [&str; 0]);
    r.text([roman(
        "When it cannot join it says why in the journal, one line per failure naming the \
         cause and the fix, backs off and retries, or stops when only an operator can help.",
    )]);
    r.to_writer(out)
}

/// COMMANDS: each subcommand with its synopsis, description and options.
fn commands(cmd: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut r = Roff::new();
    r.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut usage = vec![bold(format!("kube-join-agent {}", sub.get_name()))];
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_id() == "help" || arg.get_id() == "version" || arg.is_global_set() {
                continue;
            }
            usage.push(roman(" ["));
            usage.push(bold(flag(arg)));
            usage.push(roman("]"));
        }
        r.control("TP", [] as [&str; 0]);
        r.text(usage);
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        r.text([roman(about)]);
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_id() == "help" || arg.get_id() == "version" || arg.is_global_set() {
                continue;
            }
            r.control("RS", [] as [&str; 0]);
            r.control("TP", [] as [&str; 0]);
            r.text([bold(flag(arg))]);
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|s| s.to_string())
                .unwrap_or_default();
            r.text([roman(help)]);
            r.control("RE", [] as [&str; 0]);
        }
    }
    r.to_writer(out)
}

fn flag(arg: &clap::Arg) -> String {
    match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}, --{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => arg.get_id().to_string().to_uppercase(),
    }
}

/// (term, description) pairs rendered as a tagged list.
fn tagged(r: &mut Roff, items: &[(&str, &str)]) {
    for (term, text) in items {
        r.control("TP", [] as [&str; 0]);
        r.text([bold(*term)]);
        r.text([roman(*text)]);
    }
}

fn static_sections(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut r = Roff::new();
    r.control("SH", ["CONFIGURATION"]);
    r.text([
        roman(
            "TOML fragments are read from the directories below in this order, each in file-name \
         order; a key set later wins. Every key is documented in the shipped defaults, ",
        ),
        italic("/usr/lib/kube-join-agent/config.d/10-defaults.toml"),
        roman(". Put settings in /etc, never in /usr/lib. A minimal join fragment sets "),
        bold("join.api_server"),
        roman(", "),
        bold("join.token_file"),
        roman(" and "),
        bold("join.ca_cert_hashes"),
        roman("."),
    ]);
    r.control("SS", ["Join settings"]);
    r.text([roman(
        "Under [join], rendered into the JoinConfiguration of the API version the node's kubeadm reads (v1beta2, v1beta3, v1beta4):",
    )]);
    tagged(
        &mut r,
        &[
            (
                "ignore_preflight_errors",
                "kubeadm preflight checks whose errors become warnings, as kubeadm names them (\"FileExisting-crictl\"), or [\"all\"] alone, which goes on kubeadm's command line.",
            ),
            (
                "labels",
                "Node labels, set by the kubelet at registration. Labels the kubelet may not set on its own Node (the kubernetes.io and k8s.io namespaces outside node.kubernetes.io, kubelet.kubernetes.io and the well-known set; node-role.kubernetes.io among them) are refused.",
            ),
            (
                "taints",
                "Node taints, \"key[=value]:Effect\". Unset keeps kubeadm's default; an empty list means none, on control planes too.",
            ),
            (
                "kubelet_extra_args",
                "Extra kubelet flags, without the leading dashes; flags kubeadm or the agent set are refused with the setting to use instead.",
            ),
            (
                "cri_socket",
                "The CRI socket (unix:///path); the same setting as containerd.socket.",
            ),
            (
                "patches",
                "A directory of kubeadm patches (kubeadm 1.22 and later).",
            ),
            (
                "skip_phases",
                "kubeadm join phases to skip (kubeadm 1.22 and later); not kubelet-start.",
            ),
        ],
    );
    r.control("SS", ["Metrics"]);
    r.text([
        roman("Under [metrics]: "),
        bold("listen"),
        roman(
            ", empty (the default) to serve only on the Unix socket below, or a loopback \
             address such as \"127.0.0.1:9731\" or \"[::1]:9731\" to serve there too; any \
             other address is refused. Both answer GET /metrics (kube_join_agent_*, in the \
             OpenMetrics text format to a client that asks for it, else the 0.0.4 text \
             format), /healthz (200 while the agent runs) and /readyz (200 once the node is \
             joined, else 503 and the phase).",
        ),
    ]);

    r.control("SH", ["FILES"]);
    tagged(
        &mut r,
        &[
            (
                "/usr/lib/kube-join-agent/config.d/*.toml",
                "Vendor defaults (10-defaults.toml).",
            ),
            ("/run/kube-join-agent/config.d/*.toml", "Runtime overrides."),
            (
                "/etc/kube-join-agent/config.toml",
                "The administrator's configuration.",
            ),
            (
                "/etc/kube-join-agent/config.d/*.toml",
                "The administrator's fragments; cloud-init writes its join fragment here.",
            ),
            (
                "/etc/kube-join-agent/token",
                "The bootstrap token (the path is set by join.token_file). Must be owned by root with mode 0600; refused otherwise.",
            ),
            (
                "/var/lib/kube-join-agent/state.json",
                "Phase, attempt count and last error, kept across restarts; shown by kube-join-agent status.",
            ),
            (
                "/run/kube-join-agent/",
                "Runtime directory (mode 0700): the generated JoinConfiguration (mode 0600) while kubeadm runs.",
            ),
            (
                "/run/kube-join-agent/metrics.sock",
                "The metrics socket (mode 0660): /metrics, /healthz and /readyz over HTTP.",
            ),
            (
                "/run/systemd/system/kubelet.service",
                "The runtime mask (a link to /dev/null) that keeps kubelet from starting while the agent works; gone on reboot.",
            ),
            (
                "/run/systemd/system/kubelet.service.d/50-kube-join-agent-gate.conf",
                "The gate used instead of the mask when kubelet's unit file lives in /etc/systemd/system.",
            ),
        ],
    );

    r.control("SH", ["EXIT STATUS"]);
    tagged(
        &mut r,
        &[
            (
                "0",
                "Stopped by SIGTERM or SIGINT; for check, every check passed.",
            ),
            (
                "1",
                "A local error (for example D-Bus unavailable); systemd restarts the agent.",
            ),
            (
                "69",
                "EX_UNAVAILABLE: the retry budget (retry.max_attempts) is spent. The unit is not restarted (RestartPreventExitStatus).",
            ),
            (
                "78",
                "EX_CONFIG: invalid configuration, or a failure only an operator can fix (a CA pin mismatch, a live node with the same name). Not restarted; kubelet stays masked.",
            ),
        ],
    );

    r.control("SH", ["JOURNAL FIELDS"]);
    r.text([
        roman(
            "Each phase logs one line with the structured fields below; select with, for example, ",
        ),
        bold("journalctl -u kube-join-agent PHASE=discovery"),
        roman(", or show all with "),
        bold("journalctl -u kube-join-agent -o verbose"),
        roman("."),
    ]);
    tagged(
        &mut r,
        &[
            (
                "PHASE=",
                "load-config, already-joined, gate-kubelet, preflight, discovery, join, handoff, tls-bootstrap, verify, serve.",
            ),
            ("ATTEMPT=", "The join attempt, counted across restarts."),
            ("NODE_NAME=", "The Kubernetes Node name."),
            ("FAILURE=", "On failure lines: the failure class."),
        ],
    );

    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("kubeadm"),
        roman("(1), "),
        bold("kubelet"),
        roman("(1), "),
        bold("systemd.service"),
        roman("(5), "),
        bold("journalctl"),
        roman("(1), "),
        bold("cloud-init"),
        roman("(1)"),
    ]);
    r.to_writer(out)
}

/// `YYYY-MM-DD` (UTC) for seconds since the epoch (Howard Hinnant's civil_from_days).
fn civil_date(secs: i64) -> String {
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_documents_every_command_and_the_exit_codes() {
        let page = String::from_utf8(render("2026-11-21").unwrap()).unwrap();
        assert!(
            page.contains("\n.TH kube-join-agent 8 2026-11-21 \"kube-join-agent "),
            "{page}"
        );
        for needle in [
            "kube\\-join\\-agent run",
            "kube\\-join\\-agent check",
            "kube\\-join\\-agent status",
            "\\-\\-json",
            "\\-\\-verbose",
            "EXIT STATUS",
            ".SH FILES",
            "PHASE=",
        ] {
            assert!(page.contains(needle), "no {needle:?} in\n{page}");
        }
        // The hidden --root stays hidden.
        assert!(!page.contains("\\-\\-root"), "{page}");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(1_795_225_600), "2026-11-21");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
