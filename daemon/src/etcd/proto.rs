//! The subset of etcd's `etcdserverpb` (api/etcdserverpb/rpc.proto) the agent needs:
//! `Cluster.MemberList/MemberAdd/MemberRemove/MemberPromote` and `Maintenance.Status`.
//!
//! Hand-written prost structs with upstream's field numbers: a wire-compatible subset,
//! so no protoc is needed at build time (the same approach as cri.rs). Fields the agent
//! does not use are left out; prost skips them when decoding.

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// ID of the cluster which sent the response.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// ID of the member which sent the response.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// Key-value store revision.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// Raft term.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.Member`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    /// Member ID.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Human-readable name; empty until the member has started.
    #[prost(string, tag = "2")]
    pub name: String,
    /// URLs the member uses to talk to its peers.
    #[prost(string, repeated, tag = "3")]
    pub peer_urls: Vec<String>,
    /// URLs clients use; empty until the member has started.
    #[prost(string, repeated, tag = "4")]
    pub client_urls: Vec<String>,
    /// Raft learner (non-voting), etcd 3.4 and later.
    #[prost(bool, tag = "5")]
    pub is_learner: bool,
}

/// `etcdserverpb.MemberListRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListRequest {
    /// Linearizable list (etcd 3.5+; ignored by 3.4).
    #[prost(bool, tag = "1")]
    pub linearizable: bool,
}

/// `etcdserverpb.MemberListResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// All members.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

/// `etcdserverpb.MemberAddRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberAddRequest {
    /// Peer URLs of the new member.
    #[prost(string, repeated, tag = "1")]
    pub peer_urls: Vec<String>,
    /// Add as a raft learner.
    #[prost(bool, tag = "2")]
    pub is_learner: bool,
}

/// `etcdserverpb.MemberAddResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberAddResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The added member.
    #[prost(message, optional, tag = "2")]
    pub member: Option<Member>,
    /// All members after the addition.
    #[prost(message, repeated, tag = "3")]
    pub members: Vec<Member>,
}

/// `etcdserverpb.MemberRemoveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveRequest {
    /// Member to remove.
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// `etcdserverpb.MemberRemoveResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// All members after the removal.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

/// `etcdserverpb.MemberPromoteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberPromoteRequest {
    /// Learner to promote.
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// `etcdserverpb.MemberPromoteResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberPromoteResponse {
    /// Header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// All members after the promotion.
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

/// `etcdserverpb.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `etcdserverpb.StatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// Header (`member_id` says who answered).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// Cluster protocol version of the responding member.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Backend database size.
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    /// The member the responder believes is leader; 0 for none.
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    /// Raft committed index.
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    /// Raft term.
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
    /// Raft applied index (etcd 3.4+).
    #[prost(uint64, tag = "7")]
    pub raft_applied_index: u64,
    /// Alarm and health errors (etcd 3.4+).
    #[prost(string, repeated, tag = "8")]
    pub errors: Vec<String>,
    /// Database size in use (etcd 3.4+).
    #[prost(int64, tag = "9")]
    pub db_size_in_use: i64,
    /// The responder is a learner (etcd 3.4+).
    #[prost(bool, tag = "10")]
    pub is_learner: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn member_wire_format_matches_rpc_proto() {
        // Member{ID:0x8e9e05c52164694d, name:"cp1", peerURLs:["https://10.0.0.1:2380"],
        // isLearner:true}, encoded by hand from rpc.proto's field numbers.
        let m = Member {
            id: 0x8e9e05c52164694d,
            name: "cp1".into(),
            peer_urls: vec!["https://10.0.0.1:2380".into()],
            client_urls: vec![],
            is_learner: true,
        };
        let bytes = m.encode_to_vec();
        assert_eq!(bytes[0], 0x08, "field 1 varint (ID)");
        let name_at = bytes.iter().position(|b| *b == 0x12).unwrap();
        assert_eq!(&bytes[name_at..name_at + 5], &[0x12, 3, b'c', b'p', b'1']);
        assert_eq!(
            bytes[bytes.len() - 2..],
            [0x28, 0x01],
            "field 5 bool (isLearner)"
        );
        assert_eq!(Member::decode(bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn status_skips_newer_fields() {
        let s = StatusResponse {
            leader: 7,
            raft_applied_index: 42,
            is_learner: true,
            ..Default::default()
        };
        let mut bytes = s.encode_to_vec();
        // storageVersion (11, etcd 3.6) and dbSizeQuota (12): unknown here, skipped.
        bytes.extend_from_slice(&[0x5a, 0x03, b'3', b'.', b'6', 0x60, 0x01]);
        let back = StatusResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.leader, 7);
        assert_eq!(back.raft_applied_index, 42);
        assert!(back.is_learner);
    }
}
