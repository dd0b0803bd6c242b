//! Hostile cluster-info bodies (`cluster_info_body`): what an attacker on the network
//! path could answer to the first, unverified cluster-info fetch. The body is streamed
//! from one static 64 KiB buffer, so the server's memory stays flat whatever the size,
//! and it stops as soon as hyper drops it (the client went away).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::knobs::ClusterInfoBody;

/// Size of each filler frame.
pub const CHUNK: usize = 64 << 10;
/// How often `endless` writes one [`CHUNK`] (640 KiB/s).
pub const ENDLESS_PACE: Duration = Duration::from_millis(100);

/// The start of a ConfigMap whose kubeconfig never closes: JSON-ish, so a client that
/// sniffs the first bytes sees what it expects.
const HEAD: &[u8] = br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cluster-info","namespace":"kube-public"},"data":{"kubeconfig":""#;
/// Closes the JSON of a sized body.
const TAIL: &[u8] = br#""}}"#;

const fn filler() -> [u8; CHUNK] {
    let mut b = [0u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        b[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    b
}
static FILLER: [u8; CHUNK] = filler();

/// The streamed body.
pub struct FillerBody {
    mode: ClusterInfoBody,
    head: Option<Bytes>,
    tail: Option<Bytes>,
    /// Filler bytes still owed (sized modes).
    filler_left: u64,
    /// Declared length (`oversized` only).
    declared: Option<u64>,
    /// `endless`: the next chunk is due when this fires.
    pace: Option<Pin<Box<tokio::time::Sleep>>>,
    sent: u64,
    finished: bool,
}

impl FillerBody {
    /// A body for `mode`; `total` is the size of the sized modes (at least HEAD + TAIL).
    pub fn new(mode: ClusterInfoBody, total: u64) -> Self {
        let overhead = (HEAD.len() + TAIL.len()) as u64;
        let total = total.max(overhead);
        Self {
            mode,
            head: Some(Bytes::from_static(HEAD)),
            tail: (mode != ClusterInfoBody::Endless).then(|| Bytes::from_static(TAIL)),
            filler_left: total - overhead,
            declared: (mode == ClusterInfoBody::Oversized).then_some(total),
            pace: (mode == ClusterInfoBody::Endless)
                .then(|| Box::pin(tokio::time::sleep(ENDLESS_PACE))),
            sent: 0,
            finished: false,
        }
    }

    /// The Content-Length to declare, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.declared
    }

    fn emit(&mut self, b: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.sent += b.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(b))))
    }
}

impl Body for FillerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return this.emit(head);
        }
        if let Some(sleep) = this.pace.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            // From now, not from the last deadline: a client that reads slowly gets no
            // burst to catch up.
            sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + ENDLESS_PACE);
            return this.emit(Bytes::from_static(&FILLER));
        }
        if this.filler_left > 0 {
            let n = this.filler_left.min(CHUNK as u64) as usize;
            this.filler_left -= n as u64;
            return this.emit(Bytes::from_static(&FILLER[..n]));
        }
        // The tail is the last frame: hyper stops polling a body once its declared
        // length is out, so "finished" cannot wait for the final None.
        if let Some(tail) = this.tail.take() {
            this.finished = true;
            return this.emit(tail);
        }
        this.finished = true;
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n - self.sent),
            None => SizeHint::default(),
        }
    }
}

impl Drop for FillerBody {
    fn drop(&mut self) {
        let outcome = if self.finished {
            "sent in full"
        } else {
            "stopped, the client went away"
        };
        eprintln!(
            "fake-apiserver: cluster-info {} body {outcome} after {} bytes",
            self.mode.as_str(),
            self.sent
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn drain(mut b: FillerBody, max_frames: usize) -> (Vec<u8>, usize, bool) {
        let mut out = Vec::new();
        let mut largest = 0;
        for _ in 0..max_frames {
            match b.frame().await {
                Some(Ok(f)) => {
                    let d = f.into_data().unwrap();
                    largest = largest.max(d.len());
                    out.extend_from_slice(&d);
                }
                _ => return (out, largest, true),
            }
        }
        (out, largest, false)
    }

    #[tokio::test]
    async fn sized_bodies_are_exact_json() {
        for mode in [
            ClusterInfoBody::Oversized,
            ClusterInfoBody::OversizedChunked,
        ] {
            let b = FillerBody::new(mode, 1 << 20);
            match mode {
                ClusterInfoBody::Oversized => {
                    assert_eq!(b.content_length(), Some(1 << 20));
                    assert_eq!(b.size_hint().exact(), Some(1 << 20));
                }
                _ => {
                    assert_eq!(b.content_length(), None);
                    assert_eq!(b.size_hint().exact(), None);
                }
            }
            let (out, largest, ended) = drain(b, 100).await;
            assert!(ended);
            assert_eq!(out.len(), 1 << 20);
            assert!(largest <= CHUNK);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["metadata"]["name"], "cluster-info");
            assert_eq!(
                v["data"]["kubeconfig"].as_str().unwrap().len(),
                (1 << 20) - HEAD.len() - TAIL.len()
            );
        }
    }

    #[tokio::test]
    async fn endless_keeps_a_steady_pace() {
        let b = FillerBody::new(ClusterInfoBody::Endless, 0);
        assert_eq!(b.size_hint().exact(), None);
        let start = std::time::Instant::now();
        let (out, largest, ended) = drain(b, 6).await;
        assert!(!ended);
        assert_eq!(largest, CHUNK);
        assert_eq!(out.len(), HEAD.len() + 5 * CHUNK);
        assert!(out.starts_with(HEAD));
        // One chunk per 100 ms, not as fast as the client reads.
        let took = start.elapsed();
        assert!(
            took >= 5 * ENDLESS_PACE - Duration::from_millis(5),
            "{took:?}"
        );
    }
}
