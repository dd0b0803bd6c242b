//! Reading configuration and secret files: each is opened once, without following a
//! symbolic link and without blocking (a FIFO named `*.toml` would otherwise hang the
//! agent for good), and checked on that same descriptor: a regular file, not larger
//! than it can sensibly be, and, for files that hold a secret, owned by the agent's user
//! and private. Checking a path and then opening it again would let the file change in
//! between.

use super::ConfigError;
use nix::fcntl::OFlag;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// A configuration fragment is a few KiB.
pub const FRAGMENT_LIMIT: u64 = 1 << 20;
/// A token (23 bytes) or a certificate key (64 hex digits), with room for a newline.
pub const SECRET_LIMIT: u64 = 4096;
/// A kubeconfig with its certificates.
pub const KUBECONFIG_LIMIT: u64 = 1 << 20;

/// The text of `path` and the metadata of the descriptor it was read from.
pub fn read(path: &Path, key: &str, limit: u64) -> Result<(String, Metadata), ConfigError> {
    let fail = |reason: String| ConfigError::new(Some(path), key, reason);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ELOOP as i32 => fail(
                "is a symbolic link: the agent reads only regular files here (put the content in place of the link)"
                    .into(),
            ),
            _ => fail(format!("cannot open: {e}")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(fail(
            "is not a regular file (a directory, FIFO, socket or device): the agent reads only regular files here".into(),
        ));
    }
    if meta.len() > limit {
        return Err(fail(format!(
            "is {} bytes, more than such a file can sensibly hold ({limit} bytes)",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may grow after the stat.
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(fail(format!("grew past {limit} bytes while it was read")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("is not UTF-8 text".into()))?;
    Ok((text, meta))
}

/// A file holding `what` (the bootstrap token, the certificate key, credentials) must
/// belong to the agent's user (root) and be readable by nobody else.
pub fn require_private(
    path: &Path,
    key: &str,
    meta: &Metadata,
    what: &str,
) -> Result<(), ConfigError> {
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(ConfigError::new(
            Some(path),
            key,
            format!(
                "holds {what} but is owned by uid {}, not {uid}: chown root:root {}",
                meta.uid(),
                path.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            Some(path),
            key,
            format!(
                "holds {what} but is readable by group or others (mode {mode:04o}): chmod 600 {}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// [`read`] a file that holds `what`, and require it private.
pub fn read_private(path: &Path, key: &str, limit: u64, what: &str) -> Result<String, ConfigError> {
    let (text, meta) = read(path, key, limit)?;
    require_private(path, key, &meta, what)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("50-join.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read(&path, "(file)", FRAGMENT_LIMIT).map(|_| ()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("reading a FIFO blocked");
        let e = result.unwrap_err();
        assert!(e.reason.contains("not a regular file"), "{e}");
    }

    #[test]
    fn symlinks_large_files_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.toml");
        std::fs::write(&target, "[join]\n").unwrap();
        let link = dir.path().join("50-link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read(&link, "(file)", FRAGMENT_LIMIT).unwrap_err();
        assert!(e.reason.contains("symbolic link"), "{e}");
        let big = dir.path().join("60-big.toml");
        std::fs::write(&big, vec![b'#'; 5000]).unwrap();
        let e = read(&big, "join.token_file", SECRET_LIMIT).unwrap_err();
        assert!(e.reason.contains("5000 bytes"), "{e}");
        let e = read(dir.path(), "(file)", FRAGMENT_LIMIT).unwrap_err();
        assert!(
            e.reason.contains("not a regular file") || e.reason.contains("cannot open"),
            "{e}"
        );
        assert_eq!(
            read(&target, "(file)", FRAGMENT_LIMIT).unwrap().0,
            "[join]\n"
        );
    }

    #[test]
    fn secrets_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abcdef.0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(
            &token,
            "join.token_file",
            SECRET_LIMIT,
            "the bootstrap token",
        )
        .unwrap_err();
        assert!(e.reason.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            read_private(
                &token,
                "join.token_file",
                SECRET_LIMIT,
                "the bootstrap token"
            )
            .is_ok()
        );
    }
}
