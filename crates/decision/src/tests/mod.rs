//! One unit test per reason of docs/decision.md, and the compiled form. The property tests
//! against linear scans are in `properties.rs`; `masqueradeCIDRs` and the longest-prefix verdict
//! in `forced.rs`.

use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::Config;

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn verdict(action: Action, reason: Reason, matched: Option<&str>) -> Verdict {
    Verdict {
        action,
        reason,
        matched: matched.map(net),
    }
}

fn config_with(cidrs: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: cidrs.iter().map(|c| net(c)).collect(),
        ..Config::default()
    }
}

// === one test per reason ===

#[test]
fn non_masquerade_src_wins_over_everything() {
    let config = Config {
        non_masquerade_src_cidrs: vec![net("10.244.0.0/16"), net("10.244.5.0/24")],
        non_masquerade_cidrs: vec![],
        ..Config::default()
    };
    let policy = Policy::new(&config, &NodeContext::default());
    assert_eq!(
        policy.decide(Some(ip("10.244.5.7")), ip("8.8.8.8")),
        verdict(
            Action::Keep,
            Reason::NonMasqueradeSrc,
            Some("10.244.5.0/24")
        )
    );
    assert_eq!(
        policy.decide(Some(ip("10.244.6.7")), ip("8.8.8.8")).matched,
        Some(net("10.244.0.0/16"))
    );
    // Without a source the source steps are skipped.
    assert_eq!(policy.decide(None, ip("8.8.8.8")).reason, Reason::Default);
}

#[test]
fn not_a_pod_outside_pod_cidrs_or_from_the_node_without_them() {
    let node = NodeContext {
        pod_cidrs: vec![net("10.244.0.0/16")],
        local_addrs: vec![ip("10.244.0.1"), ip("192.168.1.10")],
        native_routing_cidr: None,
    };
    let policy = Policy::new(&config_with(&[]), &node);
    assert_eq!(
        policy.decide(Some(ip("172.17.0.2")), ip("8.8.8.8")),
        verdict(Action::Keep, Reason::NotAPod, None)
    );
    // With --pod-cidr a pod is exactly a source inside it (docs/decision.md), as the datapaths
    // match it: a node address inside the pod CIDR counts as a pod.
    assert_eq!(
        policy.decide(Some(ip("10.244.0.1")), ip("8.8.8.8")).action,
        Action::Masquerade
    );
    // A node address outside it is not a pod.
    assert_eq!(
        policy.decide(Some(ip("192.168.1.10")), ip("8.8.8.8")),
        verdict(Action::Keep, Reason::NotAPod, None)
    );
    assert_eq!(
        policy.decide(Some(ip("10.244.3.3")), ip("8.8.8.8")).action,
        Action::Masquerade
    );
    // Without --pod-cidr every source but the node's own addresses is a pod.
    let no_pod_cidrs = NodeContext {
        pod_cidrs: vec![],
        ..node
    };
    let policy = Policy::new(&config_with(&[]), &no_pod_cidrs);
    assert_eq!(
        policy.decide(Some(ip("172.17.0.2")), ip("8.8.8.8")).action,
        Action::Masquerade
    );
    assert_eq!(
        policy.decide(Some(ip("192.168.1.10")), ip("8.8.8.8")),
        verdict(Action::Keep, Reason::NotAPod, Some("192.168.1.10/32"))
    );
}

#[test]
fn link_local_is_kept_unless_its_flag_is_set() {
    let policy = Policy::new(&config_with(&[]), &NodeContext::default());
    assert_eq!(
        policy.decide(None, ip("169.254.169.254")),
        verdict(Action::Keep, Reason::LinkLocal, Some("169.254.0.0/16"))
    );
    assert_eq!(
        policy.decide(None, ip("fe80::1")),
        verdict(Action::Keep, Reason::LinkLocal, Some("fe80::/10"))
    );
    let config = Config {
        masq_link_local: true,
        ..config_with(&[])
    };
    let policy = Policy::new(&config, &NodeContext::default());
    assert_eq!(
        policy.decide(None, ip("169.254.169.254")).action,
        Action::Masquerade
    );
    // The IPv6 flag is separate.
    assert_eq!(policy.decide(None, ip("fe80::1")).reason, Reason::LinkLocal);
    let config = Config {
        masq_link_local_ipv6: true,
        ..config_with(&[])
    };
    let policy = Policy::new(&config, &NodeContext::default());
    assert_eq!(
        policy.decide(None, ip("fe80::1")).action,
        Action::Masquerade
    );
    assert_eq!(
        policy.decide(None, ip("169.254.1.1")).reason,
        Reason::LinkLocal
    );
}

#[test]
fn non_masquerade_cidr_reports_the_most_specific_match() {
    let policy = Policy::new(
        &config_with(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "fd00::/8"]),
        &NodeContext::default(),
    );
    assert_eq!(
        policy.decide(None, ip("10.1.2.3")),
        verdict(Action::Keep, Reason::NonMasqueradeCidr, Some("10.1.2.0/24"))
    );
    assert_eq!(
        policy.decide(None, ip("10.1.9.9")).matched,
        Some(net("10.1.0.0/16"))
    );
    assert_eq!(
        policy.decide(None, ip("10.9.9.9")).matched,
        Some(net("10.0.0.0/8"))
    );
    assert_eq!(
        policy.decide(None, ip("fd12::1")).matched,
        Some(net("fd00::/8"))
    );
    assert_eq!(
        policy.decide(None, ip("11.0.0.1")).action,
        Action::Masquerade
    );
}

#[test]
fn native_routing_cidr_is_one_more_non_masquerade_destination() {
    let node = NodeContext {
        native_routing_cidr: Some(net("100.96.0.0/11")),
        ..NodeContext::default()
    };
    let policy = Policy::new(&config_with(&[]), &node);
    assert_eq!(
        policy.decide(None, ip("100.100.1.1")),
        verdict(
            Action::Keep,
            Reason::NonMasqueradeCidr,
            Some("100.96.0.0/11")
        )
    );
}

#[test]
fn local_destinations_are_kept() {
    let node = NodeContext {
        local_addrs: vec![ip("203.0.113.7"), ip("2001:db8::7")],
        ..NodeContext::default()
    };
    let policy = Policy::new(&config_with(&[]), &node);
    assert_eq!(
        policy.decide(None, ip("203.0.113.7")),
        verdict(Action::Keep, Reason::Local, Some("203.0.113.7/32"))
    );
    assert_eq!(
        policy
            .decide(Some(ip("10.244.1.1")), ip("2001:db8::7"))
            .matched,
        Some(net("2001:db8::7/128"))
    );
}

#[test]
fn everything_else_is_masqueraded() {
    let policy = Policy::new(&Config::default(), &NodeContext::default());
    assert_eq!(
        policy.decide(Some(ip("10.244.1.5")), ip("8.8.8.8")),
        verdict(Action::Masquerade, Reason::Default, None)
    );
    assert_eq!(
        policy.decide(None, ip("2001:4860::8888")).action,
        Action::Masquerade
    );
}

#[test]
fn serialized_names_are_those_of_explain_json() {
    let json = serde_json::to_value(verdict(
        Action::Keep,
        Reason::NonMasqueradeCidr,
        Some("10.0.0.0/8"),
    ))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"action": "keep", "reason": "non-masquerade-cidr", "matched": "10.0.0.0/8"})
    );
    let names: Vec<String> = Reason::ALL
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "non-masquerade-src",
            "not-a-pod",
            "link-local",
            "non-masquerade-cidr",
            "local",
            "masquerade-cidr",
            "default"
        ]
    );
    assert_eq!(
        serde_json::to_value(Action::Masquerade).unwrap(),
        "masquerade"
    );
}

// === the compiled form ===

#[test]
fn compiled_lists_split_by_family_keep_the_written_order_and_collapse() {
    let config = Config {
        non_masquerade_cidrs: vec![
            net("10.1.0.0/16"),
            net("fd00::/8"),
            net("10.0.0.0/8"),
            net("10.1.0.0/16"),
        ],
        non_masquerade_src_cidrs: vec![net("fd10::/64")],
        masq_link_local_ipv6: true,
        ..Config::default()
    };
    let node = NodeContext {
        pod_cidrs: vec![net("10.244.0.0/16")],
        local_addrs: vec![ip("172.30.0.1"), ip("fd00::1")],
        native_routing_cidr: Some(net("100.96.0.0/11")),
    };
    let compiled = CompiledPolicy::compile(&config, &node);
    let v4 = &compiled.v4;
    assert_eq!(v4.family, Family::V4);
    assert_eq!(
        v4.destinations.keep.as_written(),
        [
            net("10.1.0.0/16"),
            net("10.0.0.0/8"),
            net("10.1.0.0/16"),
            net("100.96.0.0/11")
        ]
    );
    assert_eq!(
        v4.destinations.kept(),
        [net("10.0.0.0/8"), net("100.96.0.0/11")]
    );
    assert!(v4.source_exemptions.is_empty());
    assert_eq!(v4.pods, Pods::Cidrs(Cidrs::of(Family::V4, &node.pod_cidrs)));
    assert_eq!(
        v4.link_local,
        LinkLocal {
            range: net("169.254.0.0/16"),
            exempt: true
        }
    );
    assert_eq!(v4.local_addrs, [ip("172.30.0.1")]);
    let v6 = compiled.family(Family::V6);
    assert_eq!(v6.destinations.kept(), [net("fd00::/8")]);
    assert_eq!(v6.source_exemptions.as_written(), [net("fd10::/64")]);
    // Pod CIDRs of IPv4 only: no IPv6 source is a pod.
    assert_eq!(v6.pods, Pods::Cidrs(Cidrs::default()));
    assert!(!v6.link_local.exempt);
    assert_eq!(v6.link_local.range, net("fe80::/10"));
    // Without pod CIDRs every source but the node's own is a pod.
    let compiled = CompiledPolicy::compile(&config, &NodeContext::default());
    assert_eq!(compiled.v4.pods, Pods::AllButTheNode);
}

#[test]
fn host_bits_from_a_hand_built_context_are_cleared() {
    let node = NodeContext {
        native_routing_cidr: Some(net("10.96.3.4/12")),
        ..NodeContext::default()
    };
    let compiled = CompiledPolicy::compile(&config_with(&[]), &node);
    assert_eq!(compiled.v4.destinations.kept(), [net("10.96.0.0/12")]);
}

mod forced;
mod properties;
