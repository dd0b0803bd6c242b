//! Reading HTTP bodies with a size cap. Every answer the agent reads from the network may
//! come from anyone on the path (discovery's first fetch is unverified by design), and
//! an unbounded read lets one answer grow the agent without limit: a declared length over
//! the cap is refused before a byte is read, and a body without one is cut off at the cap.

/// cluster-info is a few KiB (a kubeconfig with the CA, one signature per token); a
/// ConfigMap cannot exceed about 1 MiB in etcd anyway.
pub const CLUSTER_INFO_LIMIT: usize = 2 << 20;
/// Node objects and CSR lists from the API server: generous for large clusters.
pub const API_LIMIT: usize = 16 << 20;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The answer is larger than the cap.
    #[error("the answer is larger than {} KiB{}: refused without reading it", limit / 1024, declared.map(|d| format!(" (Content-Length {d})")).unwrap_or_else(|| " (no Content-Length; cut off at the limit)".into()))]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
        /// The length the server declared, if it declared one.
        declared: Option<u64>,
    },
    /// The connection failed while reading.
    #[error("reading the answer: {0}")]
    Read(String),
}

/// Reads the whole body of `response`, at most `limit` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if let Some(declared) = response.content_length()
        && declared > limit as u64
    {
        return Err(BodyError::TooLarge {
            limit,
            declared: Some(declared),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(crate::failure::error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge {
                limit,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An overloaded API server's `Retry-After` (seconds, or an HTTP date), capped: a
/// server on the path must not park the agent for a day.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    const CAP: std::time::Duration = std::time::Duration::from_secs(300);
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let after = match text.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(after.min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain-HTTP server that answers one request with `head` and then `body_chunks`
    /// pieces of 64 KiB (forever when `None`), and reports how much it wrote.
    async fn serve(
        head: String,
        body_chunks: Option<usize>,
    ) -> (String, tokio::task::JoinHandle<usize>) {
        // reqwest is built without a default TLS provider; the daemon installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let mut written = 0;
            if tcp.write_all(head.as_bytes()).await.is_err() {
                return written;
            }
            let piece = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while body_chunks.is_none_or(|n| sent < n) {
                let framed = if head.contains("chunked") {
                    let mut f = format!("{:x}\r\n", piece.len()).into_bytes();
                    f.extend_from_slice(&piece);
                    f.extend_from_slice(b"\r\n");
                    f
                } else {
                    piece.clone()
                };
                if tcp.write_all(&framed).await.is_err() {
                    break;
                }
                written += piece.len();
                sent += 1;
            }
            written
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            768u64 << 20
        );
        let (url, server) = serve(head, Some(0)).await;
        let response = reqwest::get(&url).await.unwrap();
        let err = read_capped(response, 1 << 20).await.unwrap_err();
        assert_eq!(
            err,
            BodyError::TooLarge {
                limit: 1 << 20,
                declared: Some(768 << 20)
            }
        );
        assert!(
            err.to_string().contains("Content-Length 805306368"),
            "{err}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_endless_chunked_body_is_cut_off_at_the_cap() {
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_string();
        let (url, server) = serve(head, None).await;
        let response = reqwest::get(&url).await.unwrap();
        let err = read_capped(response, 1 << 20).await.unwrap_err();
        assert_eq!(
            err,
            BodyError::TooLarge {
                limit: 1 << 20,
                declared: None
            }
        );
        // Dropping the response closed the connection: the server stops writing soon
        // after the cap instead of filling memory somewhere.
        let written = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the server noticed the closed connection")
            .unwrap();
        assert!(written < 64 << 20, "{written} bytes were accepted");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_capped() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            retry_after(&h)
        };
        assert_eq!(with("7"), Some(std::time::Duration::from_secs(7)));
        assert_eq!(with("86400"), Some(std::time::Duration::from_secs(300)));
        let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
        let d = with(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(d <= std::time::Duration::from_secs(30) && d >= std::time::Duration::from_secs(28));
        assert_eq!(with("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            3 * 64 * 1024
        );
        let (url, server) = serve(head, Some(3)).await;
        let response = reqwest::get(&url).await.unwrap();
        let body = read_capped(response, 1 << 20).await.unwrap();
        assert_eq!(body.len(), 3 * 64 * 1024);
        server.await.unwrap();
    }
}
