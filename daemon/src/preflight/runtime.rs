//! The container runtime over CRI.

use super::{Finding, Verdict};
use crate::cri;
use std::path::Path;

/// RuntimeReady is required (waitable: containerd may still be starting);
/// NetworkReady false is expected before a CNI plugin is installed.
pub async fn check(socket: &Path) -> Finding {
    let verdict = match cri::probe(socket).await {
        Err(e) => Verdict::Wait(e.to_string()),
        Ok(report) if !report.runtime_ready.ok => Verdict::Wait(format!(
            "{} {} answers but is not RuntimeReady: {}",
            report.runtime_name, report.runtime_version, report.runtime_ready.detail
        )),
        Ok(report)
            if report.runtime_api_version != "v1" && !report.runtime_api_version.is_empty() =>
        {
            Verdict::Fail {
                reason: format!(
                    "{} {} speaks CRI {}, kubelet needs v1",
                    report.runtime_name, report.runtime_version, report.runtime_api_version
                ),
                fix: "upgrade containerd to 1.6 or later".into(),
            }
        }
        Ok(report) => Verdict::Pass(format!(
            "{} {} (CRI {}), RuntimeReady; NetworkReady={} ({})",
            report.runtime_name,
            report.runtime_version,
            report.runtime_api_version,
            report.network_ready.ok,
            report.network_ready.detail
        )),
    };
    Finding {
        check: "container-runtime",
        verdict,
    }
}
