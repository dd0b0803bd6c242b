//! Members as the agent reasons about them: who is a voter, who is a learner, which
//! learner never started (a leftover of an earlier attempt), and which one is ours.

use super::proto;
use std::fmt;
use std::net::IpAddr;

/// An etcd member ID. Shown in hex, as `etcdctl member list` prints it and
/// `etcdctl member remove` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its ID.
    pub id: MemberId,
    /// Its name; empty until the member's etcd has started and published it.
    pub name: String,
    /// Peer URLs (`https://10.0.0.11:2380`).
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until the member has started.
    pub client_urls: Vec<String>,
    /// A raft learner (non-voting).
    pub is_learner: bool,
}

impl From<proto::Member> for Member {
    fn from(m: proto::Member) -> Self {
        Self {
            id: MemberId(m.id),
            name: m.name,
            peer_urls: m.peer_ur_ls,
            client_urls: m.client_ur_ls,
            is_learner: m.is_learner,
        }
    }
}

impl Member {
    /// A learner that never started: etcd publishes a member's name and client URLs
    /// when its process first starts, so a learner with neither was added (by a
    /// `kubeadm join` that then failed) but its etcd never ran. etcd 3.4 allows one
    /// learner at a time, so such a leftover blocks every later control-plane join with
    /// "too many learner members in cluster".
    pub fn is_unstarted_learner(&self) -> bool {
        self.is_learner && self.name.is_empty() && self.client_urls.is_empty()
    }

    /// Whether one of its peer URLs is `peer_url` (compared as kubeadm does, on the
    /// URL text, after normalizing case and a trailing slash).
    pub fn has_peer_url(&self, peer_url: &str) -> bool {
        self.peer_urls.iter().any(|u| same_url(u, peer_url))
    }

    /// How operators recognize it: `cp1 (id 8e9e05c52164694d, https://10.0.0.1:2380)`.
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            "unnamed member"
        } else {
            &self.name
        };
        let role = if self.is_learner { ", learner" } else { "" };
        format!(
            "{name} (id {}{role}, peer {})",
            self.id,
            self.peer_urls.join(",")
        )
    }
}

/// URL equality good enough for etcd's own URLs (scheme and host are case-insensitive).
fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// kubeadm's `GetPeerURL`: `https://<advertise address>:2380` (IPv6 in brackets).
pub fn peer_url(advertise: IpAddr) -> String {
    url_for(advertise, 2380)
}

/// kubeadm's `GetClientURLByIP`: `https://<address>:2379`.
pub fn client_url(address: IpAddr) -> String {
    url_for(address, 2379)
}

fn url_for(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

/// `host` and `port` of an `https://host:port` URL (IPv6 without brackets); `None` for
/// anything else.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6.split_once("]:")?;
        (host, port)
    } else {
        let (host, port) = authority.rsplit_once(':')?;
        (host, port)
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The learners that never started, other than this node's own (which the agent
/// handles itself: it is the same member kubeadm would add again).
pub fn stale_learners<'a>(members: &'a [Member], own_peer_url: &str) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| m.is_unstarted_learner() && !m.has_peer_url(own_peer_url))
        .collect()
}

/// This node's member, matched by its peer URL (what kubeadm matches on).
pub fn own_member<'a>(members: &'a [Member], own_peer_url: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.has_peer_url(own_peer_url))
}

/// The TLS files an operator passes to etcdctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdctlTls {
    /// `--cacert`.
    pub ca: String,
    /// `--cert`.
    pub cert: String,
    /// `--key`.
    pub key: String,
}

/// The exact command that removes `member`, for the operator to run on this node.
pub fn removal_command(endpoint: &str, tls: &EtcdctlTls, member: &Member) -> String {
    format!(
        "ETCDCTL_API=3 etcdctl --endpoints {endpoint} --cacert {} --cert {} --key {} member remove {}",
        tls.ca, tls.cert, tls.key, member.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, peer: &str, client: &str, learner: bool) -> Member {
        Member {
            id: MemberId(id),
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: if client.is_empty() {
                vec![]
            } else {
                vec![client.into()]
            },
            is_learner: learner,
        }
    }

    #[test]
    fn ids_print_in_etcdctl_hex() {
        assert_eq!(MemberId(0x8e9e05c52164694d).to_string(), "8e9e05c52164694d");
        assert_eq!(MemberId(0xabc).to_string(), "abc");
    }

    #[test]
    fn only_unstarted_learners_are_stale() {
        let own = "https://10.0.0.12:2380";
        let members = vec![
            member(
                1,
                "cp1",
                "https://10.0.0.11:2380",
                "https://10.0.0.11:2379",
                false,
            ),
            // Added by a failed join, never started: stale.
            member(2, "", "https://10.0.0.13:2380", "", true),
            // A learner that is running (catching up): not stale.
            member(
                3,
                "cp4",
                "https://10.0.0.14:2380",
                "https://10.0.0.14:2379",
                true,
            ),
            // Our own leftover learner: handled separately.
            member(4, "", own, "", true),
            // A voter that has not published its attributes yet (no quorum): not a learner.
            member(5, "", "https://10.0.0.15:2380", "", false),
        ];
        let stale: Vec<_> = stale_learners(&members, own).iter().map(|m| m.id).collect();
        assert_eq!(stale, vec![MemberId(2)]);
        assert_eq!(own_member(&members, own).map(|m| m.id), Some(MemberId(4)));
        assert_eq!(
            own_member(&members, "HTTPS://10.0.0.12:2380/").map(|m| m.id),
            Some(MemberId(4))
        );
        assert!(own_member(&members, "https://10.0.0.12:2381").is_none());
    }

    #[test]
    fn urls_like_kubeadm() {
        assert_eq!(
            peer_url("10.0.0.12".parse().unwrap()),
            "https://10.0.0.12:2380"
        );
        assert_eq!(
            peer_url("fd00::12".parse().unwrap()),
            "https://[fd00::12]:2380"
        );
        assert_eq!(
            client_url("10.0.0.12".parse().unwrap()),
            "https://10.0.0.12:2379"
        );
        assert_eq!(
            host_port("https://[fd00::12]:2380"),
            Some(("fd00::12".into(), 2380))
        );
        assert_eq!(
            host_port("https://cp1.example:2380/"),
            Some(("cp1.example".into(), 2380))
        );
        assert_eq!(host_port("unix:///x"), None);
        assert_eq!(host_port("https://:2380"), None);
    }

    #[test]
    fn removal_command_names_files_and_hex_id() {
        let tls = EtcdctlTls {
            ca: "/etc/kubernetes/pki/etcd/ca.crt".into(),
            cert: "/etc/kubernetes/pki/apiserver-etcd-client.crt".into(),
            key: "/etc/kubernetes/pki/apiserver-etcd-client.key".into(),
        };
        let m = member(0x1f2e, "", "https://10.0.0.13:2380", "", true);
        assert_eq!(
            removal_command("https://10.0.0.11:2379", &tls, &m),
            "ETCDCTL_API=3 etcdctl --endpoints https://10.0.0.11:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/apiserver-etcd-client.crt --key /etc/kubernetes/pki/apiserver-etcd-client.key member remove 1f2e"
        );
        assert_eq!(
            m.describe(),
            "unnamed member (id 1f2e, learner, peer https://10.0.0.13:2380)"
        );
    }
}
