//! `fake-pki`: makes the certificates of a kubeadm-like etcd cluster for the test
//! harness (which has no crypto of its own): see tests/fakes/README.md.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kja_fakes::fsroot::write_atomic;
use kja_fakes::kubepki::{Authority, Leaf};

#[derive(Debug, Parser)]
#[command(
    name = "fake-pki",
    about = "kubeadm-like certificates for test etcd clusters"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A CA: writes PREFIX.crt and PREFIX.key (EC PRIVATE KEY, 0600).
    Ca {
        /// Subject CN (kubeadm's etcd CA is `etcd-ca`).
        #[arg(long)]
        cn: String,
        /// Output path without extension.
        #[arg(long)]
        out: PathBuf,
    },
    /// A leaf signed by a CA: writes PREFIX.crt and PREFIX.key.
    Leaf {
        /// The CA's path without extension (CA.crt, CA.key).
        #[arg(long)]
        ca: PathBuf,
        /// Subject CN.
        #[arg(long)]
        cn: String,
        /// Subject O (repeatable).
        #[arg(long)]
        org: Vec<String>,
        /// DNS SAN (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// IP SAN (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// serverAuth.
        #[arg(long)]
        server: bool,
        /// clientAuth.
        #[arg(long)]
        client: bool,
        /// Output path without extension.
        #[arg(long)]
        out: PathBuf,
    },
}

fn write_pair(out: &std::path::Path, cert: &str, key: &str) -> Result<()> {
    write_atomic(&out.with_extension("crt"), cert.as_bytes(), 0o644)?;
    write_atomic(&out.with_extension("key"), key.as_bytes(), 0o600)
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Ca { cn, out } => {
            let ca = Authority::generate(&cn)?;
            write_pair(&out, &ca.cert_pem, &ca.key_pem)
        }
        Command::Leaf {
            ca,
            cn,
            org,
            dns,
            ip,
            server,
            client,
            out,
        } => {
            let read = |ext: &str| {
                let p = ca.with_extension(ext);
                std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
            };
            let authority = Authority::load(&read("crt")?, &read("key")?)?;
            let (cert, key) = authority.issue(&Leaf {
                cn,
                orgs: org,
                dns,
                ips: ip,
                server,
                client,
            })?;
            write_pair(&out, &cert, &key)
        }
    }
}
