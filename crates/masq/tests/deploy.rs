//! The Kubernetes manifests under `deploy/`, checked against what the agent really uses: every
//! flag the DaemonSets pass exists in `masq <subcommand> --help`, the ConfigMap lands where
//! `--config` reads it, the probes hit `/healthz` and `/readyz` on the admin port, and each
//! datapath gets only the capabilities and mounts it needs.
//!
//! `kubectl kustomize` renders the manifests. Without kubectl these tests fail and say so (a
//! test that cannot run never passes unrun); `scripts/check-deploy`, which CI runs, checks the
//! same manifests against the Kubernetes schemas (kubernetes-validate).
//!
//! One file per concern under `deploy/` (the test directory, not the manifests'):
//! `manifests.rs` renders and reads them; `args.rs`, `config_map.rs`, `observability.rs`,
//! `privileges.rs` and `image.rs` hold the tests.

#[path = "deploy/args.rs"]
mod args;
#[path = "deploy/config_map.rs"]
mod config_map;
#[path = "deploy/image.rs"]
mod image;
#[path = "deploy/manifests.rs"]
mod manifests;
#[path = "deploy/observability.rs"]
mod observability;
#[path = "deploy/privileges.rs"]
mod privileges;

const MASQ: &str = env!("CARGO_BIN_EXE_masq");
/// What `--config` and `--metrics-addr` mean when the manifest leaves them out (docs/config.md,
/// README: Observability).
const DEFAULT_CONFIG: &str = "/etc/config/ip-masq-agent";
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9710";
const CONFIG_MAP: &str = "ip-masq-agent";
const CONFIG_KEY: &str = "config";
const BPFFS: &str = "/sys/fs/bpf";
/// What every datapath needs, and what only eBPF may add to it.
const NETFILTER_CAPS: &[&str] = &["NET_ADMIN", "NET_RAW"];
const BPF_CAPS: &[&str] = &["BPF", "PERFMON", "SYS_ADMIN"];

/// Each kustomization of the agent, with the datapath its DaemonSet must select.
const AGENT_KUSTOMIZATIONS: &[(&str, &str)] = &[
    ("base", "auto"),
    ("overlays/ebpf", "ebpf"),
    ("overlays/nftables", "nftables"),
    ("overlays/iptables", "iptables"),
    ("overlays/metrics", "ebpf"),
    ("overlays/config-dir", "nftables"),
];
const CLEANUP_KUSTOMIZATION: &str = "cleanup";
