//! The built packages (`bash packaging/build.sh` writes them to `<target>/packages/`),
//! installed into test nodes as users install them: `dpkg -i` inside a booted node,
//! `dpkg --root` into a node's tree before its first boot (as image builders do),
//! `apt-get remove`/`purge`; the .rpm queried and unpacked with rpm(8) on the host.
//! Also the packaging-neutral install tree (`packaging/install.sh`), the cloud-init
//! example (`config/cloud-init/user-data.yaml`) and a NoCloud seed for it.

use crate::cmd::{self, Output};
use crate::node::Node;
use crate::paths;
use anyhow::{Context, Result, anyhow, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the .deb is put inside a node before `dpkg -i`.
pub const NODE_DEB_PATH: &str = "/var/cache/kja-e2e/kube-join-agent.deb";
/// The agent's unit as the .deb installs it.
pub const DEB_UNIT_PATH: &str = "/lib/systemd/system/kube-join-agent.service";
/// The agent's unit as the .rpm installs it.
pub const RPM_UNIT_PATH: &str = "/usr/lib/systemd/system/kube-join-agent.service";
/// The generator, as the .deb installs it (beside the unit).
pub const DEB_GENERATOR_PATH: &str = "/lib/systemd/system-generators/kube-join-agent-generator";
/// The generator, as the .rpm and install.sh install it.
pub const RPM_GENERATOR_PATH: &str = "/usr/lib/systemd/system-generators/kube-join-agent-generator";
/// The shipped defaults, in both packages.
pub const DEFAULTS_PATH: &str = "/usr/lib/kube-join-agent/config.d/10-defaults.toml";
/// The tmpfiles.d entry, in both packages.
pub const TMPFILES_PATH: &str = "/usr/lib/tmpfiles.d/kube-join-agent.conf";
/// The man page, in both packages.
pub const MAN_PATH: &str = "/usr/share/man/man8/kube-join-agent.8.gz";
/// The cloud-init example, relative to the workspace.
pub const USER_DATA_EXAMPLE: &str = "config/cloud-init/user-data.yaml";
/// NoCloud's seed directory in a node.
pub const NOCLOUD_SEED_DIR: &str = "/var/lib/cloud/seed/nocloud";

const BUILD_HINT: &str = "build the packages first: bash packaging/build.sh";
const SLOW: Duration = Duration::from_secs(180);

/// `<target>/packages/`.
pub fn packages_dir() -> PathBuf {
    paths::target_dir().join("packages")
}

fn only_one(ext: &str) -> Result<PathBuf> {
    let dir = packages_dir();
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} ({BUILD_HINT})", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no .{ext} in {}: {BUILD_HINT}", dir.display()),
        many => bail!("more than one .{ext} in {}: {many:?}", dir.display()),
    }
}

/// The one .deb in [`packages_dir`].
pub fn deb() -> Result<PathBuf> {
    only_one("deb")
}

/// The one .rpm in [`packages_dir`].
pub fn rpm() -> Result<PathBuf> {
    only_one("rpm")
}

/// Runs a host program (`SLOW` deadline); the output whatever the exit status.
pub fn host(program: &str, args: &[&str]) -> Result<Output> {
    cmd::run(Command::new(program).args(args), None, SLOW)
}

/// Runs a command inside a booted node with `DEBIAN_FRONTEND=noninteractive`; fails
/// unless it exits 0.
pub fn node_run(node: &Node, argv: &[&str]) -> Result<Output> {
    let mut full = vec!["env", "DEBIAN_FRONTEND=noninteractive"];
    full.extend_from_slice(argv);
    node.exec_timeout(&full, SLOW)?.ok()
}

/// Copies the .deb into the booted node and runs `dpkg -i` there: the maintainer
/// scripts meet the node's running systemd.
pub fn dpkg_install(node: &Node, deb: &Path) -> Result<Output> {
    node.copy_in(deb, NODE_DEB_PATH, 0o644)?;
    node_run(node, &["dpkg", "-i", NODE_DEB_PATH]).context("dpkg -i in the node")
}

/// Installs the .deb into a node that is not booted, from the host with
/// `dpkg --root` (maintainer scripts run chrooted, without a running systemd), the way
/// an image is built.
pub fn dpkg_install_offline(node: &Node, deb: &Path) -> Result<Output> {
    ensure!(
        !node.is_booted(),
        "node {} is booted; use dpkg_install",
        node.name()
    );
    let root = node.merged().to_string_lossy().into_owned();
    let deb = deb.to_string_lossy().into_owned();
    host("dpkg", &["--root", &root, "--force-not-root", "-i", &deb])?
        .ok()
        .context("dpkg --root -i into the node's tree")
}

/// `rpm ARGS` on the host, failing unless it exits 0; its stdout.
pub fn rpm_query(args: &[&str]) -> Result<String> {
    Ok(host("rpm", args)?.ok()?.stdout)
}

/// The package's scriptlets from `rpm -qp --scripts`, by rpm's name for them
/// (`postinstall`, `preuninstall`, `postuninstall`, ...), bodies verbatim.
pub fn rpm_scriptlets(rpm: &Path) -> Result<BTreeMap<String, String>> {
    let text = rpm_query(&["-qp", "--scripts", &rpm.to_string_lossy()])?;
    Ok(parse_scriptlets(&text))
}

fn parse_scriptlets(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        // Headers read "postinstall scriptlet (using /bin/sh):" (or without the part in
        // parentheses when no interpreter is recorded).
        let header = line
            .strip_suffix(':')
            .and_then(|h| h.split_once(" scriptlet"))
            .filter(|(name, _)| !name.is_empty() && !name.contains(' '))
            .map(|(name, _)| name.to_string());
        match header {
            Some(name) => {
                out.insert(name.clone(), String::new());
                current = Some(name);
            }
            None => {
                if let Some(name) = &current {
                    let body = out.get_mut(name).expect("inserted");
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// Regular files and symlinks of the .deb (`dpkg-deb -c`), absolute, sorted.
pub fn deb_files(deb: &Path) -> Result<Vec<String>> {
    let out = host("dpkg-deb", &["-c", &deb.to_string_lossy()])?.ok()?;
    let mut files: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    files.sort();
    Ok(files)
}

/// Paths of the .rpm (`rpm -qpl`), sorted.
pub fn rpm_files(rpm: &Path) -> Result<Vec<String>> {
    let mut files: Vec<String> = rpm_query(&["-qpl", &rpm.to_string_lossy()])?
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    Ok(files)
}

/// Runs `packaging/install.sh` into `destdir` with the built binary and man page;
/// returns the files it installed (absolute, as on a node, sorted) and the directories.
pub fn install_tree(destdir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let script = paths::workspace_root().join("packaging/install.sh");
    let release = paths::target_dir().join("release");
    let bin = release.join("kube-join-agent");
    let man = release.join("man/kube-join-agent.8.gz");
    paths::require_file(&bin, BUILD_HINT)?;
    paths::require_file(&man, BUILD_HINT)?;
    let out = host(
        "bash",
        &[
            &script.to_string_lossy(),
            "--bin",
            &bin.to_string_lossy(),
            "--man",
            &man.to_string_lossy(),
            &destdir.to_string_lossy(),
        ],
    )?;
    out.ok()?;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(destdir, destdir, &mut files, &mut dirs)?;
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

fn walk(base: &Path, dir: &Path, files: &mut Vec<String>, dirs: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = format!("/{}", path.strip_prefix(base)?.display());
        if path.is_dir() {
            dirs.push(rel);
            walk(base, &path, files, dirs)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

/// `lintian --fail-on error` on the .deb (as root, which lintian grumbles about on
/// stderr). Overridden tags are not shown: `--show-overrides` makes lintian exit 2.
pub fn lintian(deb: &Path) -> Result<Output> {
    host(
        "lintian",
        &[
            "--fail-on",
            "error",
            "--display-info",
            &deb.to_string_lossy(),
        ],
    )
}

/// The cloud-init example with the three documented values replaced: the endpoint
/// (`10.0.0.10:6443`), the token (`abcdef.0123456789abcdef`) and the pin (the all-zero
/// sha256). Each must occur exactly once, so a changed example fails loudly here.
pub fn user_data_for(api_server: &str, token: &str, pin: &str) -> Result<String> {
    let path = paths::workspace_root().join(USER_DATA_EXAMPLE);
    let example =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    substitute_user_data(&example, api_server, token, pin)
}

fn substitute_user_data(example: &str, api_server: &str, token: &str, pin: &str) -> Result<String> {
    let zero_pin = format!("sha256:{}", "0".repeat(64));
    let mut text = example.to_string();
    for (from, to) in [
        ("10.0.0.10:6443", api_server),
        ("abcdef.0123456789abcdef", token),
        (zero_pin.as_str(), pin),
    ] {
        let n = text.matches(from).count();
        ensure!(
            n == 1,
            "{USER_DATA_EXAMPLE}: expected {from:?} exactly once, found it {n} times"
        );
        text = text.replace(from, to);
    }
    ensure!(
        text.starts_with("#cloud-config\n"),
        "{USER_DATA_EXAMPLE} must start with #cloud-config"
    );
    Ok(text)
}

/// Writes a NoCloud seed (`meta-data` with `instance_id`, `user-data`) into the node's
/// tree, where cloud-init finds it on boot.
pub fn write_nocloud_seed(node: &Node, instance_id: &str, user_data: &str) -> Result<()> {
    node.write_file(
        &format!("{NOCLOUD_SEED_DIR}/meta-data"),
        format!(
            "instance-id: {instance_id}\nlocal-hostname: {}\n",
            node.name()
        )
        .as_bytes(),
        0o600,
    )?;
    node.write_file(
        &format!("{NOCLOUD_SEED_DIR}/user-data"),
        user_data.as_bytes(),
        0o600,
    )
}

/// One entry of `journalctl -o verbose`: its fields (the first value of each).
pub type VerboseEntry = BTreeMap<String, String>;

/// Parses `journalctl -o verbose` output: an entry is a header line (timestamp and
/// cursor) followed by indented `FIELD=value` lines.
pub fn parse_verbose(text: &str) -> Vec<VerboseEntry> {
    let mut entries: Vec<VerboseEntry> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with("-- ") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            entries.push(VerboseEntry::new());
            continue;
        }
        let Some(entry) = entries.last_mut() else {
            continue;
        };
        if let Some((k, v)) = line.trim_start().split_once('=')
            && !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            entry.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
    entries
}

/// Whether `path` in the booted node is a symlink to `/dev/null` (a mask).
pub fn is_masked_link(node: &Node, path: &str) -> Result<bool> {
    let out = node.exec(&["readlink", path])?;
    Ok(out.success() && out.trimmed() == "/dev/null")
}

/// Fails, showing what is there, when `path` exists in the booted node.
pub fn ensure_absent(node: &Node, path: &str) -> Result<()> {
    let out = node.exec(&["ls", "-la", "--", path])?;
    if out.success() {
        return Err(anyhow!(
            "{path} still exists in node {}:\n{}",
            node.name(),
            out.stdout
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scriptlets_are_split_by_header() {
        let text = "postinstall scriptlet (using /bin/sh):\n# a\nmkdir -p /x\n\
                    preuninstall scriptlet (using /bin/sh):\nif [ \"$1\" -eq 0 ]; then :; fi\n";
        let s = parse_scriptlets(text);
        assert_eq!(s["postinstall"], "# a\nmkdir -p /x\n");
        assert_eq!(s["preuninstall"], "if [ \"$1\" -eq 0 ]; then :; fi\n");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn verbose_entries_keep_their_fields() {
        let text = "Sat 2026-11-21 01:00:00.000000 UTC [s=abc;i=1]\n    PRIORITY=6\n    \
                    MESSAGE=phase preflight: checking the host\n    PHASE=preflight\n    ATTEMPT=1\n\
                    Sat 2026-11-21 01:00:01.000000 UTC [s=abc;i=2]\n    MESSAGE=other\n";
        let e = parse_verbose(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0]["PHASE"], "preflight");
        assert_eq!(e[0]["ATTEMPT"], "1");
        assert_eq!(e[0]["MESSAGE"], "phase preflight: checking the host");
        assert!(!e[1].contains_key("PHASE"));
    }

    #[test]
    fn user_data_substitution_needs_each_value_once() {
        let example = format!(
            "#cloud-config\napi_server = \"10.0.0.10:6443\"\nabcdef.0123456789abcdef\n\"sha256:{}\"\n",
            "0".repeat(64)
        );
        let out = substitute_user_data(&example, "127.0.0.1:6443", "tok.en", "sha256:ff").unwrap();
        assert!(out.contains("\"127.0.0.1:6443\"") && out.contains("tok.en\n"));
        assert!(out.contains("\"sha256:ff\""));
        assert!(substitute_user_data("#cloud-config\n", "a", "b", "c").is_err());
    }
}
