//! The packages as users get them: the .deb installed with dpkg into a real systemd node
//! and joining it, removed and purged without leftovers, the cloud-init example booted
//! with real cloud-init, the .rpm's contents, digests and scriptlets, and the install
//! tree they all share. Needs `bash packaging/build.sh` first (tests/run.sh runs it).
//!
//! What the packages promise (packaging/README.md): installing neither enables nor
//! starts the agent; removing stops and disables it and lifts its gate on kubelet (the
//! runtime mask); purging removes its state; the unit passes `systemd-analyze verify`.

use anyhow::{Result, anyhow, ensure};
use kja_e2e::control_plane::FakeControlPlane;
use kja_e2e::install::{
    self, AGENT_STATE_PATH, AGENT_UNIT, DEFAULT_TOKEN, Install, JOIN_CONFIG_PATH,
    KUBEADM_INVOCATIONS_LOG, TOKEN_PATH,
};
use kja_e2e::node::{Node, NodeSpec};
use kja_e2e::package::{
    self, DEB_GENERATOR_PATH, DEB_UNIT_PATH, DEFAULTS_PATH, MAN_PATH, RPM_GENERATOR_PATH,
    RPM_UNIT_PATH, TMPFILES_PATH,
};
use kja_e2e::scenario::{PHASES, boot, check_joined, check_joined_since, must, wait_joined};
use kja_e2e::{artifacts, paths, wait};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);
const KUBELET_MASK: &str = "/run/systemd/system/kubelet.service";
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/kube-join-agent.service";

fn require_root() {
    if let Err(e) = kja_e2e::require_root() {
        panic!("{e:#}");
    }
}

/// A fresh node (named after the test) and its fake API server; `what` installed (no
/// agent: the package brings it). Not booted.
fn prepare(test: &str, what: impl FnOnce(&str) -> Install) -> (Node, FakeControlPlane) {
    require_root();
    let node = Node::create(NodeSpec::new(&kja_e2e::node_name(test)))
        .unwrap_or_else(|e| panic!("creating the node: {e:#}"));
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .unwrap_or_else(|e| panic!("starting the fake API server: {e:#}"));
    let pin = cp.pin().unwrap_or_else(|e| panic!("{e:#}"));
    let what = what(&pin);
    assert!(
        !what.agent,
        "the package installs the agent, not the harness"
    );
    install::install(&node, &what).unwrap_or_else(|e| panic!("installing into the node: {e:#}"));
    (node, cp)
}

/// Fakes, containerd, the join fragment and the token: everything but the agent.
fn everything_but_the_agent(pin: &str) -> Install {
    Install {
        agent: false,
        ..Install::agent(pin)
    }
}

/// This boot's phase lines of the agent, from `journalctl -o verbose` (test 5 of the
/// packaging issue reads the same fields a user would).
fn phase_entries(node: &Node) -> Result<Vec<package::VerboseEntry>> {
    let text = node.journal_verbose(Some(AGENT_UNIT))?;
    Ok(package::parse_verbose(&text)
        .into_iter()
        .filter(|e| {
            e.get("MESSAGE")
                .and_then(|m| m.strip_prefix("phase "))
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(p, _)| !p.is_empty() && !p.contains(' '))
        })
        .collect())
}

fn phases_seen(node: &Node) -> Result<Vec<String>> {
    Ok(phase_entries(node)?
        .iter()
        .filter_map(|e| e.get("PHASE").cloned())
        .collect())
}

/// Every phase of a fresh join appears in order, each line with `PHASE=`, `ATTEMPT=` and
/// `NODE_NAME=` as `journalctl -o verbose` shows them.
fn check_phase_fields(node: &Node) -> Result<()> {
    let entries = phase_entries(node)?;
    let mut next = 0;
    for e in &entries {
        let message = &e["MESSAGE"];
        let phase = e
            .get("PHASE")
            .ok_or_else(|| anyhow!("phase line without PHASE=: {e:?}"))?;
        ensure!(
            message.starts_with(&format!("phase {phase}:")),
            "PHASE={phase} on {message:?}"
        );
        let attempt = e.get("ATTEMPT").map(String::as_str).unwrap_or_default();
        ensure!(
            !attempt.is_empty() && attempt.chars().all(|c| c.is_ascii_digit()),
            "phase {phase}: ATTEMPT={attempt:?} in {e:?}"
        );
        ensure!(
            e.get("NODE_NAME").map(String::as_str) == Some(node.name()),
            "phase {phase}: NODE_NAME={:?}, not {}",
            e.get("NODE_NAME"),
            node.name()
        );
        if next < PHASES.len() && phase == PHASES[next] {
            next += 1;
        }
    }
    let seen: Vec<&str> = entries.iter().map(|e| e["PHASE"].as_str()).collect();
    ensure!(
        next == PHASES.len(),
        "phases out of order or missing: expected {PHASES:?}, journal has {seen:?}"
    );
    eprintln!("phase lines with PHASE=, ATTEMPT=, NODE_NAME=: {seen:?}");
    Ok(())
}

/// The running agent is the package's binary, not a copy.
fn check_runs_packaged_binary(node: &Node) -> Result<()> {
    let pid = node
        .systemctl(&["show", "-p", "MainPID", "--value", AGENT_UNIT])?
        .trimmed()
        .to_string();
    ensure!(pid != "0" && !pid.is_empty(), "the agent has no main PID");
    let exe = node.exec_ok(&["readlink", &format!("/proc/{pid}/exe")])?;
    ensure!(
        exe.trim() == "/usr/bin/kube-join-agent",
        "the agent runs {exe:?}"
    );
    let owner = node.exec_ok(&["dpkg", "-S", "/usr/bin/kube-join-agent"])?;
    ensure!(
        owner.starts_with("kube-join-agent:"),
        "/usr/bin/kube-join-agent belongs to {owner:?}"
    );
    let fragment = node.exec_ok(&[
        "systemctl",
        "show",
        "-p",
        "FragmentPath",
        "--value",
        AGENT_UNIT,
    ])?;
    ensure!(
        fragment.trim() == DEB_UNIT_PATH,
        "the unit in use is {fragment:?}"
    );
    Ok(())
}

/// The unit's sandbox is in force around the running agent: in its mount namespace /usr
/// and /etc are read-only but /etc/kubernetes and /var/lib/kubelet are writable (what
/// kubeadm writes); `systemd-analyze security` scores it.
fn check_sandbox(node: &Node) -> Result<()> {
    let pid = node
        .systemctl(&["show", "-p", "MainPID", "--value", AGENT_UNIT])?
        .trimmed()
        .to_string();
    let try_write = |path: &str| -> Result<bool> {
        let script = format!("touch {path} && rm -f {path}");
        Ok(node
            .exec(&["nsenter", "-t", &pid, "-m", "--", "sh", "-c", &script])?
            .success())
    };
    for ro in ["/usr/lib/.kja-probe", "/etc/.kja-probe"] {
        ensure!(!try_write(ro)?, "the agent can write {ro}");
    }
    for rw in [
        "/etc/kubernetes/.kja-probe",
        "/var/lib/kubelet/.kja-probe",
        "/run/systemd/system/.kja-probe",
    ] {
        ensure!(try_write(rw)?, "the agent cannot write {rw}");
    }
    let security = node.exec(&["systemd-analyze", "security", "--no-pager", AGENT_UNIT])?;
    if let Some(overall) = security
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("Overall exposure"))
    {
        eprintln!("systemd-analyze security: {}", overall.trim());
    }
    Ok(())
}

/// After `dpkg -i`: the tree is in place, nothing enabled, nothing started, and the
/// unit verifies cleanly on this node's systemd.
fn check_installed_not_enabled(node: &Node) -> Result<()> {
    for f in [
        DEB_UNIT_PATH,
        DEFAULTS_PATH,
        TMPFILES_PATH,
        MAN_PATH,
        "/usr/bin/kube-join-agent",
    ] {
        ensure!(node.exists(f)?, "{f} is missing after dpkg -i");
    }
    for d in [
        "/etc/kube-join-agent/config.d",
        "/var/lib/kube-join-agent",
        "/run/kube-join-agent",
    ] {
        let out = node.exec_ok(&["stat", "-c", "%F %a %U", d])?;
        ensure!(out.starts_with("directory"), "{d}: {out}");
        if d != "/etc/kube-join-agent/config.d" {
            ensure!(out.trim() == "directory 700 root", "{d}: {out}");
        }
    }
    let enablement = node.unit_enablement(AGENT_UNIT)?;
    ensure!(
        enablement == "disabled",
        "installing made the agent {enablement}"
    );
    let active = node.unit_state(AGENT_UNIT)?;
    ensure!(active == "inactive", "installing made the agent {active}");
    let verify = node.exec(&["systemd-analyze", "verify", DEB_UNIT_PATH])?;
    eprintln!("systemd-analyze verify {DEB_UNIT_PATH}: {verify}");
    ensure!(
        verify.success() && verify.stdout.trim().is_empty() && verify.stderr.trim().is_empty(),
        "systemd-analyze verify is not clean: {verify}"
    );
    Ok(())
}

/// 1 and 5: `dpkg -i` into a fresh booted node; not enabled or started; the unit
/// verifies; enabled, the packaged agent joins the node (phases in order, each with its
/// structured fields); a reboot runs it from the boot transaction, before kubelet, and
/// it finds the node joined; reinstalling (an upgrade) restarts it and keeps it enabled.
#[test]
fn deb_installs_and_joins() {
    let (node, cp) = prepare("deb_installs_and_joins", everything_but_the_agent);
    let _artifacts = artifacts::Guard::new("deb_installs_and_joins", &node, Some(&cp));
    let deb = package::deb().unwrap_or_else(|e| panic!("{e:#}"));
    must((|| {
        boot(&node)?;
        let out = package::dpkg_install(&node, &deb)?;
        eprintln!("{}", out.stdout.trim_end());
        check_installed_not_enabled(&node)?;

        // kubelet (enabled by its package) has been crash-looping since boot: nothing
        // gated it before the agent was installed. From the agent's start on, it must not.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros() as u64;
        node.systemctl(&["enable", "--now", AGENT_UNIT])?.ok()?;
        let t0 = Instant::now();
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after enable --now: {state}", t0.elapsed());
        check_joined_since(&node, &cp, since)?;
        check_runs_packaged_binary(&node)?;
        check_sandbox(&node)?;
        check_phase_fields(&node)?;
        let invocations = node.read_to_string(KUBEADM_INVOCATIONS_LOG)?;
        ensure!(
            invocations.contains("join"),
            "no kubeadm join in {invocations}"
        );

        node.reboot()?;
        node.wait_systemd()?;
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("second boot: {state}");
        let phases = phases_seen(&node)?;
        ensure!(
            phases.iter().any(|p| p == "already-joined") && !phases.iter().any(|p| p == "join"),
            "second boot phases: {phases:?}"
        );
        ensure!(
            node.read_to_string(KUBEADM_INVOCATIONS_LOG)? == invocations,
            "kubeadm ran again on the second boot"
        );
        check_joined(&node, &cp)?;
        check_runs_packaged_binary(&node)?;

        // An upgrade (here: the same package again) restarts the running agent on the
        // new files and keeps it enabled; the node stays joined.
        let main_pid = || -> Result<String> {
            Ok(node
                .systemctl(&["show", "-p", "MainPID", "--value", AGENT_UNIT])?
                .trimmed()
                .to_string())
        };
        let before = main_pid()?;
        package::dpkg_install(&node, &deb)?;
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        let after = main_pid()?;
        ensure!(
            after != before && after != "0",
            "the upgrade did not restart the agent (MainPID {before} -> {after})"
        );
        let enablement = node.unit_enablement(AGENT_UNIT)?;
        ensure!(
            enablement == "enabled",
            "after the upgrade the agent is {enablement}"
        );
        eprintln!("after the upgrade: {state}");
        check_joined(&node, &cp)
    })());
}

/// 2: with the agent holding kubelet masked mid-join (containerd is off, so it waits in
/// preflight), `apt-get remove` stops and disables it and lifts the mask, leaving no
/// unit and no mask; `apt-get purge` then removes its state. The administrator's join
/// fragment and token stay.
#[test]
fn deb_remove_and_purge_leave_nothing() {
    let (node, cp) = prepare("deb_remove_and_purge", |pin| {
        everything_but_the_agent(pin).containerd_enabled(false)
    });
    let _artifacts = artifacts::Guard::new("deb_remove_and_purge", &node, Some(&cp));
    let deb = package::deb().unwrap_or_else(|e| panic!("{e:#}"));
    must((|| {
        boot(&node)?;
        package::dpkg_install(&node, &deb)?;
        node.systemctl(&["enable", "--now", AGENT_UNIT])?.ok()?;
        wait::until_ok(
            "the agent to gate kubelet",
            Duration::from_secs(60),
            POLL,
            || {
                let e = node.unit_enablement("kubelet.service")?;
                ensure!(e == "masked-runtime", "kubelet is {e}");
                ensure!(node.exists(AGENT_STATE_PATH)?, "no state yet");
                Ok(())
            },
        )?;
        ensure!(
            node.unit_state(AGENT_UNIT)? == "active",
            "the agent is not active"
        );

        let out = package::node_run(&node, &["apt-get", "remove", "-y", "kube-join-agent"])?;
        eprintln!("apt-get remove:\n{}", out.stdout.trim_end());
        let load = node
            .systemctl(&["show", "-p", "LoadState", "--value", AGENT_UNIT])?
            .trimmed()
            .to_string();
        ensure!(load == "not-found", "after remove the unit is {load}");
        let pids = node.exec(&["pgrep", "-x", "kube-join-agent"])?;
        ensure!(!pids.success(), "the agent still runs: {}", pids.stdout);
        for gone in [
            DEB_UNIT_PATH,
            WANTS_LINK,
            "/etc/systemd/system/kube-join-agent.service",
            KUBELET_MASK,
            "/run/systemd/system/kubelet.service.d/50-kube-join-agent-gate.conf",
            "/run/kube-join-agent",
            "/usr/bin/kube-join-agent",
        ] {
            package::ensure_absent(&node, gone)?;
        }
        let kubelet = node.unit_enablement("kubelet.service")?;
        ensure!(kubelet == "enabled", "after remove kubelet is {kubelet}");
        ensure!(
            node.exists("/var/lib/kube-join-agent/state.json")?,
            "remove already took the state (that is purge's job)"
        );
        for kept in [JOIN_CONFIG_PATH, TOKEN_PATH] {
            ensure!(node.exists(kept)?, "remove took the administrator's {kept}");
        }

        let out = package::node_run(&node, &["apt-get", "purge", "-y", "kube-join-agent"])?;
        eprintln!("apt-get purge:\n{}", out.stdout.trim_end());
        for gone in [
            "/var/lib/kube-join-agent",
            "/var/lib/systemd/deb-systemd-helper-enabled/kube-join-agent.service.dsh-also",
            "/var/lib/systemd/deb-systemd-helper-masked/kube-join-agent.service",
            "/etc/systemd/system/kube-join-agent.service",
            WANTS_LINK,
            KUBELET_MASK,
        ] {
            package::ensure_absent(&node, gone)?;
        }
        let status = node.exec(&[
            "dpkg-query",
            "-W",
            "-f=${db:Status-Status}",
            "kube-join-agent",
        ])?;
        ensure!(
            !status.success() || status.trimmed() == "not-installed",
            "after purge dpkg says {:?}",
            status.stdout
        );
        let kubelet = node.unit_enablement("kubelet.service")?;
        ensure!(kubelet == "enabled", "after purge kubelet is {kubelet}");
        // The administrator's files are theirs to remove.
        for kept in [JOIN_CONFIG_PATH, TOKEN_PATH] {
            ensure!(node.exists(kept)?, "purge took the administrator's {kept}");
        }
        Ok(())
    })());
}

/// 3: real cloud-init with the README's user-data (only the endpoint, token and pin
/// replaced by the fake cluster's) in a NoCloud seed, on an image with the package
/// installed (by dpkg into the tree, as image builds do) and not enabled: on boot
/// cloud-init writes the files 0600 and enables and starts the agent, which joins.
#[test]
fn cloud_init_user_data_example_joins() {
    let (node, cp) = prepare("cloud_init_example", |_| Install::fakes_only());
    let _artifacts = artifacts::Guard::new("cloud_init_example", &node, Some(&cp));
    let deb = package::deb().unwrap_or_else(|e| panic!("{e:#}"));
    must((|| {
        let out = package::dpkg_install_offline(&node, &deb)?;
        eprintln!("dpkg --root:\n{}", out.stdout.trim_end());
        ensure!(
            !node.exists(WANTS_LINK)?,
            "installing into the image enabled the agent"
        );
        ensure!(!node.exists(JOIN_CONFIG_PATH)? && !node.exists(TOKEN_PATH)?);
        // The image's own cloud-init settings (not the user-data): the test root has no
        // generated locales, so cloud-init's locale module would fail on update-locale.
        node.write_file(
            "/etc/cloud/cloud.cfg.d/90-kja-test-image.cfg",
            b"# kja-e2e test image: no locales generated.\nlocale: false\n",
            0o644,
        )?;
        let user_data = package::user_data_for("127.0.0.1:6443", DEFAULT_TOKEN, &cp.pin()?)?;
        package::write_nocloud_seed(&node, &format!("iid-{}", node.name()), &user_data)?;

        let t0 = boot(&node)?;
        let status = node.exec_timeout(
            &["cloud-init", "status", "--wait", "--long"],
            Duration::from_secs(120),
        )?;
        eprintln!("cloud-init status after {:?}: {status}", t0.elapsed());
        let state = wait_joined(&node, JOIN_TIMEOUT)?;
        eprintln!("joined {:?} after boot: {state}", t0.elapsed());
        ensure!(
            status.stdout.contains("status: done"),
            "cloud-init did not finish cleanly: {status}"
        );
        let enablement = node.unit_enablement(AGENT_UNIT)?;
        ensure!(
            enablement == "enabled",
            "cloud-init left the agent {enablement}"
        );
        for f in [JOIN_CONFIG_PATH, TOKEN_PATH] {
            let st = node.exec_ok(&["stat", "-c", "%a %U:%G", f])?;
            ensure!(st.trim() == "600 root:root", "{f} is {st}");
        }
        check_joined(&node, &cp)?;
        check_runs_packaged_binary(&node)
    })());
}

fn rpm_expected_files() -> BTreeSet<String> {
    [
        "/usr/bin/kube-join-agent",
        RPM_UNIT_PATH,
        RPM_GENERATOR_PATH,
        TMPFILES_PATH,
        DEFAULTS_PATH,
        MAN_PATH,
        "/usr/share/doc/kube-join-agent/README.md",
        "/usr/share/doc/kube-join-agent/LICENSE",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// 4: the .rpm lists the expected files, its digests verify, its scriptlets are the
/// ones in packaging/rpm/ (shown here), and it unpacks into a scratch root.
#[test]
fn rpm_contents_digests_and_scriptlets() {
    let rpm = package::rpm().unwrap_or_else(|e| panic!("{e:#}"));
    let rpm_s = rpm.to_string_lossy().into_owned();
    must((|| {
        let files: BTreeSet<String> = package::rpm_files(&rpm)?.into_iter().collect();
        eprintln!(
            "rpm -qpl:\n{}",
            files.iter().cloned().collect::<Vec<_>>().join("\n")
        );
        ensure!(
            files == rpm_expected_files(),
            "rpm -qpl: {files:?}\nexpected {:?}",
            rpm_expected_files()
        );
        let k = package::host("rpm", &["-K", &rpm_s])?;
        eprintln!("rpm -K: {}", k.stdout.trim());
        ensure!(
            k.success() && k.stdout.contains("digests OK"),
            "rpm -K: {k}"
        );
        let scripts = package::rpm_query(&["-qp", "--scripts", &rpm_s])?;
        eprintln!("rpm -qp --scripts:\n{scripts}");
        let scriptlets = package::rpm_scriptlets(&rpm)?;
        let dir = paths::workspace_root().join("packaging/rpm");
        for (name, file) in [
            ("postinstall", "post.sh"),
            ("preuninstall", "preun.sh"),
            ("postuninstall", "postun.sh"),
        ] {
            let want = std::fs::read_to_string(dir.join(file))?;
            let got = scriptlets
                .get(name)
                .ok_or_else(|| anyhow!("no {name} scriptlet: {scriptlets:?}"))?;
            ensure!(
                got.trim_end() == want.trim_end(),
                "{name} is not packaging/rpm/{file}:\n{got}"
            );
            let syntax = package::host("sh", &["-n", "-c", got])?;
            ensure!(syntax.success(), "{name} does not parse: {syntax}");
        }
        ensure!(
            scriptlets.len() == 3,
            "unexpected scriptlets: {:?}",
            scriptlets.keys()
        );
        // Installing never enables or starts; erasing disables, stops and lifts the gate.
        let code = |body: &str| -> String {
            body.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let post = code(&scriptlets["postinstall"]);
        ensure!(
            post.contains("systemctl --no-reload preset kube-join-agent.service")
                && !post.contains("systemctl enable")
                && !post.contains("systemctl start")
                && !post.contains("--now"),
            "%post must only apply presets:\n{post}"
        );
        let preun = code(&scriptlets["preuninstall"]);
        ensure!(
            preun.contains("disable --now kube-join-agent.service") && preun.contains(KUBELET_MASK),
            "%preun must stop, disable and unmask:\n{preun}"
        );

        let scratch = tempdir("rpm-root")?;
        let root = scratch.to_string_lossy().into_owned();
        package::host("rpm", &["--root", &root, "--initdb"])?.ok()?;
        // Debian's rpm wants --force-debian to install at all; the scratch root has no
        // shell, so the scriptlets (tested in a node below) are not run here.
        let out = package::host(
            "rpm",
            &[
                "--root",
                &root,
                "-i",
                "--nodeps",
                "--noscripts",
                "--force-debian",
                &rpm_s,
            ],
        )?;
        ensure!(out.success(), "rpm --root -i: {out}");
        let q = package::rpm_query(&["--root", &root, "-q", "kube-join-agent"])?;
        ensure!(q.starts_with("kube-join-agent-"), "rpm -q: {q}");
        for f in rpm_expected_files() {
            ensure!(
                scratch.join(f.trim_start_matches('/')).is_file(),
                "{f} did not land in the scratch root"
            );
        }
        let unit = std::fs::read_to_string(scratch.join(RPM_UNIT_PATH.trim_start_matches('/')))?;
        ensure!(
            unit == std::fs::read_to_string(
                paths::workspace_root().join("systemd/kube-join-agent.service")
            )?
        );
        let defaults =
            std::fs::read_to_string(scratch.join(DEFAULTS_PATH.trim_start_matches('/')))?;
        ensure!(defaults == std::fs::read_to_string(paths::default_config())?);
        let verify = package::host(
            "rpm",
            &["--root", &root, "-V", "--nodeps", "kube-join-agent"],
        )?;
        ensure!(
            verify.success() && verify.stdout.trim().is_empty(),
            "rpm -V in the scratch root: {verify}"
        );
        std::fs::remove_dir_all(&scratch)?;
        Ok(())
    })());
}

/// 4, continued: the .rpm's scriptlets, run as rpm runs them (`sh -c BODY ARG`) on a
/// real systemd node where the agent holds kubelet masked: %preun on erase stops and
/// disables the agent and lifts the mask, %postun on erase removes the state, and %post
/// on install honours presets (a disabling preset leaves the agent disabled).
#[test]
fn rpm_scriptlets_on_a_real_systemd() {
    let rpm = package::rpm().unwrap_or_else(|e| panic!("{e:#}"));
    let scriptlets = package::rpm_scriptlets(&rpm).unwrap_or_else(|e| panic!("{e:#}"));
    require_root();
    let node = Node::create(NodeSpec::new(&kja_e2e::node_name("rpm_scriptlets")))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let cp = FakeControlPlane::start(node.netns(), node.dir().join("apiserver"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pin = cp.pin().unwrap_or_else(|e| panic!("{e:#}"));
    // The harness's copy install (enabled); containerd off, so the agent waits with
    // kubelet masked.
    install::install(&node, &Install::agent(&pin).containerd_enabled(false))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let _artifacts = artifacts::Guard::new("rpm_scriptlets", &node, Some(&cp));
    let run = |name: &str, arg: &str| -> Result<()> {
        let body = &scriptlets[name];
        let out = node.exec(&["sh", "-c", body, name, arg])?;
        ensure!(out.success(), "{name} {arg}: {out}");
        Ok(())
    };
    must((|| {
        boot(&node)?;
        wait::until_ok(
            "the agent to gate kubelet and wait for containerd",
            Duration::from_secs(60),
            POLL,
            || {
                // The generator masks kubelet at boot, before the agent starts; the
                // agent is active (ready) once it has checked the gate itself.
                let e = node.unit_enablement("kubelet.service")?;
                ensure!(e == "masked-runtime", "kubelet is {e}");
                let a = node.unit_state(AGENT_UNIT)?;
                ensure!(a == "active", "the agent is {a}");
                Ok(())
            },
        )?;
        run("preuninstall", "1")?;
        ensure!(
            node.unit_state(AGENT_UNIT)? == "active",
            "%preun on upgrade stopped the agent"
        );
        run("preuninstall", "0")?;
        ensure!(
            node.unit_state(AGENT_UNIT)? == "inactive",
            "%preun left the agent running"
        );
        ensure!(
            node.unit_enablement(AGENT_UNIT)? == "disabled",
            "%preun left it enabled"
        );
        ensure!(
            !package::is_masked_link(&node, KUBELET_MASK)?,
            "kubelet still masked"
        );
        ensure!(node.unit_enablement("kubelet.service")? == "enabled");
        run("postuninstall", "0")?;
        package::ensure_absent(&node, "/var/lib/kube-join-agent")?;
        package::ensure_absent(&node, "/run/kube-join-agent")?;

        node.write_file(
            "/etc/systemd/system-preset/10-kja-test.preset",
            b"disable kube-join-agent.service\n",
            0o644,
        )?;
        // The payload comes first: the tmpfiles.d entry %post applies.
        node.copy_in(
            &paths::workspace_root().join("packaging/tmpfiles.d-kube-join-agent.conf"),
            TMPFILES_PATH,
            0o644,
        )?;
        run("postinstall", "1")?;
        ensure!(
            node.unit_enablement(AGENT_UNIT)? == "disabled",
            "%post enabled the agent against a preset"
        );
        ensure!(
            node.unit_state(AGENT_UNIT)? == "inactive",
            "%post started the agent"
        );
        ensure!(node.exists("/etc/kube-join-agent/config.d")?);
        let st = node.exec_ok(&["stat", "-c", "%a", "/var/lib/kube-join-agent"])?;
        ensure!(
            st.trim() == "700",
            "tmpfiles made /var/lib/kube-join-agent {st}"
        );
        Ok(())
    })());
}

/// The install tree: `packaging/install.sh`, the .deb and the .rpm install the same
/// files (the unit in each distribution's unit directory; Debian's copyright, changelog
/// and lintian overrides where the others have LICENSE), and lintian finds no error in
/// the .deb.
#[test]
fn install_tree_matches_packages_and_lintian_is_clean() {
    let deb = package::deb().unwrap_or_else(|e| panic!("{e:#}"));
    let rpm = package::rpm().unwrap_or_else(|e| panic!("{e:#}"));
    must((|| {
        let dest = tempdir("install-tree")?;
        let (tree, dirs) = package::install_tree(&dest)?;
        ensure!(
            dirs.iter().any(|d| d == "/etc/kube-join-agent/config.d"),
            "install.sh made no config.d: {dirs:?}"
        );
        let mode = std::fs::metadata(dest.join("usr/bin/kube-join-agent"))?;
        ensure!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777 == 0o755);
        std::fs::remove_dir_all(&dest)?;
        let tree: BTreeSet<String> = tree.into_iter().collect();

        let rpm_files: BTreeSet<String> = package::rpm_files(&rpm)?.into_iter().collect();
        ensure!(
            tree == rpm_files,
            "install.sh: {tree:?}\nrpm: {rpm_files:?}"
        );

        let debian_only = [
            "/usr/share/doc/kube-join-agent/copyright",
            "/usr/share/doc/kube-join-agent/changelog.Debian.gz",
            "/usr/share/lintian/overrides/kube-join-agent",
        ];
        let deb_files: BTreeSet<String> = package::deb_files(&deb)?
            .into_iter()
            .filter(|f| !debian_only.contains(&f.as_str()))
            .map(|f| match f.as_str() {
                DEB_UNIT_PATH => RPM_UNIT_PATH.to_string(),
                DEB_GENERATOR_PATH => RPM_GENERATOR_PATH.to_string(),
                _ => f,
            })
            .collect();
        let mut tree_deb = tree.clone();
        tree_deb.remove("/usr/share/doc/kube-join-agent/LICENSE");
        ensure!(
            tree_deb == deb_files,
            "install.sh: {tree_deb:?}\ndeb: {deb_files:?}"
        );

        let lintian = package::lintian(&deb)?;
        eprintln!("lintian:\n{}", lintian.stdout.trim_end());
        ensure!(
            lintian.success() && !lintian.stdout.lines().any(|l| l.starts_with("E:")),
            "lintian reports errors: {lintian}"
        );
        Ok(())
    })());
}

fn tempdir(what: &str) -> Result<std::path::PathBuf> {
    let dir = paths::target_dir()
        .join("tmp")
        .join(format!("kja-{what}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
