//! A test node: a systemd-nspawn container booting a cached Debian 12 root through an
//! overlayfs of its own, in a network namespace of its own, supervised from the host.
//!
//! Layout of a node directory (`<run dir>/<name>/`, see [`crate::paths::run_dir`]):
//! `upper/`, `work/` (overlayfs; `upper/` is the node's disk and survives reboots),
//! `merged/` (the mounted root), `console.log` (nspawn's output, all boots).
//!
//! Processes: nspawn runs in a session of its own (setsid) and in a cgroup sub-tree of
//! its own, `<own cgroup>/kja-e2e/<name>` in every systemd-relevant hierarchy (on this
//! hybrid host: the cgroup2 mount at /sys/fs/cgroup/unified and the name=systemd v1 mount);
//! nspawn itself moves into `supervisor/` there and puts the container into `payload/`.
//! Only processes started here are ever signalled, by PID.

use crate::cmd::{self, Output};
use crate::netns::Netns;
use crate::paths;
use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::{OFlag, open};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, setsid, write};
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// PATH inside the node for [`Node::exec`].
pub const NODE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How to make a node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Machine name, hostname and Kubernetes Node name: lowercase letters, digits, `-`.
    pub name: String,
    /// Parent of the node directory; default [`paths::run_dir`].
    pub run_dir: Option<PathBuf>,
    /// The read-only lower root; default the cached root from `tests/node/build-root.sh`.
    pub root: Option<PathBuf>,
    /// How long nspawn may take to exec the container's systemd.
    pub start_timeout: Duration,
    /// How long `wait_running` waits for `systemctl is-system-running --wait`.
    pub running_timeout: Duration,
    /// How long an orderly poweroff may take before the container's PID 1 gets SIGKILL.
    pub poweroff_timeout: Duration,
    /// Extra `systemd-nspawn` arguments (for example `--bind-ro=...`).
    pub extra_nspawn_args: Vec<String>,
    /// What a real kubelet needs from nspawn (the real-Kubernetes tier): see
    /// `crate::real::node_image::nspawn_args`.
    pub real_kubelet: bool,
}

impl NodeSpec {
    /// Defaults for a node called `name`.
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            run_dir: None,
            root: None,
            start_timeout: Duration::from_secs(30),
            running_timeout: Duration::from_secs(90),
            poweroff_timeout: Duration::from_secs(30),
            extra_nspawn_args: Vec::new(),
            real_kubelet: false,
        }
    }
}

/// Timings of one boot, measured from spawning nspawn.
#[derive(Debug, Clone, Default)]
pub struct BootTiming {
    /// Until the container's PID 1 was `systemd`.
    pub pid1_after: Option<Duration>,
    /// Until `systemctl is-system-running --wait` returned.
    pub running_after: Option<Duration>,
    /// The system state it returned (`running` or `degraded`).
    pub state: Option<String>,
    /// Duration of the poweroff that ended this boot.
    pub poweroff_took: Option<Duration>,
    /// True when the poweroff needed SIGKILL to the container's PID 1.
    pub killed: bool,
}

#[derive(Debug, Default)]
struct Running {
    nspawn: Option<Child>,
    leader: Option<i32>,
    started: Option<Instant>,
}

/// A test node. All methods take `&self` (the node can be shared with a helper thread);
/// dropping it powers it off and removes its mount, cgroups and network namespace, and
/// its directory unless the thread is panicking (a failed test: upper layer and console
/// log stay for inspection until the next run) or `KJA_E2E_KEEP_NODES` is set.
pub struct Node {
    name: String,
    dir: PathBuf,
    merged: PathBuf,
    lower: PathBuf,
    console: PathBuf,
    netns: Arc<Netns>,
    cgroups: Vec<PathBuf>,
    spec: NodeSpec,
    run: Mutex<Running>,
    boots: Mutex<Vec<BootTiming>>,
    failed_units: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Creates a node and boots it (no `wait_running`): [`Node::create`] + [`Node::start`].
    pub fn boot(spec: NodeSpec) -> Result<Node> {
        let node = Node::create(spec)?;
        node.start()?;
        Ok(node)
    }

    /// Prepares a fresh node without booting it: node directory (an earlier run's is
    /// removed), overlayfs mounted, network namespace created, and the first-boot files
    /// seeded (hostname, hosts, a machine-id unique to this node). Install files with
    /// [`Node::write_file`] or [`crate::install`], then [`Node::start`].
    pub fn create(spec: NodeSpec) -> Result<Node> {
        let name = spec.name.clone();
        if name.is_empty()
            || name.len() > 48
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("node name {name:?} must be 1-48 characters of a-z, 0-9 and -");
        }
        let lower = match &spec.root {
            Some(root) => root.clone(),
            None => paths::node_root()?,
        };
        let run_dir = spec.run_dir.clone().unwrap_or_else(paths::run_dir);
        let run_dir = if run_dir.is_absolute() {
            run_dir
        } else {
            std::env::current_dir()?.join(run_dir)
        };
        let dir = run_dir.join(&name);
        let merged = dir.join("merged");
        let cgroups = cgroup_dirs(&name)?;

        // Leftovers of an earlier run of this node: refuse if anything still runs there,
        // otherwise clear them away.
        for cg in &cgroups {
            let pids = cgroup_pids(cg);
            if !pids.is_empty() {
                let nspawn = cgroup_pids(&cg.join("supervisor"));
                bail!(
                    "node {name} from an earlier run still has processes in {} (PIDs {pids:?}); \
                     power it off first: kill -TERM {} (its systemd-nspawn)",
                    cg.display(),
                    nspawn
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            remove_cgroup_tree(cg, true);
        }
        if is_mountpoint(&merged) {
            unmount(&merged).with_context(|| format!("unmounting stale {}", merged.display()))?;
        }
        if is_mountpoint(&merged) {
            bail!("{} is still mounted", merged.display());
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| format!("mounting overlayfs on {} ({opts})", merged.display()))?;

        let netns = match Netns::create(&format!("kja-{name}")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = unmount(&merged);
                return Err(e);
            }
        };
        let node = Node {
            console: dir.join("console.log"),
            name,
            dir,
            merged,
            lower,
            netns,
            cgroups,
            spec,
            run: Mutex::new(Running::default()),
            boots: Mutex::new(Vec::new()),
            failed_units: Mutex::new(Vec::new()),
        };
        node.seed()?;
        Ok(node)
    }

    fn seed(&self) -> Result<()> {
        let name = &self.name;
        self.write_file("/etc/hostname", format!("{name}\n").as_bytes(), 0o644)?;
        self.write_file(
            "/etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            )
            .as_bytes(),
            0o644,
        )?;
        // A fixed id per node: stable across its reboots (one journal directory), unique
        // across nodes, and no ConditionFirstBoot (preset-all) surprises.
        let mut id = [0u8; 16];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id))
            .context("reading /dev/urandom")?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        self.write_file("/etc/machine-id", format!("{hex}\n").as_bytes(), 0o444)?;
        Ok(())
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The mounted root of the node, on the host.
    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// The read-only lower layer (the cached root).
    pub fn lower(&self) -> &Path {
        &self.lower
    }

    /// nspawn's output for all boots of this node.
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// The node's network namespace (share it with host processes such as the fake API server).
    pub fn netns(&self) -> &Arc<Netns> {
        &self.netns
    }

    /// The host PID of the container's systemd, while booted.
    pub fn leader(&self) -> Option<i32> {
        lock(&self.run).leader
    }

    /// The host PID of systemd-nspawn, while booted.
    pub fn nspawn_pid(&self) -> Option<u32> {
        lock(&self.run).nspawn.as_ref().map(|c| c.id())
    }

    /// True between a successful [`Node::start`] and the next poweroff.
    pub fn is_booted(&self) -> bool {
        self.leader().is_some()
    }

    /// Timings of every boot so far.
    pub fn boot_timings(&self) -> Vec<BootTiming> {
        lock(&self.boots).clone()
    }

    /// Units that had failed when `wait_running` last saw `degraded`.
    pub fn failed_units(&self) -> Vec<String> {
        lock(&self.failed_units).clone()
    }

    /// The systemd-nspawn command line used to boot this node.
    pub fn nspawn_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--directory".into(),
            self.merged.clone().into(),
            format!("--machine={}", self.name).into(),
            "--boot".into(),
            // No machined and no host bus here: run unregistered in our own cgroup.
            "--register=no".into(),
            "--keep-unit".into(),
            "--console=read-only".into(),
            format!("--network-namespace-path={}", self.netns.path().display()).into(),
            // The journal stays inside the node (never linked into the host's /var/log/journal).
            "--link-journal=no".into(),
        ];
        if self.spec.real_kubelet {
            args.extend(crate::real::node_image::nspawn_args());
        }
        args.extend(self.spec.extra_nspawn_args.iter().map(OsString::from));
        args
    }

    /// Boots the node: systemd-nspawn under setsid in this node's cgroup sub-tree, output
    /// appended to the console log; returns once the container's PID 1 is systemd.
    pub fn start(&self) -> Result<()> {
        let mut run = lock(&self.run);
        if run.nspawn.is_some() {
            bail!("node {} is already booted", self.name);
        }
        // nspawn makes supervisor/ and payload/ under the base; clear the previous boot's.
        let mut procs_fds: Vec<OwnedFd> = Vec::new();
        for cg in &self.cgroups {
            remove_cgroup_tree(cg, false);
            fs::create_dir_all(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
            let procs = cg.join("cgroup.procs");
            procs_fds.push(
                open(&procs, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                    .with_context(|| format!("opening {}", procs.display()))?,
            );
        }
        if self.spec.real_kubelet {
            crate::real::node_image::prepare_root(&self.merged)?;
        }
        let boot_no = lock(&self.boots).len() + 1;
        let mut console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console)
            .with_context(|| format!("opening {}", self.console.display()))?;
        writeln!(
            console,
            "\n===== kja-e2e: boot {boot_no} of node {} =====",
            self.name
        )?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(self.nspawn_args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        // SAFETY: only async-signal-safe calls (write(2) on fds opened before fork, setsid(2)).
        unsafe {
            cmd.pre_exec(move || {
                for fd in &procs_fds {
                    // "0" moves the writing process, that is this child, before it execs.
                    write(fd, b"0").map_err(std::io::Error::from)?;
                }
                setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let started = Instant::now();
        // Tied to this process: if it dies without powering the node off, nspawn gets
        // SIGTERM and powers it off in order.
        let mut child = cmd::spawn_tied(cmd, Signal::SIGTERM)?;
        let nspawn = child.id() as i32;
        let deadline = started + self.spec.start_timeout;
        let leader = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "systemd-nspawn for node {} exited with {status} during boot; console:\n{}",
                    self.name,
                    self.console_tail(30)
                );
            }
            if let Some(pid) = find_leader(nspawn) {
                break pid;
            }
            if Instant::now() >= deadline {
                run.nspawn = Some(child);
                drop(run);
                let _ = self.poweroff();
                bail!(
                    "node {}: no systemd PID 1 under nspawn (PID {nspawn}) after {:?}; console:\n{}",
                    self.name,
                    self.spec.start_timeout,
                    self.console_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        run.nspawn = Some(child);
        run.leader = Some(leader);
        run.started = Some(started);
        lock(&self.boots).push(BootTiming {
            pid1_after: Some(started.elapsed()),
            ..BootTiming::default()
        });
        Ok(())
    }

    /// Waits for `systemctl is-system-running --wait` inside. Accepts `running` and
    /// `degraded`; for `degraded` the failed units are recorded ([`Node::failed_units`])
    /// and printed. Returns the state.
    pub fn wait_running(&self) -> Result<String> {
        let started = lock(&self.run)
            .started
            .ok_or_else(|| anyhow!("node {} is not booted", self.name))?;
        let deadline = Instant::now() + self.spec.running_timeout;
        let state = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "node {} did not reach running within {:?}; console:\n{}",
                    self.name,
                    self.spec.running_timeout,
                    self.console_tail(30)
                );
            }
            match self.exec_timeout(&["systemctl", "is-system-running", "--wait"], left) {
                Ok(out) => {
                    let state = out.trimmed().to_string();
                    match state.as_str() {
                        "running" | "degraded" => break state,
                        // Not up far enough to answer yet (no bus, "offline", "unknown").
                        "" | "offline" | "unknown" | "initializing" | "starting" => {}
                        other => bail!(
                            "node {} is {other} instead of running; console:\n{}",
                            self.name,
                            self.console_tail(30)
                        ),
                    }
                }
                Err(e) if !self.is_booted() => return Err(e),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if state == "degraded" {
            let failed = self
                .systemctl(&["list-units", "--failed", "--no-legend", "--plain"])
                .map(|o| o.stdout)
                .unwrap_or_default();
            let units: Vec<String> = failed
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect();
            eprintln!(
                "kja-e2e: node {} is degraded; failed units: {units:?}",
                self.name
            );
            *lock(&self.failed_units) = units;
        }
        if let Some(b) = lock(&self.boots).last_mut() {
            b.running_after = Some(started.elapsed());
            b.state = Some(state.clone());
        }
        Ok(state)
    }

    /// Waits only until the node's systemd answers (`systemctl is-system-running` without
    /// `--wait` prints a state), for tests where boot may legitimately not finish yet (a
    /// Type=notify unit still starting). Returns that state.
    pub fn wait_systemd(&self) -> Result<String> {
        let deadline = Instant::now() + self.spec.running_timeout;
        loop {
            if let Ok(out) =
                self.exec_timeout(&["systemctl", "is-system-running"], Duration::from_secs(10))
            {
                let state = out.trimmed().to_string();
                if matches!(
                    state.as_str(),
                    "initializing" | "starting" | "running" | "degraded"
                ) {
                    return Ok(state);
                }
            }
            if !self.is_booted() || Instant::now() >= deadline {
                bail!(
                    "node {}: systemd did not answer within {:?}; console:\n{}",
                    self.name,
                    self.spec.running_timeout,
                    self.console_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn leader_or_err(&self) -> Result<i32> {
        self.leader()
            .ok_or_else(|| anyhow!("node {} is not booted", self.name))
    }

    /// Runs a command inside the node (all its namespaces, empty environment but PATH),
    /// with a 60 s deadline. A non-zero exit is not an error: check [`Output::status`].
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_timeout(argv, Duration::from_secs(60))
    }

    /// [`Node::exec`] with a deadline of your choice.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        self.exec_with(argv, None, timeout)
    }

    /// [`Node::exec`] feeding `stdin` to the command.
    pub fn exec_with(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output> {
        let leader = self.leader_or_err()?;
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(leader.to_string())
            .arg("-a")
            .arg("--")
            .arg("env")
            .arg("-i")
            .arg(format!("PATH={NODE_PATH}"))
            .args(argv);
        // Tied with SIGKILL: a stray nsenter outliving this process would, when the node
        // shuts down, mirror its child's SIGSTOP (from systemd-shutdown), stay stopped for
        // good and keep the node's shutdown waiting for the child's zombie.
        cmd::run_tied(cmd, stdin, timeout, Signal::SIGKILL)
            .with_context(|| format!("in node {}", self.name))
    }

    /// Like [`Node::exec`], but fails unless the command exits 0; returns its stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        Ok(self.exec(argv)?.ok()?.stdout)
    }

    /// `systemctl ARGS` inside the node.
    pub fn systemctl(&self, args: &[&str]) -> Result<Output> {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// `systemctl is-active UNIT`: `active`, `inactive`, `activating`, `failed`, ...
    pub fn unit_state(&self, unit: &str) -> Result<String> {
        Ok(self.systemctl(&["is-active", unit])?.trimmed().to_string())
    }

    /// `systemctl is-enabled UNIT`: `enabled`, `disabled`, `masked-runtime`, ...
    pub fn unit_enablement(&self, unit: &str) -> Result<String> {
        Ok(self.systemctl(&["is-enabled", unit])?.trimmed().to_string())
    }

    /// `journalctl ARGS` (always `--no-pager`): inside the node while booted, else on the
    /// host over the node's journal files (so artifacts can be saved after a poweroff).
    pub fn journalctl(&self, args: &[&str]) -> Result<String> {
        if self.is_booted() {
            let mut argv = vec!["journalctl", "--no-pager"];
            argv.extend_from_slice(args);
            let out = self.exec(&argv)?;
            if !out.success() && out.stdout.is_empty() {
                bail!("{out}");
            }
            Ok(out.stdout)
        } else {
            let dir = self.resolve("/var/log/journal")?;
            let mut cmd = Command::new("journalctl");
            cmd.arg("--no-pager").arg("--directory").arg(dir).args(args);
            Ok(cmd::run(&mut cmd, None, Duration::from_secs(60))?.stdout)
        }
    }

    /// This boot's journal (`journalctl -b -o short-precise [-u UNIT]`).
    pub fn journal(&self, unit: Option<&str>) -> Result<String> {
        let mut args = vec!["-b", "-o", "short-precise"];
        if let Some(unit) = unit {
            args.extend(["-u", unit]);
        }
        self.journalctl(&args)
    }

    /// This boot's journal with every field (`-o verbose`), e.g. to see `PHASE=`.
    pub fn journal_verbose(&self, unit: Option<&str>) -> Result<String> {
        let mut args = vec!["-b", "-o", "verbose"];
        if let Some(unit) = unit {
            args.extend(["-u", unit]);
        }
        self.journalctl(&args)
    }

    /// This boot's journal entries as JSON objects (`-o json`), oldest first.
    pub fn journal_entries(&self, unit: Option<&str>) -> Result<Vec<serde_json::Value>> {
        let mut args = vec!["-b", "-o", "json"];
        if let Some(unit) = unit {
            args.extend(["-u", unit]);
        }
        let text = self.journalctl(&args)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("journal line {l:?}")))
            .collect()
    }

    /// Maps an absolute path in the node to the host path in the merged tree, resolving
    /// symlinks as the node would (inside its root, never escaping to the host).
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        resolve_in_root(&self.merged, Path::new(path), true)
    }

    /// Paths that live on the node's own tmpfs/API mounts, invisible in the merged tree.
    fn is_volatile(path: &str) -> bool {
        ["/run", "/tmp", "/dev", "/proc", "/sys"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    }

    /// Reads a file of the node (from the merged tree, or by exec for /run, /tmp, ...).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        if Self::is_volatile(path) {
            let out = self.exec(&["cat", "--", path])?.ok()?;
            return Ok(out.raw_stdout);
        }
        let host = self.resolve(path)?;
        fs::read(&host).with_context(|| format!("reading {path} of node {}", self.name))
    }

    /// [`Node::read_file`] as UTF-8 (lossy).
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read_file(path)?).into_owned())
    }

    /// Whether a path exists in the node (symlinks followed).
    pub fn exists(&self, path: &str) -> Result<bool> {
        if Self::is_volatile(path) {
            return Ok(self.exec(&["test", "-e", path])?.success());
        }
        Ok(self.resolve(path)?.exists())
    }

    /// Writes a file into the node, root-owned with `mode`, creating parent directories
    /// (0755). Atomic (temporary file + rename) for files in the merged tree; works before
    /// boot, while booted and after poweroff. /run, /tmp etc. need a booted node.
    pub fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        if Self::is_volatile(path) {
            let script =
                format!("mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\" && chmod {mode:o} \"$1\"");
            self.exec_with(
                &["sh", "-c", &script, "sh", path],
                Some(contents),
                Duration::from_secs(30),
            )?
            .ok()?;
            return Ok(());
        }
        let host = self.resolve(path)?;
        let parent = host
            .parent()
            .ok_or_else(|| anyhow!("no parent for {path}"))?;
        create_dirs(parent)?;
        let tmp = parent.join(format!(
            ".{}.kja-tmp",
            host.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, &host).with_context(|| format!("renaming into {}", host.display()))?;
        Ok(())
    }

    /// Copies a host file into the node with `mode`.
    pub fn copy_in(&self, host_path: &Path, path: &str, mode: u32) -> Result<()> {
        let host = self.resolve(path)?;
        let parent = host
            .parent()
            .ok_or_else(|| anyhow!("no parent for {path}"))?;
        create_dirs(parent)?;
        let tmp = parent.join(format!(
            ".{}.kja-tmp",
            host.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::copy(host_path, &tmp)
            .with_context(|| format!("copying {} to {}", host_path.display(), tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, &host)?;
        Ok(())
    }

    /// Creates (or replaces) a symlink `path -> target` in the node's tree, for example to
    /// enable a unit in `/etc/systemd/system/multi-user.target.wants/`.
    pub fn symlink(&self, target: &str, path: &str) -> Result<()> {
        let host = resolve_in_root(&self.merged, Path::new(path), false)?;
        create_dirs(host.parent().unwrap_or(&self.merged))?;
        if host.symlink_metadata().is_ok() {
            fs::remove_file(&host)?;
        }
        symlink(target, &host).with_context(|| format!("symlinking {path} -> {target}"))
    }

    /// Removes a file or symlink from the node's tree (no error if absent).
    pub fn remove_file(&self, path: &str) -> Result<()> {
        let host = resolve_in_root(&self.merged, Path::new(path), false)?;
        match fs::remove_file(&host) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {path}")),
        }
    }

    /// Orderly poweroff: SIGTERM to nspawn (it asks the container's systemd to power off),
    /// waits for nspawn to exit; after the poweroff timeout, SIGKILL to the container's
    /// PID 1 (never to nspawn alone, which would orphan the container). No-op if not booted.
    pub fn poweroff(&self) -> Result<()> {
        self.poweroff_within(self.spec.poweroff_timeout)
    }

    /// [`Node::poweroff`] with its own grace period before SIGKILL to the container's PID 1
    /// (`Duration::ZERO` simulates pulling the plug).
    pub fn poweroff_within(&self, grace: Duration) -> Result<()> {
        let mut run = lock(&self.run);
        let Some(mut child) = run.nspawn.take() else {
            return Ok(());
        };
        let leader = run.leader.take();
        run.started = None;
        drop(run);
        let nspawn = Pid::from_raw(child.id() as i32);
        let t0 = Instant::now();
        let mut killed = false;
        let _ = kill(nspawn, Signal::SIGTERM);
        let mut exited = wait_child(&mut child, grace)?;
        if !exited {
            killed = true;
            let leader = leader.or_else(|| find_leader(nspawn.as_raw()));
            eprintln!(
                "kja-e2e: node {} did not power off within {grace:?}; SIGKILL to its PID 1 ({leader:?})",
                self.name
            );
            match leader {
                // Only if it is still nspawn's child: never a recycled PID.
                Some(pid) if parent_of(pid) == Some(nspawn.as_raw()) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    exited = wait_child(&mut child, Duration::from_secs(15))?;
                }
                _ => {}
            }
            if !exited
                && find_leader(nspawn.as_raw()).is_none()
                && children_of(nspawn.as_raw()).is_empty()
            {
                // No container left under it: nspawn alone is safe to kill now.
                let _ = kill(nspawn, Signal::SIGKILL);
                exited = wait_child(&mut child, Duration::from_secs(5))?;
            }
        }
        let took = t0.elapsed();
        if let Some(b) = lock(&self.boots).last_mut() {
            b.poweroff_took = Some(took);
            b.killed = killed;
        }
        if !exited {
            // Keep the handle so Drop can try again rather than losing track of it.
            lock(&self.run).nspawn = Some(child);
            bail!(
                "node {}: systemd-nspawn (PID {nspawn}) did not exit",
                self.name
            );
        }
        for cg in &self.cgroups {
            remove_cgroup_tree(cg, false);
        }
        Ok(())
    }

    /// Poweroff, then boot again from the same upper layer and network namespace (returns
    /// once the container's PID 1 is systemd; follow with `wait_running` or `wait_systemd`).
    pub fn reboot(&self) -> Result<()> {
        self.poweroff()?;
        self.start()
    }

    /// The last `n` lines of the console log.
    pub fn console_tail(&self, n: usize) -> String {
        let text = fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.poweroff() {
            eprintln!("kja-e2e: powering off node {}: {e:#}", self.name);
        }
        if self.nspawn_pid().is_some() {
            eprintln!(
                "kja-e2e: node {} still running; leaving its mount and cgroups in place",
                self.name
            );
            return;
        }
        if is_mountpoint(&self.merged)
            && let Err(e) = unmount(&self.merged)
        {
            eprintln!("kja-e2e: unmounting {}: {e:#}", self.merged.display());
        }
        for cg in &self.cgroups {
            remove_cgroup_tree(cg, true);
            // The shared kja-e2e parent goes when the last node leaves it.
            if let Some(parent) = cg.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        // The node's disk is a few hundred MB (binaries copied in): keep it only when a
        // test failed (or KJA_E2E_KEEP_NODES is set), and never while still mounted.
        let keep = std::thread::panicking() || std::env::var_os("KJA_E2E_KEEP_NODES").is_some();
        if !keep
            && !is_mountpoint(&self.merged)
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            eprintln!("kja-e2e: removing {}: {e}", self.dir.display());
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_dirs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Children of a process, from /proc/PID/task/PID/children.
fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The parent PID of a process (from /proc/PID/stat, after the parenthesized comm).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The container's PID 1: the child of nspawn whose comm is `systemd`.
fn find_leader(nspawn: i32) -> Option<i32> {
    children_of(nspawn).into_iter().find(|c| {
        fs::read_to_string(format!("/proc/{c}/comm"))
            .map(|s| s.trim() == "systemd")
            .unwrap_or(false)
    })
}

/// `<hierarchy mount><own cgroup>/kja-e2e/<name>` for every hierarchy systemd uses here:
/// the cgroup2 mount(s) and the name=systemd v1 mount.
fn cgroup_dirs(name: &str) -> Result<Vec<PathBuf>> {
    let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut dirs = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = pre.split_whitespace().nth(4).unwrap_or_default();
        let mut post = post.split_whitespace();
        let fstype = post.next().unwrap_or_default();
        let super_opts = post.nth(1).unwrap_or_default();
        let own_path = match fstype {
            "cgroup2" => own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(str::to_string),
            "cgroup" if super_opts.split(',').any(|o| o == "name=systemd") => own
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p.to_string())),
            _ => None,
        };
        if let Some(own_path) = own_path {
            let own_path = own_path.trim().trim_start_matches('/');
            let mut dir = PathBuf::from(mountpoint);
            if !own_path.is_empty() {
                dir.push(own_path);
            }
            dirs.push(dir.join("kja-e2e").join(name));
        }
    }
    if dirs.is_empty() {
        bail!("no cgroup2 or name=systemd hierarchy mounted: systemd-nspawn cannot run here");
    }
    Ok(dirs)
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return pids;
    };
    pids.extend(
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse::<i32>().ok()),
    );
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            pids.extend(cgroup_pids(&e.path()));
        }
    }
    pids
}

/// Removes the empty cgroups below `dir` (deepest first), and `dir` itself if `self_too`.
/// Cgroups that still hold processes stay (and are reported).
fn remove_cgroup_tree(dir: &Path, self_too: bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&e.path(), true);
        }
    }
    if self_too && let Err(e) = fs::remove_dir(dir) {
        eprintln!(
            "kja-e2e: could not remove cgroup {} ({e}); processes: {:?}",
            dir.display(),
            cgroup_pids(dir)
        );
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .map(|m| unescape_mount(m) == want)
            .unwrap_or(false)
    })
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn unmount(path: &Path) -> Result<()> {
    use nix::mount::{MntFlags, umount2};
    for _ in 0..20 {
        match umount2(path, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
        }
    }
    umount2(path, MntFlags::MNT_DETACH)
        .with_context(|| format!("lazily unmounting busy {}", path.display()))
}

/// Resolves `path` (absolute, as seen in the node) under `root`, following symlinks the
/// way the node would: absolute link targets restart at `root`, `..` never leaves it.
/// Missing components are kept verbatim. The last component is followed if `follow_last`.
pub fn resolve_in_root(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf> {
    let mut todo: Vec<OsString> = Vec::new();
    for c in path.components().rev() {
        match c {
            Component::Normal(s) => todo.push(s.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            _ => {}
        }
    }
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&cur);
        candidate.push(&c);
        let is_last = todo.is_empty();
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() && (follow_last || !is_last) => {
                hops += 1;
                if hops > 40 {
                    bail!("too many symlinks resolving {}", path.display());
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    cur.clear();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(s) => todo.push(s.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("kja-e2e-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/lib/systemd")).unwrap();
        symlink("usr/lib", dir.join("lib")).unwrap();
        symlink("/usr/lib/systemd", dir.join("abs")).unwrap();
        symlink("../../../../../etc/passwd", dir.join("escape")).unwrap();
        let r = |p: &str| resolve_in_root(&dir, Path::new(p), true).unwrap();
        assert_eq!(r("/lib/systemd/x"), dir.join("usr/lib/systemd/x"));
        assert_eq!(r("/abs/y"), dir.join("usr/lib/systemd/y"));
        assert_eq!(r("/escape"), dir.join("etc/passwd"));
        assert_eq!(
            resolve_in_root(&dir, Path::new("/lib"), false).unwrap(),
            dir.join("lib")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parent_pid_parses_stat() {
        assert_eq!(
            parent_of(std::process::id() as i32),
            Some(nix::unistd::getppid().as_raw())
        );
    }
}
