//! `fake-kubeadm` (installed as `/usr/bin/kubeadm`); see tests/fakes/README.md.

fn main() {
    let code = kja_fakes::kubeadm::run(std::env::args().collect());
    std::process::exit(code);
}
