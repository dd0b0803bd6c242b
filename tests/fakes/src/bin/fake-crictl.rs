//! `fake-crictl` (installed as `/usr/bin/crictl`); see tests/fakes/README.md.

fn main() {
    let code = kja_fakes::crictl::run(std::env::args().collect());
    std::process::exit(code);
}
