//! The TLS + HTTP/1.1 front: accepts connections, authenticates, applies the
//! availability knobs, routes, and logs every request.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::State;
use super::auth::{self, User};
use super::hostile::FillerBody;
use super::knobs::AnonymousDenial;
use super::objects::{self, Reply, status};
use super::requestinfo;
use super::routes::{self, Call};
use crate::timefmt;

const MAX_BODY: usize = 4 << 20;
const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

/// A response body: a small JSON or text reply, or a streamed hostile cluster-info.
pub enum ApiBody {
    /// The whole body (None once sent, or when empty).
    Full(Option<Bytes>),
    /// Streamed filler (`cluster_info_body`).
    Filler(FillerBody),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ApiBody::Filler(f) => Pin::new(f).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Full(b) => b.is_none(),
            ApiBody::Filler(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ApiBody::Filler(f) => f.size_hint(),
        }
    }
}
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS that asks for, but does not require, a client certificate signed by the CA.
fn tls_config(state: &State) -> Result<rustls::ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(state.pki.ca_der.clone()))
        .context("adding the CA to the client-certificate roots")?;
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .context("building the client-certificate verifier")?;
    let chain = state
        .pki
        .serving_chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(state.pki.serving_key.clone()));
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("loading the serving certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Binds `listen` and every `also` address, writes `DIR/ready`, and serves until
/// SIGTERM/SIGINT.
pub async fn serve(state: State, listen: SocketAddr, also: &[SocketAddr]) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve_until(state, listen, also, stop).await
}

/// [`serve`] until `stop` resolves (a program running the server in-process).
pub async fn serve_until(
    state: State,
    listen: SocketAddr,
    also: &[SocketAddr],
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&state)?));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let mut extra = Vec::with_capacity(also.len());
    for addr in also {
        extra.push(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        );
    }
    let state = Arc::new(state);
    let mut extra_tasks = Vec::new();
    for l in extra {
        let (state, acceptor) = (state.clone(), acceptor.clone());
        let via = l.local_addr().ok();
        extra_tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((tcp, _)) => {
                        tokio::spawn(connection(state.clone(), acceptor.clone(), tcp, via));
                    }
                    Err(e) => {
                        eprintln!("fake-apiserver: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    std::fs::write(state.dir.join("ready"), b"").context("writing the ready file")?;
    eprintln!(
        "fake-apiserver: serving {} (CA pin {}), state in {}",
        state.server_url,
        state.pki.pin,
        state.dir.display()
    );
    let accepts = extra_tasks;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    tokio::spawn(connection(state.clone(), acceptor.clone(), tcp, None));
                }
                // EMFILE and friends: back off instead of spinning.
                Err(e) => {
                    eprintln!("fake-apiserver: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    for task in accepts {
        task.abort();
    }
    let _ = std::fs::remove_file(state.dir.join("ready"));
    eprintln!("fake-apiserver: shutting down");
    Ok(())
}

async fn connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    via: Option<SocketAddr>,
) {
    // `tls_handshake_hold_secs`: the port is bound, the server not serving yet. The
    // connection waits in the backlog, as it would for a kube-apiserver that has not
    // reached "Serving securely", and is served once the window ends (if the client is
    // still there).
    let hold_until = {
        let mut src = state.knobs.lock().unwrap_or_else(|p| p.into_inner());
        src.read(SystemTime::now()).tls_hold_until
    };
    if let Some(wait) = hold_until.and_then(|until| until.duration_since(SystemTime::now()).ok()) {
        tokio::time::sleep(wait).await;
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            eprintln!("fake-apiserver: TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| auth::user_from_cert(c));
    let svc = service_fn(move |req| {
        let state = state.clone();
        let cert_user = cert_user.clone();
        async move { Ok::<_, Infallible>(handle(state, cert_user, via, req).await) }
    });
    // Errors here are client disconnects; nothing to do about them.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

/// A request admitted past the `max_inflight` gate; the slot is freed when it is
/// dropped (after the handler produced the answer).
pub struct Admitted<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Requests the in-flight limit never refuses: priority and fairness's `exempt` level
/// takes `system:masters` (the max-inflight filter lets it through too) and the probes
/// (`/healthz`, `/readyz`, `/livez`, the `probes` FlowSchema).
pub fn exempt_from_limit(user: &User, path: &str) -> bool {
    user.groups.iter().any(|g| g == "system:masters")
        || ["/healthz", "/readyz", "/livez"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The max-inflight gate: a slot for this request, or the overloaded answer (429, or
/// 503 for `busy_503_fraction` of the refusals, spread evenly: refusal k is a 503 when
/// floor((k+1)·F) > floor(k·F)), both with `Retry-After`.
pub fn admit<'a>(
    inflight: &'a std::sync::atomic::AtomicU64,
    refused: &std::sync::atomic::AtomicU64,
    knobs: &super::knobs::Knobs,
) -> Result<Option<Admitted<'a>>, Reply> {
    let Some(limit) = knobs.inflight_limit() else {
        return Ok(None);
    };
    if inflight.fetch_add(1, Ordering::SeqCst) < limit {
        return Ok(Some(Admitted(inflight)));
    }
    inflight.fetch_sub(1, Ordering::SeqCst);
    let k = refused.fetch_add(1, Ordering::SeqCst) as f64;
    let f = knobs.busy_503_fraction.unwrap_or(0.0);
    let secs = knobs.retry_after();
    if ((k + 1.0) * f).floor() > (k * f).floor() {
        Err(status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        )
        .retry_after(secs))
    } else {
        Err(objects::too_many_requests(secs))
    }
}

async fn handle(
    state: Arc<State>,
    cert_user: Option<User>,
    via: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    let now = SystemTime::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header(hyper::header::AUTHORIZATION);
    let content_type = header(hyper::header::CONTENT_TYPE);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes());

    let (snap, inject) = {
        let mut src = state.knobs.lock().unwrap_or_else(|p| p.into_inner());
        let snap = src.read(now);
        let unavailable = snap.knobs.unavailable_at(now);
        // The 500 countdown only runs while the server is otherwise up, and a hostile
        // cluster-info (not the server answering) does not use one up.
        let hostile = is_hostile_cluster_info(&snap.knobs, &method, &path);
        let inject = !unavailable && !hostile && src.take_injected_failure();
        let deadlines = src.node_deadlines(&snap.knobs, now);
        drop(src);
        if !deadlines.is_empty() {
            let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
            for (name, until) in deadlines {
                if let Err(e) = store.ensure_knob_node(&name, until, now) {
                    eprintln!("fake-apiserver: creating knob node {name}: {e:#}");
                }
            }
        }
        (snap, inject)
    };
    let knobs = &snap.knobs;
    if let Some(e) = &snap.error {
        log_line(
            &state,
            &format!(
                "{} knobs.json invalid, keeping previous knobs: {e}",
                timefmt::rfc3339(now)
            ),
        );
    }

    let authn = {
        let mut cache = state.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        auth::authenticate_cached(knobs, cert_user, authorization.as_deref(), &mut cache, now)
    };
    let readyz_failing = snap.readyz_failing_until.is_some_and(|until| now < until);
    let user_label = match &authn {
        Ok(u) => u.name.clone(),
        Err(_) => "<unauthenticated: invalid bearer token>".to_owned(),
    };
    let via_label = via.map(|a| format!(" via={a}")).unwrap_or_default();
    let log = |reply: &Reply| {
        let retry = reply
            .retry_after_secs()
            .map(|s| format!(" retry-after={s}"))
            .unwrap_or_default();
        log_line(
            &state,
            &format!(
                "{} {method} {path} user={user_label}{via_label}{retry} {}",
                timefmt::rfc3339(now),
                reply.status
            ),
        );
    };

    // Whoever is on the path answers before the server could: no 503, 401 or 403.
    if let Some(mode) = knobs
        .cluster_info_body
        .filter(|_| is_hostile_cluster_info(knobs, &method, &path))
    {
        if let Some(ms) = knobs.response_delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        log(&Reply::text(200, ""));
        let body = FillerBody::new(mode, knobs.cluster_info_body_bytes());
        let mut resp = Response::builder()
            .status(200)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(n) = body.content_length() {
            resp = resp.header(hyper::header::CONTENT_LENGTH, n);
        }
        return resp
            .body(ApiBody::Filler(body))
            .unwrap_or_else(|_| Response::new(ApiBody::Full(None)));
    }

    // The in-flight limit sits after authentication (a bad token is a 401 whatever the
    // load) and before authorization, as in kube-apiserver's handler chain; a proxy's
    // 503 window (`unavailable_until_unix`) comes before the server.
    let _slot = match &authn {
        Ok(user) if !knobs.unavailable_at(now) && !exempt_from_limit(user, &path) => {
            match admit(&state.inflight, &state.refused, knobs) {
                Ok(slot) => slot,
                Err(busy) => {
                    log(&busy);
                    return respond(busy);
                }
            }
        }
        _ => None,
    };
    // A slow server: the delay is part of handling the request, so it holds the slot.
    if let Some(ms) = knobs.response_delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    let events_unavailable = snap
        .events_unavailable_until
        .is_some_and(|until| now < until)
        && method == "POST"
        && path.starts_with("/api/v1/namespaces/")
        && path.ends_with("/events");
    let reply = if knobs.unavailable_at(now) || events_unavailable {
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        )
    } else if inject {
        status(
            500,
            "InternalError",
            "Internal error occurred: fake-apiserver: injected failure (fail_next_5xx)",
            None,
        )
    } else {
        let route = |user: &User| match &body {
            Err(_) => status(
                413,
                "RequestEntityTooLarge",
                "the request body is too large or unreadable",
                None,
            ),
            Ok(bytes) => {
                let call = Call {
                    state: &state,
                    knobs,
                    user,
                    method: &method,
                    query: query.as_deref(),
                    content_type: content_type.as_deref(),
                    body: bytes,
                    now,
                    unsigned_tokens: &snap.unsigned_tokens,
                    readyz_failing,
                };
                routes::route(&call, &path)
            }
        };
        match authn {
            Err(_) => status(401, "Unauthorized", "Unauthorized", None),
            // Authorization (the RBAC denial) comes before the handler.
            Ok(user) if user.is_anonymous() => {
                let info = requestinfo::parse(&method, &path, query.as_deref());
                match snap.anonymous_denial(now) {
                    None => route(&user),
                    Some(AnonymousDenial::AllButPublicInfo) if requestinfo::public_info(&info) => {
                        route(&user)
                    }
                    Some(_) => requestinfo::forbidden(&user.name, &info),
                }
            }
            Ok(user) => route(&user),
        }
    };
    log(&reply);
    respond(reply)
}

fn is_hostile_cluster_info(knobs: &super::knobs::Knobs, method: &str, path: &str) -> bool {
    knobs.cluster_info_body.is_some() && method == "GET" && path == CLUSTER_INFO_PATH
}

fn log_line(state: &State, line: &str) {
    if state.echo_requests {
        eprintln!("{line}");
    }
    let mut f = state.request_log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = writeln!(f, "{line}") {
        eprintln!("fake-apiserver: writing requests.log: {e}");
    }
}

fn respond(reply: Reply) -> Response<ApiBody> {
    let body = (!reply.body.is_empty()).then(|| Bytes::from(reply.body));
    let mut resp = Response::builder()
        .status(reply.status)
        .header(hyper::header::CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        resp = resp.header(name, value);
    }
    resp.body(ApiBody::Full(body))
        .unwrap_or_else(|_| Response::new(ApiBody::Full(None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::knobs::Knobs;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_gate_admits_up_to_the_limit_then_answers_429_with_retry_after() {
        let (inflight, refused) = (AtomicU64::new(0), AtomicU64::new(0));
        let knobs = Knobs::parse(r#"{"max_inflight": 2}"#).unwrap();
        let a = admit(&inflight, &refused, &knobs).unwrap().unwrap();
        let b = admit(&inflight, &refused, &knobs).unwrap().unwrap();
        let busy = admit(&inflight, &refused, &knobs).err().unwrap();
        assert_eq!(busy.status, 429);
        assert_eq!(busy.retry_after_secs(), Some("1"));
        assert_eq!(busy.content_type, "text/plain; charset=utf-8");
        assert_eq!(busy.body, b"Too many requests, please try again later.\n");
        assert_eq!(inflight.load(Ordering::SeqCst), 2);
        drop(a);
        let c = admit(&inflight, &refused, &knobs).unwrap().unwrap();
        drop((b, c));
        assert_eq!(inflight.load(Ordering::SeqCst), 0);
        // No limit: no slot is counted.
        assert!(
            admit(&inflight, &refused, &Knobs::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_fraction_of_the_refusals_are_503s_spread_evenly() {
        let (inflight, refused) = (AtomicU64::new(0), AtomicU64::new(0));
        let knobs = Knobs::parse(
            r#"{"max_inflight": 1, "busy_503_fraction": 0.25, "retry_after_secs": 3}"#,
        )
        .unwrap();
        let _held = admit(&inflight, &refused, &knobs).unwrap();
        let statuses: Vec<u16> = (0..8)
            .map(|_| admit(&inflight, &refused, &knobs).err().unwrap())
            .map(|r| {
                assert_eq!(r.retry_after_secs(), Some("3"));
                r.status
            })
            .collect();
        assert_eq!(statuses, [429, 429, 429, 503, 429, 429, 429, 503]);
        let r = admit(&inflight, &refused, &knobs).err().unwrap();
        assert_eq!(r.status, 429);
        let all = Knobs::parse(r#"{"max_inflight": 1, "busy_503_fraction": 1}"#).unwrap();
        let r = admit(&inflight, &refused, &all).err().unwrap();
        assert_eq!(r.status, 503);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["reason"], "ServiceUnavailable");
    }

    #[test]
    fn masters_and_probes_are_exempt() {
        let admin = User {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into()],
        };
        let cluster_admin = User {
            name: "kubernetes-admin".into(),
            groups: vec!["kubeadm:cluster-admins".into()],
        };
        assert!(exempt_from_limit(&admin, "/api/v1/nodes"));
        assert!(!exempt_from_limit(&cluster_admin, "/api/v1/nodes"));
        assert!(exempt_from_limit(&User::anonymous(), "/readyz"));
        assert!(exempt_from_limit(&User::anonymous(), "/healthz/etcd"));
        assert!(!exempt_from_limit(&User::anonymous(), "/version"));
    }
}
