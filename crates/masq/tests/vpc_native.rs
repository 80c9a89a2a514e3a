//! Issue 8 end to end: the real `masq agent` on a VPC-native node (masq-testbed's
//! `VpcTopology`), once per datapath. The pod's address lives on the node's secondary
//! interface and its policy route leaves there; with masq, traffic to the internet leaves through
//! the primary interface with the primary address, VPC traffic keeps the pod's route and
//! address, an open connection survives `kill -9` and a restart, and `masq cleanup` removes the
//! marks, the rule, the chains and the programs (eBPF: on the egress interface and on both
//! secondary interfaces, pinned on a bpffs private to the test's thread). Needs root, `nft`,
//! `iptables-nft` and `ping`; skips with a printed reason otherwise. Only the test's own
//! namespaces are touched.
//!
//! Dual stack (issue 17): module `dual_stack`, the same node with IPv6 pods.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use masq_agent::status::Status;
use masq_datapath::ebpf::{attach, Direction};
use masq_testbed::probe::TcpSession;
use masq_testbed::vpc::{PRIMARY_IF, SECONDARY2_IF, SECONDARY_IF};
use masq_testbed::{vpc_addr, AgentProcess, ConfigMapDir, PrivateBpffs, Probes, VpcTopology};

// Not `tests/dual_stack/` (agent_e2e's): a directory of this file's own.
#[path = "vpc_native/dual_stack.rs"]
mod dual_stack;

const PORT: u16 = 8080;
const PRIMARY: IpAddr = IpAddr::V4(vpc_addr::PRIMARY);
const POD: IpAddr = IpAddr::V4(vpc_addr::POD);
const POD2: IpAddr = IpAddr::V4(vpc_addr::POD2);
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The VPC keeps pod IPs; the internet (TEST-NET-3) is masqueraded.
const CONFIG: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_masq"))
}

struct Bed {
    topology: VpcTopology,
    internet: Probes,
    vpc: Probes,
    config: ConfigMapDir,
    /// `--bpf-pin-dir DIR` for the eBPF datapath.
    pin_dir_args: Vec<String>,
}

impl Bed {
    fn new(bpffs: Option<&PrivateBpffs>) -> Bed {
        masq_testbed::netns::sweep_stale();
        let topology = VpcTopology::new().unwrap();
        Bed::on(
            topology,
            &[vpc_addr::INTERNET.into()],
            &[vpc_addr::VPC_PEER.into()],
            CONFIG,
            bpffs,
        )
    }

    /// `topology` with probes on `internet` and `vpc` (the hosts of each side) and `config`.
    fn on(
        topology: VpcTopology,
        internet: &[IpAddr],
        vpc: &[IpAddr],
        config: &str,
        bpffs: Option<&PrivateBpffs>,
    ) -> Bed {
        let internet = Probes::start(&topology.internet, internet, PORT).unwrap();
        let vpc = Probes::start(&topology.vpc, vpc, PORT).unwrap();
        Bed {
            topology,
            internet,
            vpc,
            config: ConfigMapDir::with(config).unwrap(),
            pin_dir_args: bpffs
                .map(|fs| {
                    vec![
                        "--bpf-pin-dir".to_string(),
                        fs.pin_dir().to_string_lossy().into_owned(),
                    ]
                })
                .unwrap_or_default(),
        }
    }

    fn start_agent(&self, datapath: &str, log: &str) -> AgentProcess {
        self.start_agent_with(datapath, log, &[])
    }

    /// An agent with `extra` flags besides the usual ones.
    fn start_agent_with(&self, datapath: &str, log: &str, extra: &[&str]) -> AgentProcess {
        let args: Vec<String> = [
            "--config",
            &self.config.config_path().to_string_lossy(),
            "--datapath",
            datapath,
            "--pod-cidr",
            vpc_addr::POD_CIDR,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(self.pin_dir_args.iter().cloned())
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        let log = self.config.config_path().with_file_name(log);
        let mut agent = AgentProcess::start(&self.topology.node, binary(), &args, &log).unwrap();
        agent.wait_ready(&self.topology.node, READY_WITHIN).unwrap();
        agent
    }

    fn status(&self) -> Status {
        let addr = masq_testbed::agent::METRICS_ADDR.parse().unwrap();
        let (_, body) = masq_testbed::agent::get(&self.topology.node, addr, "/status")
            .unwrap()
            .expect("the agent answers /status");
        serde_json::from_str(&body).unwrap()
    }

    fn to_internet(&self) -> anyhow::Result<IpAddr> {
        self.to_internet_from(&self.topology.pod)
    }

    fn to_internet_from(&self, pod: &masq_testbed::Netns) -> anyhow::Result<IpAddr> {
        agreed(&self.internet, pod, vpc_addr::INTERNET.into())
    }

    fn to_vpc(&self, pod: &masq_testbed::Netns) -> IpAddr {
        agreed(&self.vpc, pod, vpc_addr::VPC_PEER.into()).unwrap()
    }

    fn tx_packets(&self, interface: &str) -> u64 {
        let text = self
            .topology
            .node
            .ip(&["-s", "-j", "link", "show", "dev", interface])
            .unwrap();
        let links: serde_json::Value = serde_json::from_str(&text).unwrap();
        links[0]["stats64"]["tx"]["packets"].as_u64().unwrap()
    }

    /// Egress routing follows the uplinks: when the secondary interfaces lose their default
    /// routes nothing is left to route around, so the marks, the rule and the steering go
    /// (they would only cost); when the routes come back, so do they, and the pods reach the
    /// internet through the primary interface again.
    fn uplinks_go_and_come_back(&self, datapath: &str) {
        let enis = [
            (SECONDARY_IF, vpc_addr::VPC_GATEWAY, vpc_addr::ENI_TABLE),
            (SECONDARY2_IF, vpc_addr::VPC_GATEWAY2, vpc_addr::ENI_TABLE2),
        ];
        let node = &self.topology.node;
        for (_, _, table) in enis {
            node.ip(&["route", "del", "default", "table", table])
                .unwrap();
        }
        self.wait_for(datapath, "egress routing to go", |bed| {
            bed.status().egress.is_none() && bed.masq_rules().is_empty()
        });
        if datapath == "ebpf" {
            assert!(
                self.bpf_hooks().iter().all(|h| !h.contains("steer")),
                "{:?}",
                self.bpf_hooks()
            );
        }
        for (dev, gateway, table) in enis {
            let gateway = gateway.to_string();
            let add = [
                "route", "add", "default", "via", &gateway, "dev", dev, "onlink",
            ];
            node.ip(&[&add[..], &["table", table]].concat()).unwrap();
        }
        self.wait_for(datapath, "egress routing to come back", |bed| {
            bed.status().egress.is_some() && !bed.masq_rules().is_empty()
        });
        assert_eq!(self.to_internet().unwrap(), PRIMARY, "{datapath}");
    }

    /// Polls `done` for up to 5 s (the agent follows a route change within about a second).
    fn wait_for(&self, datapath: &str, what: &str, done: impl Fn(&Bed) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "{datapath}: waited 5 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn masq_rules(&self) -> String {
        let text = self.topology.node.ip(&["rule", "show"]).unwrap();
        text.lines()
            .filter(|l| l.contains("proto 109"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The node's interface hooks running one of masq's programs (`eth1 steer`), sorted.
    fn bpf_hooks(&self) -> Vec<String> {
        self.topology
            .node
            .enter(|| {
                let mut hooks = Vec::new();
                for iface in [PRIMARY_IF, SECONDARY_IF, SECONDARY2_IF] {
                    for dir in Direction::ALL {
                        if attach::is_attached(iface, dir) {
                            hooks.push(format!("{iface} {}", dir.as_str()));
                        }
                    }
                }
                hooks
            })
            .unwrap()
    }

    /// `masq <command>` in the node namespace, with the pin directory; its stdout.
    fn masq(&self, command: &[&str]) -> String {
        let output = self
            .topology
            .node
            .command(&binary().to_string_lossy())
            .args(command)
            .args(&self.pin_dir_args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "masq {}: {}",
            command.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The source `host` (served by `probes`) sees from `pod` over TCP, UDP and ping; fails if they
/// disagree.
fn agreed(probes: &Probes, pod: &masq_testbed::Netns, host: IpAddr) -> anyhow::Result<IpAddr> {
    let seen = probes.sources(pod, host)?;
    seen.agreed()
        .ok_or_else(|| anyhow::anyhow!("protocols disagree: {seen:?}"))
}

/// The eBPF hooks of the VPC node: egress and ingress on the egress interface, the steering
/// program and ingress on each secondary uplink (ingress sees the flows that come in there).
const STEERED_HOOKS: [&str; 6] = [
    "eth0 egress",
    "eth0 ingress",
    "eth1 ingress",
    "eth1 steer",
    "eth2 ingress",
    "eth2 steer",
];

fn run(datapath: &str) {
    masq_testbed::require(&["nft", "iptables-nft", "ping"]);
    // eBPF: the pins live on a bpffs of this thread's own (the agents inherit it).
    let bpffs = (datapath == "ebpf").then(|| PrivateBpffs::mount().unwrap());
    let bed = Bed::new(bpffs.as_ref());
    assert!(
        bed.to_internet().is_err(),
        "without masq the pod cannot reach the internet"
    );

    // The node still filters reverse paths strictly: the agent says what to change.
    let agent = bed.start_agent(datapath, "agent-1.log");
    let status = bed.status();
    let egress = status.egress.expect("egress routing is on");
    assert_eq!(egress.interface, PRIMARY_IF);
    assert_eq!(
        (egress.mark.as_str(), egress.rule_priority, egress.table),
        ("0x1000", 1000, 254)
    );
    let warning = egress.warning.expect("strict rp_filter is reported");
    assert!(warning.contains("src_valid_mark"), "{warning}");
    if bpffs.is_some() {
        assert_eq!(
            bed.bpf_hooks(),
            STEERED_HOOKS,
            "the secondary uplinks (default routes in tables 2 and 3) get the steering program"
        );
    }

    assert!(
        bed.to_internet().is_err(),
        "{datapath}: strict rp_filter alone drops the replies"
    );
    bed.topology.allow_marked_replies().unwrap();
    assert_eq!(
        bed.to_internet().unwrap(),
        PRIMARY,
        "{datapath}: TCP, UDP and ping leave with the primary address"
    );
    // Each pod's VPC traffic keeps its own secondary interface; its internet traffic does not.
    let pods = [
        (&bed.topology.pod, POD, masq_testbed::vpc::SECONDARY_IF),
        (&bed.topology.pod2, POD2, masq_testbed::vpc::SECONDARY2_IF),
    ];
    for (pod, ip, secondary) in pods {
        assert_eq!(
            bed.to_internet_from(pod).unwrap(),
            PRIMARY,
            "{datapath}: {ip}"
        );
        let before = bed.tx_packets(secondary);
        assert_eq!(bed.to_vpc(pod), ip, "{datapath}: the VPC still sees {ip}");
        assert!(
            bed.tx_packets(secondary) > before,
            "{datapath}: VPC traffic of {ip} still leaves through {secondary}"
        );
    }

    // An open connection keeps its path and translation across a crash and a restart.
    let server = SocketAddr::new(vpc_addr::INTERNET.into(), PORT);
    let mut session = TcpSession::connect(&bed.topology.pod, server).unwrap();
    assert_eq!(session.observed_source().unwrap().ip(), PRIMARY);
    if bpffs.is_some() {
        let listed = bed.masq(&["nat", "list"]);
        let pod_flow = format!("TCP OUT {POD}:");
        let line = listed
            .lines()
            .find(|l| l.starts_with(&pod_flow) && l.contains(&format!("-> {server} ")))
            .unwrap_or_else(|| panic!("no NAT entry of the session in\n{listed}"));
        assert!(
            line.contains(&format!("XLATE_SRC {PRIMARY}:")) && line.ends_with(" steered"),
            "{line}"
        );
    }
    agent.kill9();
    assert_eq!(session.observed_source().unwrap().ip(), PRIMARY);
    let agent = bed.start_agent(datapath, "agent-2.log");
    assert_eq!(session.observed_source().unwrap().ip(), PRIMARY);
    let egress = bed.status().egress.expect("egress routing is on");
    assert_eq!(egress.warning, None, "src_valid_mark is set now");
    assert_eq!(bed.to_internet().unwrap(), PRIMARY);
    bed.uplinks_go_and_come_back(datapath);
    agent.terminate().unwrap();

    bed.masq(&["cleanup"]);
    assert_eq!(bed.masq_rules(), "", "{datapath}: cleanup left a rule");
    let ruleset = bed.topology.node.exec("nft", &["list", "ruleset"]).unwrap();
    assert!(
        !ruleset.contains("masq"),
        "{datapath}: cleanup left\n{ruleset}"
    );
    let save = bed.topology.node.exec("iptables-nft-save", &[]).unwrap();
    assert!(
        !save.contains("IP-MASQ"),
        "{datapath}: cleanup left\n{save}"
    );
    assert_eq!(
        bed.bpf_hooks(),
        Vec::<String>::new(),
        "{datapath}: cleanup left programs"
    );
    if let Some(fs) = &bpffs {
        assert!(!fs.pin_dir().exists(), "{datapath}: cleanup left the pins");
    }
    assert!(
        bed.to_internet().is_err(),
        "{datapath}: after cleanup the internet is out of reach again"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn nftables_routes_masqueraded_traffic_through_the_primary_interface() {
    run("nftables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn iptables_routes_masqueraded_traffic_through_the_primary_interface() {
    run("iptables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ebpf_steers_masqueraded_traffic_to_the_primary_interface() {
    run("ebpf");
}

/// Issue 13, item 7: `--egress-interface` wins over `--interfaces`. The operator lists every
/// uplink; a listed secondary uplink (eth1, the pod's own) must be steered to the primary and
/// translated to its address, not translated in place to eth1's address, where nothing leads to
/// the internet.
fn run_with_every_uplink_listed(datapath: &str) {
    masq_testbed::require(&["nft", "iptables-nft", "ping"]);
    let bpffs = (datapath == "ebpf").then(|| PrivateBpffs::mount().unwrap());
    let bed = Bed::new(bpffs.as_ref());
    bed.topology.allow_marked_replies().unwrap();
    let interfaces = format!("{PRIMARY_IF},{SECONDARY_IF}");
    let agent = bed.start_agent_with(
        datapath,
        "agent-listed.log",
        &[
            "--egress-interface",
            PRIMARY_IF,
            "--interfaces",
            &interfaces,
        ],
    );
    assert_eq!(bed.status().egress.unwrap().interface, PRIMARY_IF);
    if bpffs.is_some() {
        assert_eq!(
            bed.bpf_hooks(),
            STEERED_HOOKS,
            "eth1 is steered, not translated in place"
        );
    }
    for (pod, ip) in [(&bed.topology.pod, POD), (&bed.topology.pod2, POD2)] {
        assert_eq!(
            bed.to_internet_from(pod).unwrap(),
            PRIMARY,
            "{datapath}: {ip} leaves through the primary with its address"
        );
        assert_eq!(bed.to_vpc(pod), ip, "{datapath}: the VPC still sees {ip}");
    }
    agent.terminate().unwrap();
    bed.masq(&["cleanup"]);
    assert_eq!(
        bed.bpf_hooks(),
        Vec::<String>::new(),
        "{datapath}: cleanup left programs"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn nftables_with_every_uplink_listed_routes_through_the_egress_interface() {
    run_with_every_uplink_listed("nftables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn iptables_with_every_uplink_listed_routes_through_the_egress_interface() {
    run_with_every_uplink_listed("iptables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ebpf_with_every_uplink_listed_steers_to_the_egress_interface() {
    run_with_every_uplink_listed("ebpf");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn nftables_dual_stack_routes_ipv6_through_the_primary_interface() {
    dual_stack::run("nftables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn iptables_dual_stack_routes_ipv6_through_the_primary_interface() {
    dual_stack::run("iptables");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ebpf_dual_stack_steers_ipv6_to_the_primary_interface() {
    dual_stack::run("ebpf");
}
