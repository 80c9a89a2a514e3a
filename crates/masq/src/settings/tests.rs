//! The flags' checks: every problem reported, one line each, naming the flag.

use clap::Parser;

use super::*;
use crate::flags::{Cli, Command};

fn agent(args: &[&str]) -> Result<AgentSettings, String> {
    let cli = Cli::try_parse_from(["masq", "agent"].iter().chain(args)).unwrap();
    let Command::Agent(agent) = cli.command else {
        panic!("not agent")
    };
    agent.settings().map_err(|e| e.to_string())
}

#[test]
fn defaults_convert() {
    let settings = agent(&[]).unwrap();
    assert_eq!(settings.metrics_addr, "127.0.0.1:9710".parse().unwrap());
    assert_eq!(settings.config.node, NodeSettings::default());
    assert_eq!(settings.config.parse_options, ParseOptions::default());
}

#[test]
fn every_flag_converts() {
    let settings = agent(&[
        "--enable-ipv6",
        "--rfc1918-defaults",
        "--pod-cidr=10.244.0.0/16",
        "--pod-cidr=fd00:10::/64",
        "--native-routing-cidr=10.0.0.0/8",
        "--snat-ip=192.0.2.10",
        "--port-range=32768-60999",
        "--masq-chain=MASQ",
        "--metrics-addr=localhost:9000",
        "--interfaces=eth0,eth1",
        "--egress-interface=eth0",
        "--egress-mark=0x20000",
        "--egress-rule-priority=900",
        "--egress-table=100",
        "--datapath=nftables",
        "--log-format=json",
    ])
    .unwrap();
    let node = &settings.config.node;
    assert_eq!(node.pod_cidrs.len(), 2);
    assert_eq!(
        node.native_routing_cidr,
        Some("10.0.0.0/8".parse().unwrap())
    );
    assert_eq!(node.snat_ips, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        node.port_ranges,
        [masq_datapath::PortRange {
            first: 32768,
            last: 60999
        }]
    );
    assert_eq!(node.iptables_chain, "MASQ");
    assert_eq!(node.egress_interface.as_deref(), Some("eth0"));
    assert_eq!(
        node.egress_routing,
        Some(EgressRouting {
            mark: 0x20000,
            rule_priority: 900,
            table: 100
        })
    );
    assert!(node.enable_ipv6);
    assert_eq!(
        settings.config.parse_options.default_cidrs,
        DefaultCidrs::Rfc1918
    );
    assert_eq!(settings.metrics_addr, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(settings.interface_names, ["eth0", "eth1"]);
    assert_eq!(settings.datapath, DatapathChoice::Nftables);
    assert_eq!(settings.log_format, LogFormat::Json);
}

#[test]
fn every_bad_flag_is_reported_with_its_value() {
    let error = agent(&[
        "--pod-cidr=10.244.1.5/16",
        "--pod-cidr=fd00::/64",
        "--native-routing-cidr=nope",
        "--snat-ip=1.2.3",
        "--port-range=60999-1024",
        "--masq-chain=POSTROUTING",
        "--metrics-addr=9710",
        "--interfaces=eth0,this-name-is-far-too-long",
    ])
    .unwrap_err();
    let lines: Vec<&str> = error.lines().collect();
    let expected = [
        "--pod-cidr: \"10.244.1.5/16\" has host bits set; did you mean 10.244.0.0/16?",
        "--pod-cidr: \"fd00::/64\" is an IPv6 CIDR but IPv6 masquerading is off; add --enable-ipv6",
        "--native-routing-cidr: \"nope\" is not a CIDR",
        "--snat-ip: \"1.2.3\" is not an IP address",
        "--port-range: \"60999-1024\": \"60999-1024\" is empty",
        "--masq-chain: \"POSTROUTING\" is a built-in chain or target",
        "--metrics-addr: \"9710\" is not HOST:PORT",
        "--interfaces: \"this-name-is-far-too-long\" is not an interface name",
    ];
    assert_eq!(lines.len(), expected.len(), "{error}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}"
        );
    }
}

#[test]
fn egress_routing_flags() {
    assert_eq!(
        agent(&["--egress-mark=0"])
            .unwrap()
            .config
            .node
            .egress_routing,
        None
    );
    assert_eq!(egress_mark_flag("4096"), Ok(0x1000));
    assert_eq!(egress_table_flag("main"), Ok(254));
    for bad in ["", "0x", "-1", "0x1_0000_0000", "mark"] {
        assert!(egress_mark_flag(bad).is_err(), "{bad:?}");
    }
    for bad in ["0", "local", "-3"] {
        assert!(egress_table_flag(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn nat_table_flags() {
    let node = agent(&[]).unwrap().config.node;
    assert_eq!(node.nat, NatSettings::default());
    let node = agent(&[
        "--nat-table-size=4096",
        "--nat-timeout-tcp-syn=5s",
        "--nat-timeout-udp-replied=5m",
    ])
    .unwrap()
    .config
    .node;
    assert_eq!(node.nat.table_size, 4096);
    assert_eq!(node.nat.timeouts.tcp_syn, Duration::from_secs(5));
    assert_eq!(node.nat.timeouts.udp_replied, Duration::from_secs(300));
    let error = agent(&[
        "--nat-table-size=10",
        "--nat-timeout-tcp-syn=soon",
        "--nat-timeout-udp=500ms",
    ])
    .unwrap_err();
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(lines.len(), 3, "{error}");
    assert!(
        lines[0].starts_with("--nat-table-size: 10 is below"),
        "{error}"
    );
    assert!(
        lines[1].starts_with("--nat-timeout-tcp-syn: \"soon\" is not a duration"),
        "{error}"
    );
    assert!(
        lines[2].starts_with("--nat-timeout-udp: \"500ms\" is under"),
        "{error}"
    );
}

#[test]
fn chain_names() {
    assert!(chain_flag("IP-MASQ-AGENT").is_ok());
    for bad in ["", "-X", "A B", "RETURN", &"C".repeat(29)] {
        assert!(chain_flag(bad).is_err(), "{bad:?}");
    }
}
