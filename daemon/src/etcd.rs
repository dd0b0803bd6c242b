//! etcd, asked over its gRPC API with the certificates kubeadm downloaded: leader, members, learners, peer reachability (control-plane joins).
