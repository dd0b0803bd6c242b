//! kube-join-agent: joins this machine to a Kubernetes cluster and hands off to kubelet.
#![deny(unused_must_use)]

fn main() -> std::process::ExitCode {
    kube_join_agent::cli::main()
}
