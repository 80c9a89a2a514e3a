//! The Kubernetes manifests under `deploy/`, checked against what the agent really uses: every
//! flag the DaemonSets pass exists in `masq <subcommand> --help`, the ConfigMap lands where
//! `--config` reads it, the probes hit `/healthz` and `/readyz` on the admin port, and each
//! datapath gets only the capabilities and mounts it needs.
//!
//! `kubectl kustomize` renders the manifests. Without kubectl these tests print why and pass
//! without checking; `scripts/check-deploy`, which CI runs, fails instead.

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// One kustomization's rendered resources.
struct Rendered {
    dir: &'static str,
    datapath: &'static str,
    resources: Vec<Value>,
}

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> &Value {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/{}: no {kind} named {name}", self.dir))
    }

    fn pod_spec(&self, daemonset: &str) -> &Value {
        &self.find("DaemonSet", daemonset)["spec"]["template"]["spec"]
    }

    fn agent(&self) -> &Value {
        container(self.pod_spec("masq"), "containers", "masq")
    }
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    items(&pod[list])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

/// A JSON array's items; an absent field is an empty list.
fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn render(dir: &str) -> Vec<Value> {
    let path = repo_root().join("deploy").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kubectl prints UTF-8");
    serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("deploy/{dir}: rendered YAML does not parse: {e}"))
}

/// Every kustomization rendered once; the test fails when kubectl cannot run (it renders
/// deploy/ with `kubectl kustomize`, as scripts/check-deploy does).
fn renders() -> &'static (Vec<Rendered>, Rendered) {
    masq_testbed::require_programs(&["kubectl"]);
    static RENDERS: OnceLock<(Vec<Rendered>, Rendered)> = OnceLock::new();
    RENDERS.get_or_init(|| {
        let agents = AGENT_KUSTOMIZATIONS
            .iter()
            .map(|&(dir, datapath)| Rendered {
                dir,
                datapath,
                resources: render(dir),
            })
            .collect();
        let cleanup = Rendered {
            dir: CLEANUP_KUSTOMIZATION,
            datapath: "any",
            resources: render(CLEANUP_KUSTOMIZATION),
        };
        (agents, cleanup)
    })
}

/// The flags `masq <subcommand> --help` lists.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let out = Command::new(MASQ)
        .args([subcommand, "--help"])
        .output()
        .expect("running masq");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`masq {subcommand} --help` failed ({}): {}{}",
        out.status,
        help,
        String::from_utf8_lossy(&out.stderr)
    );
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.len() > 2 && word.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// A container's `masq` arguments after the subcommand as (flag, value) pairs. Manifests write
/// `--flag=value` (a bare `--flag` is a switch), so a value can never be mistaken for a flag.
fn flags(container: &Value, subcommand: &str) -> Vec<(String, Option<String>)> {
    assert!(
        container["command"].is_null(),
        "container {} overrides the image's masq entrypoint",
        container["name"]
    );
    let args: Vec<&str> = items(&container["args"])
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&subcommand),
        "first argument of {args:?}"
    );
    args[1..]
        .iter()
        .map(|arg| {
            assert!(
                arg.starts_with("--"),
                "argument {arg:?} is not --flag=value"
            );
            match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg.to_string(), None),
            }
        })
        .collect()
}

fn flag_value<'a>(flags: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(flag, _)| flag == name)
        .map(|(_, value)| value.as_deref().expect("flag has a value"))
}

fn string_set(v: &Value) -> BTreeSet<&str> {
    items(v).iter().filter_map(Value::as_str).collect()
}

/// The containerPort a probe or Service names, by number or by port name.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    items(&container["ports"])
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {port}"))
}

/// Splits `HOST:PORT` (`[V6]:PORT` too) as the agent's `--metrics-addr` takes it.
fn split_addr(addr: &str) -> (&str, u64) {
    let (host, port) = addr.rsplit_once(':').expect("--metrics-addr is HOST:PORT");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port.parse().expect("--metrics-addr port is a number"))
}

#[test]
fn every_flag_passed_exists_in_masq_help() {
    let (agents, cleanup) = renders();
    let agent_help = help_flags("agent");
    for r in agents {
        for (flag, _) in flags(r.agent(), "agent") {
            assert!(
                agent_help.contains(&flag),
                "deploy/{} passes {flag}, which `masq agent --help` does not list: {agent_help:?}",
                r.dir
            );
        }
    }
    let cleanup_help = help_flags("cleanup");
    let init = container(
        cleanup.pod_spec("masq-cleanup"),
        "initContainers",
        "cleanup",
    );
    for (flag, _) in flags(init, "cleanup") {
        assert!(cleanup_help.contains(&flag), "masq cleanup has no {flag}");
    }
}

#[test]
fn each_overlay_selects_its_datapath() {
    let (agents, _) = renders();
    for r in agents {
        let flags = flags(r.agent(), "agent");
        let datapath = flag_value(&flags, "--datapath").unwrap_or("auto");
        assert_eq!(datapath, r.datapath, "deploy/{}", r.dir);
    }
}

/// The ConfigMap sources of the volume mounted at `dir`: one `configMap`, or the `projected`
/// sources of several.
fn config_sources<'a>(r: &'a Rendered, dir: &Path) -> Vec<&'a Value> {
    let agent = r.agent();
    let mount = items(&agent["volumeMounts"])
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == dir)
        .unwrap_or_else(|| panic!("deploy/{}: nothing mounted at {}", r.dir, dir.display()));
    assert_eq!(mount["readOnly"], true, "deploy/{}: config mount", r.dir);
    let volume = items(&r.pod_spec("masq")["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("mounted volume exists");
    match volume["projected"]["sources"].as_array() {
        Some(sources) => sources.iter().map(|s| &s["configMap"]).collect(),
        None => vec![&volume["configMap"]],
    }
}

/// The file a ConfigMap source maps its `config` key to.
fn key_file(source: &Value) -> &str {
    items(&source["items"])
        .iter()
        .find(|i| i["key"] == CONFIG_KEY)
        .map_or(CONFIG_KEY, |i| i["path"].as_str().unwrap())
}

#[test]
fn config_map_is_mounted_where_the_config_flag_reads() {
    let (agents, _) = renders();
    for r in agents {
        let flags = flags(r.agent(), "agent");
        // `--config-dir` reads every file named ip-masq* of the directory; `--config` one file.
        let (dir, file) = match flag_value(&flags, "--config-dir") {
            Some(dir) => (PathBuf::from(dir), None),
            None => {
                let config = Path::new(flag_value(&flags, "--config").unwrap_or(DEFAULT_CONFIG));
                let file = config.file_name().unwrap().to_str().unwrap().to_string();
                (config.parent().unwrap().to_path_buf(), Some(file))
            }
        };
        let sources = config_sources(r, &dir);
        for source in &sources {
            assert_eq!(
                source["optional"], true,
                "deploy/{}: a missing ConfigMap means defaults",
                r.dir
            );
            if file.is_none() {
                assert!(
                    key_file(source).starts_with("ip-masq"),
                    "deploy/{}: {} is not a file --config-dir reads",
                    r.dir,
                    key_file(source)
                );
            }
        }
        let main = sources
            .iter()
            .find(|s| s["name"] == CONFIG_MAP)
            .unwrap_or_else(|| panic!("deploy/{}: {CONFIG_MAP} is not mounted", r.dir));
        if let Some(file) = &file {
            assert_eq!(
                key_file(main),
                file,
                "deploy/{}: key {CONFIG_KEY} is not the file --config reads",
                r.dir
            );
        }
        for source in sources {
            let name = source["name"].as_str().unwrap();
            assert!(r.find("ConfigMap", name)["data"][CONFIG_KEY].is_string());
        }
    }
}

/// The ConfigMaps of the config-dir overlay, laid out as the projected volume holds them,
/// pass `masq validate --config-dir`; one bad entry in the second makes the merge fail.
#[test]
fn projected_config_maps_pass_masq_validate() {
    let (agents, _) = renders();
    let r = agents
        .iter()
        .find(|r| r.dir == "overlays/config-dir")
        .unwrap();
    let sources = config_sources(r, Path::new("/etc/config"));
    assert!(sources.len() >= 2, "deploy/{}: one ConfigMap only", r.dir);
    for (name, valid) in [("shipped", true), ("broken", false)] {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-config-dir-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, source) in sources.iter().enumerate() {
            let map = r.find("ConfigMap", source["name"].as_str().unwrap());
            let mut text = map["data"][CONFIG_KEY].as_str().unwrap().to_string();
            if !valid && i == 1 {
                text.push_str("masqueradeCIDRs: [10.5.0.1/16]\n");
            }
            std::fs::write(dir.join(key_file(source)), text).unwrap();
        }
        let out = Command::new(MASQ)
            .arg("validate")
            .arg("--config-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            valid,
            "masq validate --config-dir on the {name} ConfigMaps ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn probes_hit_health_endpoints_on_the_metrics_address() {
    let (agents, _) = renders();
    for r in agents {
        let agent = r.agent();
        let flags = flags(agent, "agent");
        let addr = flag_value(&flags, "--metrics-addr").unwrap_or(DEFAULT_METRICS_ADDR);
        let (host, port) = split_addr(addr);
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &agent[probe]["httpGet"];
            assert_eq!(get["path"], path, "deploy/{}: {probe}", r.dir);
            assert_eq!(
                resolve_port(agent, &get["port"]),
                port,
                "deploy/{}: {probe}",
                r.dir
            );
            if loopback {
                // kubelet would probe the pod (node) IP, where nothing listens.
                assert_eq!(
                    get["host"], host,
                    "deploy/{}: {probe} must probe {host}",
                    r.dir
                );
            } else {
                assert!(
                    get["host"].is_null(),
                    "deploy/{}: {probe} probes the pod IP",
                    r.dir
                );
            }
        }
        if !loopback {
            // One manifest for every node: the address must come from the downward API.
            let var = host
                .strip_prefix("$(")
                .and_then(|h| h.strip_suffix(')'))
                .unwrap_or_else(|| panic!("deploy/{}: --metrics-addr host {host} is fixed", r.dir));
            let env = items(&agent["env"])
                .iter()
                .find(|e| e["name"] == var)
                .unwrap_or_else(|| panic!("deploy/{}: --metrics-addr uses unset {var}", r.dir));
            assert_eq!(
                env["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP",
                "deploy/{}: {var} must be the node IP",
                r.dir
            );
        }
    }
}

#[test]
fn variables_in_arguments_are_defined() {
    let (agents, _) = renders();
    for r in agents {
        let agent = r.agent();
        let defined: BTreeSet<&str> = items(&agent["env"])
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        for arg in items(&agent["args"]).iter().filter_map(Value::as_str) {
            // kubelet passes an undefined $(VAR) through literally.
            for reference in arg.split("$(").skip(1) {
                let var = reference.split(')').next().unwrap();
                assert!(
                    defined.contains(var),
                    "deploy/{}: {arg} uses undefined {var}",
                    r.dir
                );
            }
        }
    }
}

#[test]
fn capabilities_are_the_least_each_datapath_needs() {
    let (agents, _) = renders();
    for r in agents {
        let security = &r.agent()["securityContext"];
        let added = string_set(&security["capabilities"]["add"]);
        assert_eq!(
            string_set(&security["capabilities"]["drop"]),
            BTreeSet::from(["ALL"])
        );
        assert!(
            added.contains("NET_ADMIN"),
            "deploy/{}: every datapath needs NET_ADMIN",
            r.dir
        );
        let bpf_added: BTreeSet<&str> = added
            .intersection(&BPF_CAPS.iter().copied().collect())
            .copied()
            .collect();
        if r.datapath == "ebpf" {
            assert!(
                bpf_added.contains("BPF") && bpf_added.contains("PERFMON"),
                "deploy/{}",
                r.dir
            );
        } else {
            assert!(
                bpf_added.is_empty(),
                "deploy/{}: {bpf_added:?} only for eBPF",
                r.dir
            );
        }
        let unexpected: Vec<_> = added
            .iter()
            .filter(|c| !NETFILTER_CAPS.contains(c) && !BPF_CAPS.contains(c))
            .collect();
        assert!(
            unexpected.is_empty(),
            "deploy/{}: needless {unexpected:?}",
            r.dir
        );
        assert_eq!(security["readOnlyRootFilesystem"], true, "deploy/{}", r.dir);
        if !added.contains("SYS_ADMIN") {
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "deploy/{}",
                r.dir
            );
        }
    }
}

#[test]
fn no_container_is_privileged() {
    let (agents, cleanup) = renders();
    for r in agents.iter().chain([cleanup]) {
        for daemonset in r.resources.iter().filter(|d| d["kind"] == "DaemonSet") {
            let pod = &daemonset["spec"]["template"]["spec"];
            for c in items(&pod["containers"])
                .iter()
                .chain(items(&pod["initContainers"]))
            {
                assert_ne!(
                    c["securityContext"]["privileged"], true,
                    "deploy/{}: {}",
                    r.dir, c["name"]
                );
            }
        }
    }
}

#[test]
fn only_ebpf_mounts_the_host_bpffs_and_the_pins_live_inside_it() {
    let (agents, _) = renders();
    for r in agents {
        let pod = r.pod_spec("masq");
        let bpffs_volumes: Vec<&str> = items(&pod["volumes"])
            .iter()
            .filter(|v| v["hostPath"]["path"] == BPFFS)
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let mounted_at: Vec<&str> = items(&r.agent()["volumeMounts"])
            .iter()
            .filter(|m| bpffs_volumes.iter().any(|v| m["name"] == *v))
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        if r.datapath == "ebpf" {
            assert_eq!(mounted_at, [BPFFS], "deploy/{}: host bpffs", r.dir);
            assert!(Path::new(masq_datapath::names::BPF_PIN_DIR).starts_with(BPFFS));
        } else {
            assert!(
                mounted_at.is_empty(),
                "deploy/{}: bpffs without eBPF",
                r.dir
            );
        }
    }
}

#[test]
fn agent_runs_on_every_node_without_api_access() {
    let (agents, _) = renders();
    for r in agents {
        let daemonset = r.find("DaemonSet", "masq");
        let pod = r.pod_spec("masq");
        assert_eq!(pod["hostNetwork"], true, "deploy/{}", r.dir);
        assert_eq!(
            pod["priorityClassName"], "system-node-critical",
            "deploy/{}",
            r.dir
        );
        assert!(
            items(&pod["tolerations"])
                .iter()
                .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
            "deploy/{}: must tolerate every taint",
            r.dir
        );
        assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "deploy/{}",
            r.dir
        );
        let account = r.find(
            "ServiceAccount",
            pod["serviceAccountName"].as_str().unwrap(),
        );
        assert_eq!(account["automountServiceAccountToken"], false);
        let rbac = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];
        assert!(!r
            .resources
            .iter()
            .any(|x| rbac.iter().any(|k| x["kind"] == *k)));
    }
}

#[test]
fn metrics_service_and_pod_monitor_reach_the_agent_port() {
    let (agents, _) = renders();
    let r = agents.iter().find(|r| r.dir == "overlays/metrics").unwrap();
    let agent = r.agent();
    let flags = flags(agent, "agent");
    let (_, port) =
        split_addr(flag_value(&flags, "--metrics-addr").unwrap_or(DEFAULT_METRICS_ADDR));
    let pod_labels = &r.find("DaemonSet", "masq")["spec"]["template"]["metadata"]["labels"];
    let selects_agent = |selector: &Value| {
        let selector = selector.as_object().expect("a label selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels[k] == *v)
    };

    let service = r.find("Service", "masq-metrics");
    assert!(selects_agent(&service["spec"]["selector"]));
    let service_port = &items(&service["spec"]["ports"])[0];
    assert_eq!(resolve_port(agent, &service_port["targetPort"]), port);

    let monitor = r.find("PodMonitor", "masq");
    assert!(selects_agent(&monitor["spec"]["selector"]["matchLabels"]));
    for endpoint in items(&monitor["spec"]["podMetricsEndpoints"]) {
        assert_eq!(resolve_port(agent, &endpoint["port"]), port);
        assert_eq!(endpoint["path"], "/metrics");
    }
}

#[test]
fn shipped_config_map_passes_masq_validate() {
    let (agents, _) = renders();
    let config = agents[0].find("ConfigMap", CONFIG_MAP)["data"][CONFIG_KEY]
        .as_str()
        .unwrap();
    // The same file with one bad entry must fail, or a validator that accepts anything passes.
    let broken = format!("{config}\nnonMasqueradeCIDRs: [10.0.0.1/8]\n");
    for (name, text, valid) in [("shipped", config, true), ("broken", &broken, false)] {
        let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-config-{name}"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(MASQ)
            .arg("validate")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            valid,
            "masq validate on the {name} ConfigMap ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn cleanup_holds_what_every_datapath_installs() {
    let (_, cleanup) = renders();
    let pod = cleanup.pod_spec("masq-cleanup");
    let init = container(pod, "initContainers", "cleanup");
    let added = string_set(&init["securityContext"]["capabilities"]["add"]);
    for cap in NETFILTER_CAPS.iter().chain(BPF_CAPS) {
        assert!(
            added.contains(cap),
            "masq cleanup needs {cap} to remove what eBPF installed"
        );
    }
    assert!(items(&init["volumeMounts"])
        .iter()
        .any(|m| m["mountPath"] == BPFFS));
    assert_eq!(pod["hostNetwork"], true);
}

#[test]
fn image_runs_masq_with_the_tools_its_datapaths_call() {
    // The DaemonSets pass only `args`, so the image's entrypoint must be masq itself.
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let runtime_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime_stage.contains(r#"ENTRYPOINT ["/usr/local/bin/masq"]"#));
    for package in ["nftables", "iptables"] {
        assert!(
            runtime_stage.contains(&format!(" {package}")),
            "the runtime image lacks {package}"
        );
    }
    // The builder's toolchain is the workspace's.
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("workspace rust-version")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={rust_version}\n")),
        "Dockerfile builds with another Rust than {rust_version}"
    );
}
