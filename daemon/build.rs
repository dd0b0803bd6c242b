//! Generates the etcd and CRI gRPC clients from upstream's .proto files in `proto/`
//! (origins in `proto/README.md`). protox parses them in Rust, so building needs no
//! protoc; tonic-prost-build writes the messages and the client stubs.
//!
//! Only the RPCs below are generated, with the messages they use: the rest of etcd's
//! and CRI's APIs would be compiled for nothing.

use prost_types::{DescriptorProto, FileDescriptorSet};
use std::collections::BTreeSet;

/// (file, fully qualified RPCs the agent calls).
const APIS: &[(&str, &[&str])] = &[
    (
        "etcd/api/etcdserverpb/rpc.proto",
        &[
            "etcdserverpb.Cluster.MemberList",
            "etcdserverpb.Cluster.MemberAdd",
            "etcdserverpb.Cluster.MemberRemove",
            "etcdserverpb.Cluster.MemberPromote",
            "etcdserverpb.Maintenance.Status",
        ],
    ),
    (
        "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto",
        &[
            "runtime.v1.RuntimeService.Version",
            "runtime.v1.RuntimeService.Status",
        ],
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files: Vec<&str> = APIS.iter().map(|(file, _)| *file).collect();
    let rpcs: BTreeSet<String> = APIS
        .iter()
        .flat_map(|(_, rpcs)| rpcs.iter().map(|r| r.to_string()))
        .collect();
    let fds = keep_only(protox::compile(files, ["proto"])?, &rpcs);
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}

/// Drops every service method not in `rpcs`, then every message and enum those
/// methods do not reach, then the files left empty. Comments go too: their source
/// locations are indices into the lists this shortens.
fn keep_only(mut fds: FileDescriptorSet, rpcs: &BTreeSet<String>) -> FileDescriptorSet {
    let mut needed = BTreeSet::new();
    for file in &mut fds.file {
        let package = file.package().to_string();
        file.source_code_info = None;
        for service in &mut file.service {
            let name = format!("{package}.{}", service.name());
            service
                .method
                .retain(|m| rpcs.contains(&format!("{name}.{}", m.name())));
            for m in &service.method {
                needed.extend([m.input_type().to_string(), m.output_type().to_string()]);
            }
        }
        file.service.retain(|s| !s.method.is_empty());
    }
    // Close over field types, nested types and enclosing messages until nothing new
    // is reached.
    let all: Vec<(String, &DescriptorProto)> = fds
        .file
        .iter()
        .flat_map(|f| messages(&format!(".{}", f.package()), &f.message_type))
        .collect();
    let mut seen = 0;
    while needed.len() != seen {
        seen = needed.len();
        for (name, message) in &all {
            if needed.contains(name) {
                needed.extend(message.field.iter().filter_map(|f| f.type_name.clone()));
                needed.extend(
                    message
                        .nested_type
                        .iter()
                        .map(|n| format!("{name}.{}", n.name())),
                );
            } else if needed.iter().any(|n| n.starts_with(&format!("{name}."))) {
                needed.insert(name.clone());
            }
        }
    }
    for file in &mut fds.file {
        let prefix = format!(".{}", file.package());
        file.message_type
            .retain(|m| needed.contains(&format!("{prefix}.{}", m.name())));
        file.enum_type
            .retain(|e| needed.contains(&format!("{prefix}.{}", e.name())));
    }
    fds.file
        .retain(|f| !(f.message_type.is_empty() && f.enum_type.is_empty() && f.service.is_empty()));
    fds
}

/// Every message under `prefix`, nested ones included, by fully qualified name.
fn messages<'a>(prefix: &str, list: &'a [DescriptorProto]) -> Vec<(String, &'a DescriptorProto)> {
    list.iter()
        .flat_map(|m| {
            let name = format!("{prefix}.{}", m.name());
            let mut all = messages(&name, &m.nested_type);
            all.push((name, m));
            all
        })
        .collect()
}
