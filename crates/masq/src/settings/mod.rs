//! From what was typed ([`crate::flags`]) to validated settings. Every problem in the flags is
//! collected and reported together, one line each naming the flag and the value.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use masq_config::{DefaultCidrs, ParseOptions, Source};
use masq_datapath::ebpf::{NatSettings, NatTimeouts};
use masq_datapath::{EgressRouting, NodeSettings};

use crate::errors::InvalidInput;
use crate::flags::{AgentArgs, ConfigArgs, DatapathChoice, LogFormat, NatArgs};

/// [`ConfigArgs`] validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSettings {
    /// `--config` or `--config-dir`.
    pub source: Source,
    /// How to read the file (`--enable-ipv6`, `--rfc1918-defaults`).
    pub parse_options: ParseOptions,
    /// The node's part; `interfaces` is filled by `agent` only (from netlink).
    pub node: NodeSettings,
    /// What is allowed but probably not meant (e.g. a `--port-range` over the NodePort
    /// range), one line each, for the agent's log and the tools' standard error.
    pub warnings: Vec<String>,
}

/// [`AgentArgs`] validated: everything the agent needs from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// Config path, parse options and node settings (with `egress_interface` set).
    pub config: ConfigSettings,
    /// `--datapath`.
    pub datapath: DatapathChoice,
    /// `--metrics-addr`.
    pub metrics_addr: SocketAddr,
    /// `--interfaces`, in order; empty means the interfaces of the default routes. The agent
    /// resolves them into `NodeSettings::interfaces`.
    pub interface_names: Vec<String>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--bpf-pin-dir`.
    pub bpf_pin_dir: PathBuf,
}

/// Collects problems so every bad flag is reported, not only the first.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|problem| self.0.push(problem)).ok()
    }

    /// Like `check`, for a flag that can have several problems at once.
    fn check_all<T>(&mut self, result: Result<T, Vec<String>>) -> Option<T> {
        result.map_err(|problems| self.0.extend(problems)).ok()
    }

    fn finish<T>(self, value: T) -> Result<T, InvalidInput> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(InvalidInput::new(self.0))
        }
    }
}

impl ConfigArgs {
    /// How the config file is read.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions {
            enable_ipv6: self.enable_ipv6,
            default_cidrs: if self.rfc1918_defaults {
                DefaultCidrs::Rfc1918
            } else {
                DefaultCidrs::Reserved
            },
        }
    }

    /// Where the config comes from: `--config-dir`, else `--config`.
    pub fn source(&self) -> Source {
        match &self.config_dir {
            Some(dir) => Source::Dir(dir.clone()),
            None => Source::File(self.config.clone()),
        }
    }

    /// Parse options and node settings, every bad flag reported.
    pub fn settings(&self) -> Result<ConfigSettings, InvalidInput> {
        let mut problems = Problems::default();
        let node = self.collect_node_settings(&mut problems);
        let Some(node) = node else {
            return Err(InvalidInput::new(problems.0));
        };
        problems.finish(ConfigSettings {
            source: self.source(),
            parse_options: self.parse_options(),
            warnings: crate::pool_flags::warnings(&node),
            node,
        })
    }

    /// The node settings, or `None` after adding every problem to `problems`.
    fn collect_node_settings(&self, problems: &mut Problems) -> Option<NodeSettings> {
        let ipv6 = self.enable_ipv6;
        let pod_cidrs: Vec<IpNet> = self
            .pod_cidrs
            .iter()
            .filter_map(|text| problems.check(cidr_flag("--pod-cidr", text, ipv6)))
            .collect();
        let native_routing_cidr = self
            .native_routing_cidr
            .as_deref()
            .map(|text| problems.check(cidr_flag("--native-routing-cidr", text, ipv6)));
        let snat_ips = problems.check_all(crate::pool_flags::snat_ips(&self.snat_ips, ipv6));
        let port_ranges = match self.port_range.as_deref() {
            Some(text) => problems.check(crate::pool_flags::port_ranges(text)),
            None => Some(Vec::new()),
        };
        let nodeport_range =
            problems.check(crate::pool_flags::nodeport_range(&self.nodeport_range));
        problems.check(chain_flag(&self.masq_chain));
        if let Some(name) = &self.egress_interface {
            problems.check(interface_flag("--egress-interface", name));
        }
        let egress_mark = problems.check(egress_mark_flag(&self.egress_mark));
        let egress_table = problems.check(egress_table_flag(&self.egress_table));
        let nat = self.nat.settings(problems);
        if !problems.0.is_empty() {
            return None;
        }
        let egress_routing = match (egress_mark, egress_table) {
            (Some(0), _) | (None, _) | (_, None) => None,
            (Some(mark), Some(table)) => Some(EgressRouting {
                mark,
                rule_priority: self.egress_rule_priority,
                table,
            }),
        };
        Some(NodeSettings {
            pod_cidrs,
            snat_ips: snat_ips?,
            snat_ips_from_interface: self.snat_ips_from_interface,
            port_ranges: port_ranges?,
            nodeport_range: nodeport_range?,
            reserved_ports: Default::default(),
            native_routing_cidr: native_routing_cidr.flatten(),
            enable_ipv6: ipv6,
            interfaces: Vec::new(),
            local_addrs: Vec::new(),
            uplinks: Vec::new(),
            nat: nat?,
            egress_interface: self.egress_interface.clone(),
            egress_routing,
            iptables_chain: self.masq_chain.clone(),
        })
    }
}

impl AgentArgs {
    /// Every agent flag validated, every problem reported together.
    pub fn settings(&self) -> Result<AgentSettings, InvalidInput> {
        let mut problems = Problems::default();
        let node = self.config.collect_node_settings(&mut problems);
        let metrics_addr = problems.check(socket_addr_flag("--metrics-addr", &self.metrics_addr));
        for name in &self.interfaces {
            problems.check(interface_flag("--interfaces", name));
        }
        let (Some(node), Some(metrics_addr)) = (node, metrics_addr) else {
            return Err(InvalidInput::new(problems.0));
        };
        problems.finish(AgentSettings {
            config: ConfigSettings {
                source: self.config.source(),
                parse_options: self.config.parse_options(),
                warnings: crate::pool_flags::warnings(&node),
                node,
            },
            datapath: self.datapath,
            metrics_addr,
            interface_names: self.interfaces.clone(),
            log_format: self.log_format,
            bpf_pin_dir: self.bpf_pin_dir.clone(),
        })
    }
}

impl NatArgs {
    /// The flow table's settings, every bad flag added to `problems`.
    fn settings(&self, problems: &mut Problems) -> Option<NatSettings> {
        let size = problems.check(match self.nat_table_size {
            n if n < MIN_NAT_TABLE_SIZE => Err(format!(
                "--nat-table-size: {n} is below the least useful size, {MIN_NAT_TABLE_SIZE}"
            )),
            n => Ok(n),
        });
        let mut duration = |flag: &str, text: &str| {
            problems.check(match masq_config::parse_duration(text) {
                Ok(d) if d >= Duration::from_secs(1) => Ok(d),
                Ok(_) => Err(format!(
                    "--{flag}: {text:?} is under the GC's 1s granularity"
                )),
                Err(why) => Err(format!(
                    "--{flag}: {text:?} is not a duration ({why}; e.g. 30s, 5m, 6h)"
                )),
            })
        };
        // Every flag checked before any is given up on, so each bad one is reported.
        let tcp_syn = duration("nat-timeout-tcp-syn", &self.nat_timeout_tcp_syn);
        let tcp_established = duration(
            "nat-timeout-tcp-established",
            &self.nat_timeout_tcp_established,
        );
        let tcp_closing = duration("nat-timeout-tcp-closing", &self.nat_timeout_tcp_closing);
        let udp = duration("nat-timeout-udp", &self.nat_timeout_udp);
        let udp_replied = duration("nat-timeout-udp-replied", &self.nat_timeout_udp_replied);
        let icmp = duration("nat-timeout-icmp", &self.nat_timeout_icmp);
        let timeouts = NatTimeouts {
            tcp_syn: tcp_syn?,
            tcp_established: tcp_established?,
            tcp_closing: tcp_closing?,
            udp: udp?,
            udp_replied: udp_replied?,
            icmp: icmp?,
        };
        Some(NatSettings {
            table_size: size?,
            timeouts,
        })
    }
}

/// Below this the table could not hold one destination's default port pool.
const MIN_NAT_TABLE_SIZE: u32 = 1024;

/// Parses an IP address flag or argument; IPv6 needs `--enable-ipv6`.
pub fn ip_flag(flag: &str, text: &str, enable_ipv6: bool) -> Result<IpAddr, String> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| format!("{flag}: {text:?} is not an IP address"))?;
    if addr.is_ipv6() && !enable_ipv6 {
        return Err(format!(
            "{flag}: {text:?} is IPv6 but IPv6 masquerading is off; add --enable-ipv6"
        ));
    }
    Ok(addr)
}

fn cidr_flag(flag: &str, text: &str, enable_ipv6: bool) -> Result<IpNet, String> {
    let cidr = masq_config::parse_cidr(text).map_err(|e| format!("{flag}: {e}"))?;
    if matches!(cidr, IpNet::V6(_)) && !enable_ipv6 {
        return Err(format!(
            "{flag}: {text:?} is an IPv6 CIDR but IPv6 masquerading is off; add --enable-ipv6"
        ));
    }
    Ok(cidr)
}

/// Parses `--egress-mark`: hex (`0x1000`) or decimal bits; 0 turns egress routing off.
fn egress_mark_flag(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        format!("--egress-mark: {text:?} is not a 32-bit mark (e.g. 0x1000, or 0 to turn egress routing off)")
    })
}

/// Parses `--egress-table`: `main` or a table number.
fn egress_table_flag(text: &str) -> Result<u32, String> {
    match text {
        "main" => Ok(EgressRouting::MAIN_TABLE),
        other => other
            .parse::<u32>()
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("--egress-table: {text:?} is not `main` nor a table number from 1 to 4294967295")),
    }
}

/// Checks `--masq-chain`. Chain names are limited by the kernel (28 characters) and must not shadow a built-in chain
/// or target, which the iptables datapath would then flush or jump to by mistake.
pub fn chain_flag(name: &str) -> Result<(), String> {
    const RESERVED: [&str; 9] = [
        "PREROUTING",
        "INPUT",
        "FORWARD",
        "OUTPUT",
        "POSTROUTING",
        "ACCEPT",
        "DROP",
        "RETURN",
        "QUEUE",
    ];
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > 28 {
        "is longer than 28 characters"
    } else if name.starts_with('-') || !name.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces, not starting with '-'"
    } else if RESERVED.contains(&name) {
        "is a built-in chain or target"
    } else {
        return Ok(());
    };
    Err(format!("--masq-chain: {name:?} {why}"))
}

/// Interface names as the kernel accepts them (`dev_valid_name`).
fn interface_flag(flag: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{flag}: {name:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
        ))
    }
}

/// Parses a `HOST:PORT` flag; the host is an IP address or `localhost`.
pub fn socket_addr_flag(flag: &str, text: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!(
            "{flag}: {text:?} is not HOST:PORT (e.g. 127.0.0.1:9710, [::1]:9710, localhost:9710)"
        )
    };
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // No name resolution here: only `localhost` is understood, as loopback.
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host == "localhost" {
        Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests;
