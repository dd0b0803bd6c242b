//! A small etcd v3 client: one gRPC call per method, over TLS with a client certificate
//! (etcd as kubeadm sets it up requires one), on the `Cluster` and `Maintenance` stubs
//! generated from etcd's rpc.proto ([`proto`]).
//!
//! Every call names its endpoint in errors, so a report says which member refused.

use super::members::{Member, MemberId};
use super::proto::{self, cluster_client::ClusterClient, maintenance_client::MaintenanceClient};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The etcd CA kubeadm downloads onto a joining control plane (node path).
pub const CA_CERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
/// The client certificate kubeadm generates for the API server's etcd access (node path),
/// written by `kubeadm join phase control-plane-prepare certs`.
pub const CLIENT_CERT: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
/// Its key (node path).
pub const CLIENT_KEY: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";

/// etcd's message when a learner is promoted before it caught up with the leader.
pub const LEARNER_NOT_READY: &str =
    "can only promote a learner member which is in sync with leader";
/// etcd's message when a learner is added while another one exists (3.4 allows one).
pub const TOO_MANY_LEARNERS: &str = "too many learner members in cluster";
/// etcd's message when a member ID is unknown.
pub const MEMBER_NOT_FOUND: &str = "member not found";
/// etcd's message when a member with the same peer URL exists.
pub const PEER_URL_EXISTS: &str = "Peer URLs already exists";

/// Where the TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle (PEM).
    pub ca: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Client key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// kubeadm's files on a joining control plane, below `paths`' root.
    pub fn kubeadm(paths: &crate::paths::Paths) -> Self {
        Self {
            ca: paths.at(CA_CERT),
            cert: paths.at(CLIENT_CERT),
            key: paths.at(CLIENT_KEY),
        }
    }

    /// The first of the three files that does not exist.
    pub fn missing(&self) -> Option<&Path> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .find(|p| !p.exists())
            .map(PathBuf::as_path)
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file could not be read or used.
    #[error("{path}: {detail}")]
    Tls {
        /// The file (or "TLS configuration").
        path: String,
        /// Why.
        detail: String,
    },
    /// No connection (refused, timed out, TLS handshake failed).
    #[error("cannot connect to etcd at {endpoint}: {detail}")]
    Connect {
        /// The client URL.
        endpoint: String,
        /// The transport error, with its causes.
        detail: String,
    },
    /// etcd answered with an error status.
    #[error("etcd at {endpoint} refused {call}: {message}")]
    Rpc {
        /// The client URL.
        endpoint: String,
        /// `MemberAdd`, `Status`, ...
        call: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// etcd's message (`etcdserver: too many learner members in cluster`).
        message: String,
    },
    /// None of the endpoints answered.
    #[error("no etcd endpoint answered ({tried}); last error: {last}")]
    NoEndpoint {
        /// The endpoints tried, comma-separated.
        tried: String,
        /// The last error.
        last: Box<EtcdError>,
    },
}

impl EtcdError {
    /// etcd's own message, when it answered.
    pub fn message(&self) -> Option<&str> {
        match self {
            EtcdError::Rpc { message, .. } => Some(message),
            EtcdError::NoEndpoint { last, .. } => last.message(),
            _ => None,
        }
    }

    fn says(&self, what: &str) -> bool {
        self.message().is_some_and(|m| m.contains(what))
    }

    /// The learner is not in sync with the leader yet.
    pub fn is_learner_not_ready(&self) -> bool {
        self.says(LEARNER_NOT_READY)
    }

    /// Another learner exists.
    pub fn is_too_many_learners(&self) -> bool {
        self.says(TOO_MANY_LEARNERS)
    }

    /// The member is gone already.
    pub fn is_member_not_found(&self) -> bool {
        self.says(MEMBER_NOT_FOUND)
    }

    /// A member with that peer URL exists.
    pub fn is_peer_url_exists(&self) -> bool {
        self.says(PEER_URL_EXISTS)
    }

    /// Worth asking another endpoint: the member is down, unreachable or has no leader.
    pub fn try_elsewhere(&self) -> bool {
        match self {
            EtcdError::Connect { .. } | EtcdError::NoEndpoint { .. } => true,
            EtcdError::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            EtcdError::Tls { .. } => false,
        }
    }
}

/// What one member says about itself and the cluster (`Maintenance.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The client URL asked.
    pub endpoint: String,
    /// The member that answered.
    pub member: MemberId,
    /// The leader it knows, if any.
    pub leader: Option<MemberId>,
    /// Raft term.
    pub raft_term: u64,
    /// Raft committed index.
    pub raft_index: u64,
    /// Raft applied index.
    pub applied_index: u64,
    /// It is a learner.
    pub is_learner: bool,
    /// Alarms and health errors it reports.
    pub errors: Vec<String>,
    /// Its cluster protocol version.
    pub version: String,
}

/// An etcd client for any number of endpoints; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    tls: ClientTlsConfig,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl Client {
    /// A client with the TLS material in `files`.
    pub fn from_files(files: &TlsFiles) -> Result<Self, EtcdError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| EtcdError::Tls {
                path: p.display().to_string(),
                detail: format!("cannot read: {e}"),
            })
        };
        Ok(Self::from_pem(
            &read(&files.ca)?,
            &read(&files.cert)?,
            &read(&files.key)?,
        ))
    }

    /// A client from PEM text (CA bundle, client certificate, client key).
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Self {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            // etcd speaks gRPC over HTTP/2; some builds do not negotiate it by ALPN.
            .assume_http2(true);
        Self {
            tls,
            connect_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(5),
        }
    }

    /// Changes the per-call deadline (connecting has its own, shorter one).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    async fn channel(&self, endpoint: &str) -> Result<Channel, EtcdError> {
        let connect = |detail: String| EtcdError::Connect {
            endpoint: endpoint.to_string(),
            detail,
        };
        let mut tls = self.tls.clone();
        // tonic takes the TLS server name from the URI's host, which keeps an IPv6
        // address's brackets; rustls wants the bare address.
        if let Some((host, _)) = super::members::host_port(endpoint)
            && host.contains(':')
        {
            tls = tls.domain_name(host);
        }
        let ep = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| connect(format!("not a URL: {e}")))?
            .tls_config(tls)
            .map_err(|e| connect(crate::failure::error_chain(&e)))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.call_timeout);
        let detail =
            match tokio::time::timeout(self.connect_timeout + Duration::from_secs(1), ep.connect())
                .await
            {
                Ok(Ok(channel)) => return Ok(channel),
                Ok(Err(e)) => crate::failure::error_chain(&e),
                Err(_) => format!("timed out after {}s", self.connect_timeout.as_secs()),
            };
        if detail.contains("timed out") && self.accepts_tcp(endpoint).await {
            return Err(connect(format!(
                "the port accepts connections but etcd does not answer within {}s; an etcd member answers clients only once its cluster has a leader (a quorum of its members running)",
                self.connect_timeout.as_secs()
            )));
        }
        Err(connect(detail))
    }

    /// Whether the endpoint's port accepts a TCP connection (to tell a member that is
    /// up but not ready from one that is down).
    async fn accepts_tcp(&self, endpoint: &str) -> bool {
        let Some((host, port)) = super::members::host_port(endpoint) else {
            return false;
        };
        matches!(
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// One call on a fresh connection to `endpoint`, under the call deadline; errors
    /// name the endpoint and the call.
    async fn unary<Q, R, F>(
        &self,
        endpoint: &str,
        call: &'static str,
        req: Q,
        rpc: impl FnOnce(Channel, tonic::Request<Q>) -> F,
    ) -> Result<R, EtcdError>
    where
        F: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let channel = self.channel(endpoint).await?;
        tonic::client::Grpc::new(channel.clone())
            .ready()
            .await
            .map_err(|e| EtcdError::Connect {
                endpoint: endpoint.to_string(),
                detail: crate::failure::error_chain(&e),
            })?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(self.call_timeout);
        let reply = tokio::time::timeout(
            self.call_timeout + Duration::from_secs(1),
            rpc(channel, request),
        )
        .await
        .map_err(|_| EtcdError::Rpc {
            endpoint: endpoint.to_string(),
            call,
            code: tonic::Code::DeadlineExceeded,
            message: format!("no answer within {}s", self.call_timeout.as_secs()),
        })?;
        reply.map(tonic::Response::into_inner).map_err(|s| {
            // A status from the transport (connection reset) has no etcd message.
            let message = if s.message().is_empty() {
                format!("{:?}", s.code())
            } else {
                s.message().to_string()
            };
            EtcdError::Rpc {
                endpoint: endpoint.to_string(),
                call,
                code: s.code(),
                message,
            }
        })
    }

    /// `Cluster.MemberList`.
    pub async fn member_list(&self, endpoint: &str) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .unary(
                endpoint,
                "MemberList",
                proto::MemberListRequest::default(),
                async |c, r| ClusterClient::new(c).member_list(r).await,
            )
            .await?;
        Ok(resp.members.into_iter().map(Member::from).collect())
    }

    /// `Cluster.MemberAdd`: returns the new member and all members after the addition.
    pub async fn member_add(
        &self,
        endpoint: &str,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<(Member, Vec<Member>), EtcdError> {
        let resp = self
            .unary(
                endpoint,
                "MemberAdd",
                proto::MemberAddRequest {
                    peer_ur_ls: peer_urls,
                    is_learner: learner,
                },
                async |c, r| ClusterClient::new(c).member_add(r).await,
            )
            .await?;
        let added = resp.member.map(Member::from).ok_or(EtcdError::Rpc {
            endpoint: endpoint.to_string(),
            call: "MemberAdd",
            code: tonic::Code::Internal,
            message: "the answer names no member".into(),
        })?;
        Ok((added, resp.members.into_iter().map(Member::from).collect()))
    }

    /// `Cluster.MemberRemove`: returns the members left.
    pub async fn member_remove(
        &self,
        endpoint: &str,
        id: MemberId,
    ) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .unary(
                endpoint,
                "MemberRemove",
                proto::MemberRemoveRequest { id: id.0 },
                async |c, r| ClusterClient::new(c).member_remove(r).await,
            )
            .await?;
        Ok(resp.members.into_iter().map(Member::from).collect())
    }

    /// `Cluster.MemberPromote`: returns the members after the promotion.
    pub async fn member_promote(
        &self,
        endpoint: &str,
        id: MemberId,
    ) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .unary(
                endpoint,
                "MemberPromote",
                proto::MemberPromoteRequest { id: id.0 },
                async |c, r| ClusterClient::new(c).member_promote(r).await,
            )
            .await?;
        Ok(resp.members.into_iter().map(Member::from).collect())
    }

    /// `Maintenance.Status` of the member at `endpoint` (learners answer it too).
    pub async fn status(&self, endpoint: &str) -> Result<Status, EtcdError> {
        let resp = self
            .unary(endpoint, "Status", proto::StatusRequest {}, async |c, r| {
                MaintenanceClient::new(c).status(r).await
            })
            .await?;
        Ok(Status {
            endpoint: endpoint.to_string(),
            member: MemberId(resp.header.map(|h| h.member_id).unwrap_or(0)),
            leader: (resp.leader != 0).then_some(MemberId(resp.leader)),
            raft_term: resp.raft_term,
            raft_index: resp.raft_index,
            applied_index: resp.raft_applied_index,
            is_learner: resp.is_learner,
            errors: resp.errors,
            version: resp.version,
        })
    }

    /// Calls `f` on each endpoint in order until one answers; an answer that is an
    /// error from etcd itself (not "unavailable") is final. Returns the endpoint used.
    pub async fn first<T>(
        &self,
        endpoints: &[String],
        mut f: impl AsyncFnMut(&Client, &str) -> Result<T, EtcdError>,
    ) -> Result<(String, T), EtcdError> {
        let mut last = None;
        for ep in endpoints {
            match f(self, ep).await {
                Ok(v) => return Ok((ep.clone(), v)),
                Err(e) if e.try_elsewhere() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::NoEndpoint {
            tried: endpoints.join(", "),
            last: Box::new(last.unwrap_or(EtcdError::Connect {
                endpoint: String::new(),
                detail: "no endpoints configured".into(),
            })),
        })
    }
}

#[cfg(test)]
mod tests;
