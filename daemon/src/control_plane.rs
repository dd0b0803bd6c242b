//! The control-plane join: kubeadm phase by phase, with etcd checked between phases.
