//! etcd fixtures for control-plane scenarios: real etcd members on loopback with TLS like kubeadm's.
