//! Nodes and CSRs: kept in memory, written to `DIR/nodes/<name>.json` and
//! `DIR/csrs/<name>.json` on every change (the harness reads those files), and loaded
//! back on start so a restarted fake behaves like an API server backed by etcd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::fsroot::write_atomic;
use crate::timefmt;

/// How long a heartbeat keeps a Node Ready: node-monitor-grace-period (40 s).
pub const NODE_GRACE: Duration = Duration::from_secs(40);
/// Where a Node's Ready deadline is recorded, so restarts and the harness can see it.
pub const READY_UNTIL_ANNOTATION: &str = "fake-apiserver.kja/ready-until-unix";

/// One Node.
#[derive(Debug, Clone)]
pub struct NodeRec {
    object: Value,
    created: String,
    uid: String,
    resource_version: u64,
    ready_since: SystemTime,
    ready_until: SystemTime,
    last_heartbeat: SystemTime,
}

impl NodeRec {
    /// Whether the Node reports Ready=True at `now`.
    pub fn ready_at(&self, now: SystemTime) -> bool {
        now < self.ready_until
    }

    /// The Node as the API serves it, with its Ready condition computed for `now`: True
    /// until the grace period after the last heartbeat ends, then Unknown, as the node
    /// lifecycle controller reports a Node whose kubelet stopped posting status.
    pub fn render(&self, name: &str, now: SystemTime) -> Value {
        let mut v = self.object.clone();
        v["kind"] = json!("Node");
        v["apiVersion"] = json!("v1");
        let meta = &mut v["metadata"];
        meta["name"] = json!(name);
        meta["uid"] = json!(self.uid);
        meta["resourceVersion"] = json!(self.resource_version.to_string());
        meta["creationTimestamp"] = json!(self.created);
        meta["annotations"][READY_UNTIL_ANNOTATION] =
            json!(format!("{:.3}", timefmt::unix_f64(self.ready_until)));
        let cond = if self.ready_at(now) {
            json!({"type": "Ready", "status": "True",
                   "lastHeartbeatTime": timefmt::k8s(self.last_heartbeat),
                   "lastTransitionTime": timefmt::k8s(self.ready_since),
                   "reason": "KubeletReady", "message": "kubelet is posting ready status"})
        } else {
            json!({"type": "Ready", "status": "Unknown",
                   "lastHeartbeatTime": timefmt::k8s(self.last_heartbeat),
                   "lastTransitionTime": timefmt::k8s(self.ready_until),
                   "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."})
        };
        if !v["spec"].is_object() {
            v["spec"] = json!({});
        }
        v["status"]["conditions"] = json!([cond]);
        v
    }
}

/// Keeps only the parts of a client-sent Node the fake stores (labels, annotations,
/// spec, and status minus conditions, which the fake computes).
fn sanitize_node(body: &Value) -> Value {
    let pick = |v: &Value| if v.is_object() { v.clone() } else { json!({}) };
    let mut status = pick(&body["status"]);
    if let Some(s) = status.as_object_mut() {
        s.remove("conditions");
    }
    json!({
        "metadata": {
            "labels": pick(&body["metadata"]["labels"]),
            "annotations": pick(&body["metadata"]["annotations"]),
        },
        "spec": pick(&body["spec"]),
        "status": status,
    })
}

/// RFC 7386 JSON merge patch (also good enough for the strategic merge patches kubelet
/// and kubeadm send for status and annotations).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch.as_object() {
        Some(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        None => *target = patch.clone(),
    }
}

/// All stored objects.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    nodes: BTreeMap<String, NodeRec>,
    csrs: BTreeMap<String, Value>,
    rv: u64,
}

fn read_dir_json(dir: &Path) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<Value>(&b)?))
        {
            Ok(v) => match v["metadata"]["name"].as_str() {
                Some(name) => out.push((name.to_owned(), v)),
                None => eprintln!(
                    "fake-apiserver: ignoring {}: no metadata.name",
                    path.display()
                ),
            },
            Err(e) => eprintln!("fake-apiserver: ignoring {}: {e:#}", path.display()),
        }
    }
    out
}

impl Store {
    /// Opens the store in `dir`, loading objects a previous run persisted.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["nodes", "csrs"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let now = SystemTime::now();
        let mut store = Self {
            dir: dir.to_owned(),
            nodes: BTreeMap::new(),
            csrs: BTreeMap::new(),
            rv: 1,
        };
        for (name, v) in read_dir_json(&dir.join("nodes")) {
            let until = v["metadata"]["annotations"][READY_UNTIL_ANNOTATION]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|f| f.is_finite() && *f > 0.0)
                .map(|f| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(f))
                .unwrap_or(now);
            let rec = NodeRec {
                object: sanitize_node(&v),
                created: v["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                uid: v["metadata"]["uid"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(super::objects::random_uid),
                resource_version: store.next_rv(),
                ready_since: now,
                ready_until: until,
                last_heartbeat: now,
            };
            store.nodes.insert(name, rec);
        }
        for (name, v) in read_dir_json(&dir.join("csrs")) {
            store.csrs.insert(name, v);
        }
        Ok(store)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn persist_node(&self, name: &str, now: SystemTime) -> Result<Value> {
        let rec = self.nodes.get(name).context("node vanished")?;
        let v = rec.render(name, now);
        let path = self.dir.join("nodes").join(format!("{name}.json"));
        write_atomic(&path, &serde_json::to_vec_pretty(&v)?, 0o644)?;
        Ok(v)
    }

    /// A Node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRec> {
        self.nodes.get(name)
    }

    /// All Nodes rendered for `now`.
    pub fn node_list(&self, now: SystemTime) -> Vec<Value> {
        self.nodes.iter().map(|(n, r)| r.render(n, now)).collect()
    }

    /// Creates a Node (kubelet registration: Ready for the grace period from now).
    /// `Ok(None)` means it already exists.
    pub fn create_node(
        &mut self,
        name: &str,
        body: &Value,
        now: SystemTime,
    ) -> Result<Option<Value>> {
        if self.nodes.contains_key(name) {
            return Ok(None);
        }
        self.insert_node(name, sanitize_node(body), now, now + NODE_GRACE);
        self.persist_node(name, now).map(Some)
    }

    fn insert_node(&mut self, name: &str, object: Value, now: SystemTime, ready_until: SystemTime) {
        let rec = NodeRec {
            object,
            created: timefmt::k8s(now),
            uid: super::objects::random_uid(),
            resource_version: self.next_rv(),
            ready_since: now,
            ready_until,
            last_heartbeat: now,
        };
        self.nodes.insert(name.to_owned(), rec);
    }

    /// Makes sure a knob Node exists; a Node that already exists is left alone.
    pub fn ensure_knob_node(
        &mut self,
        name: &str,
        ready_until: SystemTime,
        now: SystemTime,
    ) -> Result<()> {
        if self.nodes.contains_key(name) {
            return Ok(());
        }
        let object = json!({
            "metadata": {"labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                         "annotations": {}},
            "spec": {}, "status": {},
        });
        self.insert_node(name, object, now, ready_until);
        self.persist_node(name, now).map(|_| ())
    }

    /// A heartbeat (status update): Ready for the grace period from now. The body, if
    /// any, is merged into the stored status.
    pub fn heartbeat(
        &mut self,
        name: &str,
        patch: Option<&Value>,
        now: SystemTime,
    ) -> Result<Option<Value>> {
        let rv = self.next_rv();
        let Some(rec) = self.nodes.get_mut(name) else {
            return Ok(None);
        };
        if !rec.ready_at(now) {
            rec.ready_since = now;
        }
        rec.ready_until = now + NODE_GRACE;
        rec.last_heartbeat = now;
        rec.resource_version = rv;
        if let Some(p) = patch {
            let clean = sanitize_node(p);
            merge_patch(&mut rec.object["status"], &clean["status"]);
        }
        self.persist_node(name, now).map(Some)
    }

    /// Merges labels and annotations from a patch (kubeadm's cri-socket annotation).
    pub fn patch_node(
        &mut self,
        name: &str,
        patch: &Value,
        now: SystemTime,
    ) -> Result<Option<Value>> {
        let rv = self.next_rv();
        let Some(rec) = self.nodes.get_mut(name) else {
            return Ok(None);
        };
        let clean = sanitize_node(patch);
        merge_patch(&mut rec.object["metadata"], &clean["metadata"]);
        merge_patch(&mut rec.object["spec"], &clean["spec"]);
        rec.resource_version = rv;
        self.persist_node(name, now).map(Some)
    }

    /// Deletes a Node (and its file).
    pub fn delete_node(&mut self, name: &str) -> bool {
        let existed = self.nodes.remove(name).is_some();
        if existed {
            let _ = std::fs::remove_file(self.dir.join("nodes").join(format!("{name}.json")));
        }
        existed
    }

    /// A CSR by name.
    pub fn csr(&self, name: &str) -> Option<&Value> {
        self.csrs.get(name)
    }

    /// All CSRs.
    pub fn csr_list(&self) -> Vec<Value> {
        self.csrs.values().cloned().collect()
    }

    /// Stores (creates or replaces) a CSR, bumping its resourceVersion.
    pub fn put_csr(&mut self, name: &str, mut v: Value) -> Result<Value> {
        v["metadata"]["resourceVersion"] = json!(self.next_rv().to_string());
        let path = self.dir.join("csrs").join(format!("{name}.json"));
        write_atomic(&path, &serde_json::to_vec_pretty(&v)?, 0o644)?;
        self.csrs.insert(name.to_owned(), v.clone());
        Ok(v)
    }

    /// Deletes a CSR.
    pub fn delete_csr(&mut self, name: &str) -> bool {
        let existed = self.csrs.remove(name).is_some();
        if existed {
            let _ = std::fs::remove_file(self.dir.join("csrs").join(format!("{name}.json")));
        }
        existed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ready_window_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let t0 = SystemTime::now();
        let body = json!({"metadata": {"name": "n1", "labels": {"a": "b"}},
                          "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let v = s.create_node("n1", &body, t0).unwrap().unwrap();
        assert_eq!(v["status"]["conditions"][0]["status"], "True");
        assert!(s.create_node("n1", &body, t0).unwrap().is_none());
        let later = t0 + NODE_GRACE + Duration::from_secs(1);
        let v = s.node("n1").unwrap().render("n1", later);
        assert_eq!(v["status"]["conditions"][0]["status"], "Unknown");
        s.heartbeat("n1", None, later).unwrap().unwrap();
        assert!(s.node("n1").unwrap().ready_at(later));

        let file: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("nodes/n1.json")).unwrap())
                .unwrap();
        assert_eq!(file["metadata"]["labels"]["a"], "b");
        let reopened = Store::open(dir.path()).unwrap();
        assert!(reopened.node("n1").unwrap().ready_at(later));
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
