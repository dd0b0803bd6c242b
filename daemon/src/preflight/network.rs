//! The API server endpoint: its name resolves and its port accepts connections.

use super::{Finding, Verdict};
use crate::config::Endpoint;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// DNS (for names) and a TCP connection to the endpoint; both waitable.
pub async fn check(endpoint: &Endpoint) -> Vec<Finding> {
    let mut findings = Vec::new();
    let is_ip = endpoint.host.parse::<std::net::IpAddr>().is_ok();
    if !is_ip {
        let verdict = match tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => Verdict::Pass(format!("{} resolves to {}", endpoint.host, a.ip())),
                None => Verdict::Wait(format!("{} resolves to no address", endpoint.host)),
            },
            Err(e) => Verdict::Wait(format!("{} does not resolve: {e}", endpoint.host)),
        };
        let resolved = matches!(verdict, Verdict::Pass(_));
        findings.push(Finding {
            check: "dns",
            verdict,
        });
        if !resolved {
            return findings;
        }
    }
    let target = (endpoint.host.as_str(), endpoint.port);
    let verdict =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(_)) => Verdict::Pass(format!("{endpoint} accepts connections")),
            Ok(Err(e)) => Verdict::Wait(format!("cannot connect to {endpoint}: {e}")),
            Err(_) => Verdict::Wait(format!(
                "connecting to {endpoint} timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            )),
        };
    findings.push(Finding {
        check: "api-server",
        verdict,
    });
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reachable_and_unreachable_ports() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(matches!(check(&ep).await[0].verdict, Verdict::Pass(_)));
        drop(listener);
        assert!(matches!(check(&ep).await[0].verdict, Verdict::Wait(_)));
    }

    #[tokio::test]
    async fn names_are_resolved_first() {
        let ep = Endpoint {
            host: "does-not-exist.invalid".into(),
            port: 6443,
        };
        let findings = check(&ep).await;
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].check, "dns");
        assert!(matches!(findings[0].verdict, Verdict::Wait(_)));
    }
}
