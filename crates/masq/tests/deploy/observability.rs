//! The agent's admin port seen from the cluster: kubelet's probes hit `/healthz` and `/readyz`
//! where `--metrics-addr` listens, and the metrics overlay's Service and PodMonitor reach it.

use serde_json::Value;
use std::net::IpAddr;

use crate::manifests::{flag_value, flags, items, renders, resolve_port, split_addr};
use crate::DEFAULT_METRICS_ADDR;

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
