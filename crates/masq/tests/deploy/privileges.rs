//! What the agent may do on the node: the least capabilities each datapath needs, no privileged
//! container, the host bpffs for eBPF only, no API access, and a cleanup that can remove what
//! every datapath installs.

use std::collections::BTreeSet;
use std::path::Path;

use crate::manifests::{container, items, renders, string_set};
use crate::{BPFFS, BPF_CAPS, NETFILTER_CAPS};

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
