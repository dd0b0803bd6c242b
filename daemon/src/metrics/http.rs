//! What each request gets: `/metrics`, `/healthz`, `/readyz`; 404 for any other path,
//! 405 for any method but GET.

use super::registry::{Format, Metrics};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

const PLAIN: &str = "text/plain; charset=utf-8";

/// The answer to `req`. Bodies are small and whole (a few kilobytes of metrics at
/// most), so they are `String`s; request bodies are never read.
pub fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<String> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if req.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => {
            let format = negotiate(req);
            let mut response = Response::new(metrics.render(format));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        _ => match metrics.readiness() {
            Ok(()) => plain(StatusCode::OK, "joined\n"),
            Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
    }
}

/// The format for `/metrics`. Prometheus reads both text formats and says which it
/// prefers in `Accept` (its default list starts with
/// `application/openmetrics-text;version=1.0.0`): whoever asks for OpenMetrics gets
/// it, for its `# EOF` (a cut answer is noticed, not stored as data) and its typed
/// info and unit metadata. Everyone else (curl, node_exporter-style collectors, older
/// scrapers) gets the 0.0.4 text format, `text/plain; version=0.0.4`, which they all
/// read. Both come from the same registry through prometheus-client's encoders, and
/// each answer says which it is in `Content-Type`, as Prometheus 3 requires.
pub fn negotiate<B>(req: &Request<B>) -> Format {
    let wants_openmetrics = req.headers().get_all(ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        })
    });
    if wants_openmetrics {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response<String> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PLAIN));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn get(path: &str, accept: Option<&str>) -> Request<()> {
        let mut req = Request::get(path);
        if let Some(accept) = accept {
            req = req.header(ACCEPT, accept);
        }
        req.body(()).unwrap()
    }

    /// An `Accept` like the one Prometheus 3 sends with its default scrape protocols.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

    #[test]
    fn openmetrics_for_whoever_asks_for_it_else_the_text_format() {
        assert_eq!(
            negotiate(&get("/metrics", Some(PROMETHEUS_ACCEPT))),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(&get(
                "/metrics",
                Some("Application/OpenMetrics-Text; version=1.0.0")
            )),
            Format::OpenMetrics
        );
        assert_eq!(negotiate(&get("/metrics", None)), Format::Text);
        assert_eq!(negotiate(&get("/metrics", Some("*/*"))), Format::Text);
        assert_eq!(
            negotiate(&get("/metrics", Some("text/plain;version=0.0.4"))),
            Format::Text
        );
        assert_eq!(
            negotiate(&get(
                "/metrics",
                Some("application/openmetrics-text;q=0, text/plain")
            )),
            Format::Text
        );
    }

    #[test]
    fn routes_statuses_and_types() {
        let m = Metrics::new();
        let r = respond(&m, &get("/metrics", Some(PROMETHEUS_ACCEPT)));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(r.body().ends_with("# EOF\n"));
        let r = respond(&m, &get("/metrics?x=1", None));
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(r.body().contains("kube_join_agent_build_info{"));

        let r = respond(&m, &get("/healthz", None));
        assert_eq!((r.status(), r.body().as_str()), (StatusCode::OK, "ok\n"));
        let r = respond(&m, &get("/readyz", None));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        m.phase_entered("verify", Instant::now());
        m.joined(Duration::from_secs(42));
        let r = respond(&m, &get("/readyz", None));
        assert_eq!(
            (r.status(), r.body().as_str()),
            (StatusCode::OK, "joined\n")
        );

        for path in ["/", "/metrics/", "/debug", "/readyz/x"] {
            assert_eq!(
                respond(&m, &get(path, None)).status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        for method in [Method::POST, Method::HEAD, Method::DELETE, Method::PUT] {
            let req = Request::builder()
                .method(method.clone())
                .uri("/metrics")
                .body(())
                .unwrap();
            let r = respond(&m, &req);
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(r.headers()[ALLOW], "GET");
        }
    }
}
