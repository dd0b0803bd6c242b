//! The fake API server, run on the host filesystem but inside a node's network namespace,
//! listening on 127.0.0.1:6443 (which the node sees as its API server).

use crate::netns::Netns;
use crate::paths;
use crate::wait;
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default knobs: the one bootstrap token the harness installs.
pub fn default_knobs() -> Value {
    json!({ "tokens": [ { "id": "abcdef", "secret": "0123456789abcdef" } ] })
}

/// A running `fake-apiserver`. Stopped (SIGTERM, then SIGKILL, by PID) on drop.
pub struct FakeControlPlane {
    dir: PathBuf,
    stdio_log: PathBuf,
    child: Mutex<Option<Child>>,
    knobs: Mutex<Value>,
    _netns: Arc<Netns>,
}

impl FakeControlPlane {
    /// Starts `fake-apiserver --listen 127.0.0.1:6443 --state-dir DIR` in `netns`, with
    /// [`default_knobs`] written first, and waits (30 s) for `DIR/ready`. `DIR` is emptied.
    pub fn start(netns: &Arc<Netns>, state_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::launch(netns, state_dir.into(), "127.0.0.1:6443", true, json!({}))
    }

    /// [`FakeControlPlane::start`] with `knobs` (over [`default_knobs`]) in place before
    /// the server reads them: no request ever sees the defaults.
    pub fn start_with(
        netns: &Arc<Netns>,
        state_dir: impl Into<PathBuf>,
        knobs: Value,
    ) -> Result<Self> {
        Self::launch(netns, state_dir.into(), "127.0.0.1:6443", true, knobs)
    }

    /// Starts it again on an existing `DIR`: same CA (so the same pin), same Nodes.
    pub fn restart(netns: &Arc<Netns>, state_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::launch(netns, state_dir.into(), "127.0.0.1:6443", false, json!({}))
    }

    /// [`FakeControlPlane::restart`] with `knobs` in place before the server reads them
    /// (a restart otherwise starts from the defaults: a deleted token would be back).
    pub fn restart_with(
        netns: &Arc<Netns>,
        state_dir: impl Into<PathBuf>,
        knobs: Value,
    ) -> Result<Self> {
        Self::launch(netns, state_dir.into(), "127.0.0.1:6443", false, knobs)
    }

    /// A fresh one listening on `listen` (a second server, or something squatting a port).
    pub fn start_on(
        netns: &Arc<Netns>,
        state_dir: impl Into<PathBuf>,
        listen: &str,
    ) -> Result<Self> {
        Self::launch(netns, state_dir.into(), listen, true, json!({}))
    }

    fn launch(
        netns: &Arc<Netns>,
        dir: PathBuf,
        listen: &str,
        fresh: bool,
        knobs: Value,
    ) -> Result<Self> {
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        let bin = paths::fake_bin("fake-apiserver");
        paths::require_file(&bin, "build the fakes first: cargo build -p kja-fakes")?;
        if fresh && dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let _ = fs::remove_file(dir.join("ready"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let stdio_log = dir.with_extension("stdio.log");
        let log = fs::File::create(&stdio_log)
            .with_context(|| format!("creating {}", stdio_log.display()))?;
        let cp = FakeControlPlane {
            dir: dir.clone(),
            stdio_log,
            child: Mutex::new(None),
            knobs: Mutex::new(Value::Null),
            _netns: netns.clone(),
        };
        cp.set_knobs(knobs)?;
        let mut cmd = netns.command(&bin)?;
        cmd.arg("--listen")
            .arg(listen)
            .arg("--state-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Dies with this process even if it never gets to drop us.
        let child = crate::cmd::spawn_tied(cmd, Signal::SIGTERM)?;
        *cp.child.lock().unwrap() = Some(child);
        wait::until_ok(
            "the fake API server's ready file",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                if let Some(status) = cp
                    .child
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    // Not retryable: make the wait end now with the reason.
                    return Ok(Err(anyhow!(
                        "fake-apiserver exited with {status}:\n{}",
                        cp.stdio()
                    )));
                }
                if dir.join("ready").exists() {
                    Ok(Ok(()))
                } else {
                    bail!("no {}/ready yet", dir.display())
                }
            },
        )??;
        Ok(cp)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// The CA pin, `sha256:<hex>` (DIR/ca.pin).
    pub fn pin(&self) -> Result<String> {
        let p = self.dir.join("ca.pin");
        Ok(fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }

    /// Writes DIR/knobs.json atomically: `knobs`' top-level keys over [`default_knobs`]
    /// (so the default token stays unless `tokens` is given).
    pub fn set_knobs(&self, knobs: Value) -> Result<()> {
        let mut merged = default_knobs();
        match knobs {
            Value::Object(map) => {
                let obj = merged.as_object_mut().expect("object");
                for (k, v) in map {
                    obj.insert(k, v);
                }
            }
            Value::Null => {}
            other => bail!("knobs must be a JSON object, not {other}"),
        }
        let path = self.dir.join("knobs.json");
        let tmp = self.dir.join(".knobs.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&merged)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        *self.knobs.lock().unwrap() = merged;
        Ok(())
    }

    /// The knobs last written.
    pub fn knobs(&self) -> Value {
        self.knobs.lock().unwrap().clone()
    }

    /// The Node object the server holds for `name` (DIR/nodes/<name>.json), if any.
    pub fn node(&self, name: &str) -> Option<Value> {
        let text = fs::read(self.dir.join("nodes").join(format!("{name}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// The Events the server holds in `namespace` (DIR/events/<namespace>/*.json).
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let Ok(entries) = fs::read_dir(self.dir.join("events").join(namespace)) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// The server's request log (DIR/requests.log).
    pub fn requests_log(&self) -> String {
        fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default()
    }

    /// The server's stdout and stderr.
    pub fn stdio(&self) -> String {
        fs::read_to_string(&self.stdio_log).unwrap_or_default()
    }

    /// Path of the file holding the server's stdout and stderr.
    pub fn stdio_log(&self) -> &Path {
        &self.stdio_log
    }

    /// Stops the server: SIGTERM, up to 5 s, then SIGKILL (by PID, only our child).
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(pid, Signal::SIGTERM);
        for _ in 0..250 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
