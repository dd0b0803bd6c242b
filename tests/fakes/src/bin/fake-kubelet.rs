//! `fake-kubelet` (installed as `/usr/bin/kubelet`); see tests/fakes/README.md.

fn main() {
    let code = kja_fakes::kubelet::run(std::env::args().collect());
    std::process::exit(code);
}
