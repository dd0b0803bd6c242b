//! Tests of supervisor.rs.

use super::*;

fn sh(script: &str, limits: Limits) -> Finished {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(
        Path::new("/bin/sh"),
        &["-c".to_string(), script.to_string()],
        limits,
        &[
            &Secret::new("0123456789abcdef"),
            &Secret::new("00ff".repeat(16).as_str()),
        ],
        false,
    ))
    .unwrap()
}

const GENEROUS: Limits = Limits {
    deadline: Duration::from_secs(30),
    no_progress: Duration::from_secs(30),
};

#[test]
fn collects_both_streams_and_the_exit_code() {
    let f = sh("echo out; echo err >&2; exit 3", GENEROUS);
    assert_eq!(f.code, Some(3));
    assert!(f.killed.is_none());
    assert!(f.output.contains(&Line {
        stream: "stdout",
        text: "out".into()
    }));
    assert!(f.output.contains(&Line {
        stream: "stderr",
        text: "err".into()
    }));
}

#[test]
fn an_endless_line_is_cut_and_memory_stays_bounded() {
    // 64 MiB without a newline, then a normal line.
    let f = sh(
        "head -c 67108864 /dev/zero | tr '\\0' 'x'; echo; echo after",
        GENEROUS,
    );
    assert_eq!(f.code, Some(0));
    assert_eq!(
        f.output.len(),
        2,
        "{:?}",
        f.output.iter().map(|l| l.text.len()).collect::<Vec<_>>()
    );
    assert!(f.output[0].text.len() < MAX_LINE + 64);
    assert!(f.output[0].text.ends_with("[line cut at 16 KiB]"));
    assert_eq!(f.output[1].text, "after");
}

#[test]
fn lines_that_are_not_utf8_are_kept_readable() {
    let f = sh("printf 'caf\\351\\nok\\n'", GENEROUS);
    assert_eq!(f.output.len(), 2);
    assert!(f.output[0].text.starts_with("caf"));
    assert_eq!(f.output[1].text, "ok");
}

#[test]
fn redacts_the_secrets_from_output() {
    let f = sh(
        &format!(
            "echo token abcdef.0123456789abcdef key {}",
            "00ff".repeat(16)
        ),
        GENEROUS,
    );
    assert_eq!(f.output[0].text, "token abcdef.<redacted> key <redacted>");
}

#[test]
fn silence_kills_the_whole_group() {
    // The grandchild would keep the group alive; it must die too.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("grandchild-alive");
    let script = format!(
        "echo start; (sleep 3; touch {}) & sleep 60",
        marker.display()
    );
    let f = sh(
        &script,
        Limits {
            deadline: Duration::from_secs(30),
            no_progress: Duration::from_millis(500),
        },
    );
    assert_eq!(
        f.killed,
        Some(Killed::NoProgress(Duration::from_millis(500)))
    );
    assert_eq!(f.signal, Some(15));
    assert!(f.elapsed < Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "the grandchild survived the group kill");
}

#[test]
fn output_resets_the_watchdog_but_not_the_deadline() {
    let f = sh(
        "while true; do echo tick; sleep 0.1; done",
        Limits {
            deadline: Duration::from_millis(800),
            no_progress: Duration::from_millis(500),
        },
    );
    assert_eq!(f.killed, Some(Killed::Deadline(Duration::from_millis(800))));
    assert!(f.output.len() >= 3);
}

#[test]
fn a_child_ignoring_sigterm_gets_sigkill() {
    let f = sh(
        "trap '' TERM; echo x; sleep 60",
        Limits {
            deadline: Duration::from_secs(30),
            no_progress: Duration::from_millis(300),
        },
    );
    assert_eq!(f.signal, Some(9));
}

#[test]
fn missing_program_is_kubeadm_missing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(run(
            Path::new("/nonexistent/kubeadm"),
            &[],
            GENEROUS,
            &[],
            false,
        ))
        .unwrap_err();
    assert_eq!(err.class(), "kubeadm-missing");
}
