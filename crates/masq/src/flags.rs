//! The command line as typed (docs/cli.md). These clap structs hold only what the user wrote;
//! [`crate::settings`] turns them into validated settings before anything runs, so a bad value
//! is reported with the flag's name and exit code 1, never a panic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default of `--metrics-addr`: loopback, so nothing is exposed unless asked for.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9710";

/// IP-masquerade agent for Kubernetes nodes: SNATs pod traffic leaving the cluster to the node
/// IP, except destinations listed in the ip-masq-agent ConfigMap.
#[derive(Debug, Parser)]
#[command(name = "masq", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: watch the config and keep the datapath in line with it.
    Agent(AgentArgs),
    /// Print the decision for each destination and the rule or CIDR that decided it.
    Explain(ExplainArgs),
    /// Check a config file: exit 0 when valid, else exit 1 listing every problem.
    Validate(ValidateArgs),
    /// Print the exact ruleset the agent would install, without installing it.
    Render(RenderArgs),
    /// Show the live state on this node: datapath, desired vs installed, last error, counters.
    Status(StatusArgs),
    /// The eBPF NAT table.
    Nat {
        /// What to do with it.
        #[command(subcommand)]
        command: NatCommand,
    },
    /// Remove everything masq installed (works without the config or knowing the datapath).
    Cleanup(CleanupArgs),
    /// Build a throwaway pod / node / internet topology in network namespaces and show which
    /// destinations were masqueraded; touches nothing outside those namespaces.
    Demo(DemoArgs),
}

/// `masq nat` subcommands.
#[derive(Debug, Subcommand)]
pub enum NatCommand {
    /// List the entries of the eBPF NAT table (like `cilium-dbg bpf nat list`).
    List(NatListArgs),
}

/// Flags that shape the config and the node's part of the decision; shared by `agent`,
/// `explain` and `render` so the three cannot disagree.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The ip-masq-agent config file (YAML or JSON); a missing file means the defaults.
    #[arg(long, value_name = "PATH", default_value = masq_config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Read every file whose name starts with `ip-masq` in this directory, merged, instead of
    /// --config (several ConfigMaps in one projected volume; see docs/config.md).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub config_dir: Option<PathBuf>,
    /// Masquerade IPv6 too, and accept IPv6 CIDRs in the config.
    #[arg(long)]
    pub enable_ipv6: bool,
    /// When the config has no nonMasqueradeCIDRs, use only the RFC 1918 ranges (the default of
    /// kubernetes-sigs/ip-masq-agent) instead of the 11 reserved ranges.
    #[arg(long)]
    pub rfc1918_defaults: bool,
    /// A pod CIDR (repeatable). When given, only sources inside these are masqueraded; without
    /// it, every source but the node's own addresses is.
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidrs: Vec<String>,
    /// One more non-masquerade destination that no config can remove (Cilium's
    /// ipv4NativeRoutingCIDR).
    #[arg(long, value_name = "CIDR")]
    pub native_routing_cidr: Option<String>,
    /// Translate to this source address instead of the egress interface's primary address.
    /// Repeatable: several addresses (one family, at most 32, each an address of the node)
    /// make a pool, and each pod's flows take the one a hash of its address picks.
    #[arg(long = "snat-ip", value_name = "IP")]
    pub snat_ips: Vec<String>,
    /// The pool is every global address of the egress interface (per family), followed as
    /// addresses come and go.
    #[arg(long, conflicts_with = "snat_ips")]
    pub snat_ips_from_interface: bool,
    /// Source ports for translated connections: a list of inclusive ranges
    /// (e.g. 1024-29999,32768-65535); default every port from 1024 but the NodePort range.
    /// `--to-ports` is kubernetes-sigs/ip-masq-agent's name for it.
    #[arg(long, visible_alias = "to-ports", value_name = "FIRST-LAST,...")]
    pub port_range: Option<String>,
    /// The cluster's NodePort range: never handed out as a translated source port unless
    /// --port-range lists it.
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767")]
    pub nodeport_range: String,
    /// Name of the iptables chain (the iptables datapath).
    #[arg(long, value_name = "NAME", default_value = masq_datapath::names::IPT_CHAIN)]
    pub masq_chain: String,
    /// Masqueraded traffic always leaves through this interface, with its address (default: the
    /// interface of the main table's default route).
    #[arg(long, value_name = "IF")]
    pub egress_interface: Option<String>,
    /// Firewall-mark bits that route masqueraded connections to the egress interface (hex or
    /// decimal); 0 turns egress routing off. See docs/vpc-native.md before changing it.
    #[arg(long, value_name = "BITS", default_value = "0x1000")]
    pub egress_mark: String,
    /// Priority of masq's `ip rule fwmark … lookup …`; must come before the CNI's per-pod rules.
    #[arg(long, value_name = "N", default_value_t = masq_datapath::EgressRouting::DEFAULT_RULE_PRIORITY)]
    pub egress_rule_priority: u32,
    /// Routing table marked connections look up (`main` or a number 1-4294967295); its default
    /// route must leave through the egress interface.
    #[arg(long, value_name = "TABLE", default_value = "main")]
    pub egress_table: String,
    /// The eBPF datapath's flow table.
    #[command(flatten)]
    pub nat: NatArgs,
}

/// The eBPF flow table: size and idle lifetimes by state (docs/ebpf.md, "Lifetimes and GC").
#[derive(Debug, Clone, Args)]
pub struct NatArgs {
    /// eBPF: flows the table holds, translated, kept and inbound together (each takes one entry
    /// per direction, about 200 bytes in all); a full table refuses new translated flows.
    #[arg(long, value_name = "N", default_value_t = masq_datapath::ebpf::DEFAULT_NAT_CAPACITY)]
    pub nat_table_size: u32,
    /// eBPF: idle lifetime of a TCP flow that has seen no reply.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub nat_timeout_tcp_syn: String,
    /// eBPF: idle lifetime of an established TCP flow.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub nat_timeout_tcp_established: String,
    /// eBPF: idle lifetime of a TCP flow after a FIN or RST (a new SYN reopens it).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub nat_timeout_tcp_closing: String,
    /// eBPF: idle lifetime of a UDP flow that has seen no reply.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub nat_timeout_udp: String,
    /// eBPF: idle lifetime of a UDP flow with replies.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub nat_timeout_udp_replied: String,
    /// eBPF: idle lifetime of an ICMP echo flow.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub nat_timeout_icmp: String,
}

/// `masq agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Config file and node flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Which datapath; `auto` tries ebpf, then nftables, then iptables.
    #[arg(long, value_enum, default_value_t = DatapathChoice::Auto)]
    pub datapath: DatapathChoice,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
    /// Interfaces to attach to, comma-separated (default: the interfaces of the default routes).
    #[arg(long, value_name = "IF,...", value_delimiter = ',')]
    pub interfaces: Vec<String>,
    /// Log line format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where the eBPF datapath pins its maps, programs and links (on a bpffs).
    #[arg(long, value_name = "DIR", default_value = masq_datapath::names::BPF_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
}

/// `masq explain`.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Config file and node flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The packet's source; without it the source steps are skipped (the source is a pod).
    #[arg(long, value_name = "IP")]
    pub src: Option<String>,
    /// An address of the node (repeatable): traffic to it is local, traffic from it is not a pod's.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Destination addresses to explain, in order.
    #[arg(value_name = "DST", required = true)]
    pub destinations: Vec<String>,
}

/// `masq validate`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["file", "config_dir"])))]
pub struct ValidateArgs {
    /// The config file to check (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Check every `ip-masq*` file of this directory and their merge, as the agent reads them
    /// with --config-dir.
    #[arg(long, value_name = "DIR", conflicts_with = "file")]
    pub config_dir: Option<PathBuf>,
    /// Accept IPv6 CIDRs, as the agent does with --enable-ipv6.
    #[arg(long)]
    pub enable_ipv6: bool,
}

/// `masq render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Config file and node flags.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Which ruleset to print.
    #[arg(long, value_enum)]
    pub datapath: RenderDatapath,
    /// eBPF: the agent's `--interfaces`, to show the hooks each one gets.
    #[arg(long, value_name = "IF,...", value_delimiter = ',')]
    pub interfaces: Vec<String>,
}

/// `masq status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// The agent's --metrics-addr, to ask for what only the agent knows (last config error).
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: String,
}

/// `masq nat list`.
#[derive(Debug, Clone, Args)]
pub struct NatListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where the eBPF datapath pins its maps, programs and links (on a bpffs).
    #[arg(long, value_name = "DIR", default_value = masq_datapath::names::BPF_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
}

/// `masq cleanup`.
#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// The iptables chain the agent used, if it was renamed.
    #[arg(long, value_name = "NAME", default_value = masq_datapath::names::IPT_CHAIN)]
    pub masq_chain: String,
    /// Where the eBPF datapath pins its maps, programs and links (on a bpffs).
    #[arg(long, value_name = "DIR", default_value = masq_datapath::names::BPF_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
}

/// `masq demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Which datapath the demo agent runs.
    #[arg(long, value_enum, default_value_t = DatapathChoice::Auto)]
    pub datapath: DatapathChoice,
}

/// `--datapath` of `agent` and `demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatapathChoice {
    /// ebpf if it can load, else nftables, else iptables.
    Auto,
    /// tc programs with masq's own NAT table.
    Ebpf,
    /// One nftables table owned by masq.
    Nftables,
    /// The kubernetes-sigs/ip-masq-agent chain, via iptables-restore.
    Iptables,
}

impl DatapathChoice {
    /// The backend asked for, or `None` for `auto`.
    #[allow(dead_code)] // For the agent and demo wiring, which pick the backend.
    pub fn kind(self) -> Option<masq_datapath::Kind> {
        match self {
            DatapathChoice::Auto => None,
            DatapathChoice::Ebpf => Some(masq_datapath::Kind::Ebpf),
            DatapathChoice::Nftables => Some(masq_datapath::Kind::Nftables),
            DatapathChoice::Iptables => Some(masq_datapath::Kind::Iptables),
        }
    }
}

/// `--datapath` of `render`: the backends whose rules are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderDatapath {
    /// The nftables table, as `nft -f` input.
    Nftables,
    /// The `iptables-restore --noflush` payload.
    Iptables,
    /// The eBPF maps' contents and the hooks of the programs.
    Ebpf,
}

impl RenderDatapath {
    /// The backend.
    pub fn kind(self) -> masq_datapath::Kind {
        match self {
            RenderDatapath::Nftables => masq_datapath::Kind::Nftables,
            RenderDatapath::Iptables => masq_datapath::Kind::Iptables,
            RenderDatapath::Ebpf => masq_datapath::Kind::Ebpf,
        }
    }
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn agent_defaults_are_those_of_the_spec() {
        let cli = Cli::try_parse_from(["masq", "agent"]).unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(
            agent.config.config,
            PathBuf::from("/etc/config/ip-masq-agent")
        );
        assert_eq!(agent.datapath, DatapathChoice::Auto);
        assert_eq!(agent.metrics_addr, "127.0.0.1:9710");
        assert_eq!(agent.config.masq_chain, "IP-MASQ-AGENT");
        assert_eq!(agent.log_format, LogFormat::Text);
    }

    #[test]
    fn repeatable_and_comma_separated_flags() {
        let cli = Cli::try_parse_from([
            "masq",
            "agent",
            "--pod-cidr",
            "10.244.0.0/16",
            "--pod-cidr=fd00::/64",
            "--interfaces",
            "eth0,eth1",
        ])
        .unwrap();
        let Command::Agent(agent) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(agent.config.pod_cidrs, ["10.244.0.0/16", "fd00::/64"]);
        assert_eq!(agent.interfaces, ["eth0", "eth1"]);
    }
}
