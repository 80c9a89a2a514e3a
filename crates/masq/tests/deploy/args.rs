//! The agent's arguments in the DaemonSets: every flag exists in `masq <subcommand> --help`,
//! each overlay selects its datapath, and every `$(VAR)` they use is defined.

use serde_json::Value;
use std::collections::BTreeSet;

use crate::manifests::{container, flag_value, flags, help_flags, items, renders};

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
