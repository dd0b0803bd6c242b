//! Nodes, CSRs and Events: kept in memory, written to `DIR/nodes/<name>.json`,
//! `DIR/csrs/<name>.json` and `DIR/events/<namespace>/<name>.json` on every change (the
//! harness reads those files), and loaded back on start so a restarted fake behaves like
//! an API server backed by etcd.

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
    /// Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
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
        for sub in ["nodes", "csrs", "events"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let now = SystemTime::now();
        let mut store = Self {
            dir: dir.to_owned(),
            nodes: BTreeMap::new(),
            csrs: BTreeMap::new(),
            events: BTreeMap::new(),
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
        if let Ok(namespaces) = std::fs::read_dir(dir.join("events")) {
            for ns in namespaces.flatten().filter(|e| e.path().is_dir()) {
                let namespace = ns.file_name().to_string_lossy().into_owned();
                for (name, v) in read_dir_json(&ns.path()) {
                    store.events.insert((namespace.clone(), name), v);
                }
            }
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

    /// Applies a JSON merge patch to the Node's labels, annotations and spec (kubeadm's
    /// cri-socket annotation, the agent's join record): a `null` value removes a key,
    /// `"annotations": null` removes them all, as RFC 7386 says and the API server does.
    /// Keys the patch does not name are left alone.
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
        let mut meta = serde_json::Map::new();
        for key in ["labels", "annotations"] {
            if let Some(v) = patch["metadata"].get(key) {
                meta.insert(key.to_owned(), v.clone());
            }
        }
        merge_patch(&mut rec.object["metadata"], &Value::Object(meta));
        for key in ["labels", "annotations"] {
            if !rec.object["metadata"][key].is_object() {
                rec.object["metadata"][key] = json!({});
            }
        }
        if let Some(spec) = patch.get("spec") {
            merge_patch(&mut rec.object["spec"], spec);
            if !rec.object["spec"].is_object() {
                rec.object["spec"] = json!({});
            }
        }
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

    /// An Event by namespace and name.
    pub fn event(&self, ns: &str, name: &str) -> Option<&Value> {
        self.events.get(&(ns.to_owned(), name.to_owned()))
    }

    /// Events of one namespace, or of all when `ns` is `None`, by namespace and name.
    pub fn event_list(&self, ns: Option<&str>) -> Vec<Value> {
        self.events
            .iter()
            .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates an Event (`Ok(None)`: one of that name exists), giving it a uid,
    /// resourceVersion and creationTimestamp.
    pub fn create_event(
        &mut self,
        ns: &str,
        name: &str,
        mut v: Value,
        now: SystemTime,
    ) -> Result<Option<Value>> {
        let key = (ns.to_owned(), name.to_owned());
        if self.events.contains_key(&key) {
            return Ok(None);
        }
        let rv = self.next_rv();
        let meta = &mut v["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(super::objects::random_uid());
        meta["resourceVersion"] = json!(rv.to_string());
        meta["creationTimestamp"] = json!(timefmt::k8s(now));
        let dir = self.dir.join("events").join(ns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(
            &dir.join(format!("{name}.json")),
            &serde_json::to_vec_pretty(&v)?,
            0o644,
        )?;
        self.events.insert(key, v.clone());
        Ok(Some(v))
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
    fn node_patches_merge_annotations_and_null_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let t0 = SystemTime::now();
        let body = json!({"metadata": {"name": "n1", "labels": {"a": "b"},
                                       "annotations": {"keep": "1", "drop": "2"}}});
        s.create_node("n1", &body, t0).unwrap().unwrap();
        let v = s
            .patch_node(
                "n1",
                &json!({"metadata": {"annotations": {"drop": null, "new": "3"}}}),
                t0,
            )
            .unwrap()
            .unwrap();
        let a = &v["metadata"]["annotations"];
        assert_eq!((&a["keep"], &a["new"]), (&json!("1"), &json!("3")));
        assert!(a.get("drop").is_none(), "{a}");
        assert_eq!(v["metadata"]["labels"], json!({"a": "b"}));
        // All annotations removed at once; the fake's own ready-until stays computed.
        let v = s
            .patch_node("n1", &json!({"metadata": {"annotations": null}}), t0)
            .unwrap()
            .unwrap();
        let keys: Vec<&String> = v["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, [READY_UNTIL_ANNOTATION]);
        assert!(s.patch_node("absent", &json!({}), t0).unwrap().is_none());
    }

    #[test]
    fn events_persist_per_namespace_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let t0 = SystemTime::now();
        let e = json!({"metadata": {"name": "n1.x"}, "reason": "Joined"});
        let v = s
            .create_event("default", "n1.x", e.clone(), t0)
            .unwrap()
            .unwrap();
        assert_eq!(v["metadata"]["namespace"], "default");
        assert!(v["metadata"]["uid"].is_string());
        assert!(
            s.create_event("default", "n1.x", e.clone(), t0)
                .unwrap()
                .is_none()
        );
        s.create_event("kube-system", "n1.x", e, t0)
            .unwrap()
            .unwrap();
        assert!(dir.path().join("events/default/n1.x.json").exists());
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.event_list(None).len(), 2);
        assert_eq!(reopened.event_list(Some("default")).len(), 1);
        assert_eq!(
            reopened.event("default", "n1.x").unwrap()["reason"],
            "Joined"
        );
    }

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
