//! masq's datapaths called as a library, inside the node namespace: the same `sync` code the
//! agent runs, fed a desired state built here instead of read from the config file. Used for
//! sets the agent cannot be given (over the 1 MiB config file limit), for the data plane and to
//! time the kernel update alone. The eBPF datapath pins under the run's private bpffs
//! ([`Env::bpf_pin_dir`]); `masq cleanup` removes the pins afterwards.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::ebpf::{AttachMode, Ebpf, Maps, MAPS_SUBDIR};
use masq_datapath::ipt::Iptables;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Interface, NodeSettings};
use masq_testbed::{addr, addr6, topology::NODE_UPLINK, Netns};

use crate::family::Family;
use crate::setups::Env;

/// The eBPF datapath with its programs on clsact filters ([`Setup::MasqEbpfClsact`]); no
/// `--datapath` value.
///
/// [`Setup::MasqEbpfClsact`]: crate::setups::Setup::MasqEbpfClsact
pub const EBPF_CLSACT: &str = "ebpf-clsact";

/// A datapath by its `--datapath` name (or [`EBPF_CLSACT`]).
pub fn datapath(env: &Env, name: &str) -> Result<Box<dyn Datapath>> {
    Ok(match name {
        "nftables" => Box::new(Nftables::new()),
        "iptables" => Box::new(Iptables::detect().context("detecting the iptables backend")?),
        "ebpf" | EBPF_CLSACT => match &env.bpf_pin_dir {
            Ok(dir) if name == EBPF_CLSACT => {
                Box::new(Ebpf::new(dir.clone()).with_attach_mode(AttachMode::Clsact))
            }
            Ok(dir) => Box::new(Ebpf::new(dir.clone())),
            Err(why) => bail!("no private bpffs for the eBPF pins: {why}"),
        },
        other => bail!("the {other} datapath cannot be driven as a library by the benchmark"),
    })
}

/// The desired state the agent would build for `cidr_list` on the topology's node
/// (`--pod-cidr` the pod CIDR, egress on the uplink with the node address); for IPv6, also
/// what `--enable-ipv6` and the IPv6 pod CIDR add (see [`Family::agent_args`]).
pub fn desired(node: &Netns, family: Family, cidr_list: &[String]) -> Result<Desired> {
    let index = node
        .enter(|| nix::net::if_::if_nametoindex(NODE_UPLINK))?
        .with_context(|| format!("index of {NODE_UPLINK} in {}", node.name()))?;
    let nets = cidr_list
        .iter()
        .map(|c| c.parse::<IpNet>().with_context(|| format!("cidr {c}")))
        .collect::<Result<Vec<_>>>()?;
    let mut pod_cidrs: Vec<IpNet> = vec![addr::POD_CIDR.parse()?];
    let mut addrs = vec![IpAddr::from(addr::NODE)];
    if family == Family::V6 {
        pod_cidrs.push(addr6::POD_CIDR.parse()?);
        addrs.push(IpAddr::from(addr6::NODE));
    }
    Ok(Desired {
        config: Config {
            non_masquerade_cidrs: nets,
            resync_interval: Duration::from_secs(3600),
            cidr_limit: cidr_list.len().max(masq_config::DEFAULT_CIDR_LIMIT),
            ..Config::default()
        },
        node: NodeSettings {
            pod_cidrs,
            enable_ipv6: family == Family::V6,
            interfaces: vec![Interface {
                name: NODE_UPLINK.to_string(),
                index,
                addrs,
            }],
            ..NodeSettings::default()
        },
    })
}

/// Installs `cidr_list` with the named datapath in `node` for `family`; the datapath stays
/// installed.
pub fn install(
    env: &Env,
    node: &Netns,
    family: Family,
    name: &str,
    cidr_list: &[String],
) -> Result<()> {
    let desired = desired(node, family, cidr_list)?;
    node.enter(|| -> Result<()> {
        let mut datapath = datapath(env, name)?;
        datapath
            .sync(&desired)
            .with_context(|| format!("{name} sync"))?;
        Ok(())
    })?
}

/// Times `sync` of the named datapath in `node`: from `first` installed, to `second`.
pub fn timed_change(
    env: &Env,
    node: &Netns,
    name: &str,
    first: &[String],
    second: &[String],
) -> Result<(Duration, Duration)> {
    let first = desired(node, Family::V4, first)?;
    let second = desired(node, Family::V4, second)?;
    node.enter(|| -> Result<(Duration, Duration)> {
        let mut datapath = datapath(env, name)?;
        let started = Instant::now();
        datapath
            .sync(&first)
            .with_context(|| format!("{name} sync"))?;
        let install = started.elapsed();
        let started = Instant::now();
        datapath
            .sync(&second)
            .with_context(|| format!("{name} sync"))?;
        Ok((install, started.elapsed()))
    })?
}

/// Reads the installed state back once, as every sync of the iptables and eBPF datapaths does
/// before it writes (nftables only when another process committed since its last sync, or at
/// its first sync): `nft -j list table inet masq`, `iptables-save -t nat`, or the eBPF maps (the
/// CIDR tries and the rest of the configuration).
pub fn timed_read_back(env: &Env, node: &Netns, name: &str) -> Result<Duration> {
    let started = Instant::now();
    match name {
        "nftables" => drop(node.exec("nft", &["-j", "list", "table", "inet", "masq"])?),
        "iptables" => drop(node.exec("iptables-save", &["-t", "nat"])?),
        "ebpf" => {
            let dir = env
                .bpf_pin_dir
                .as_ref()
                .map_err(|why| anyhow::anyhow!("no eBPF pin directory: {why}"))?
                .join(MAPS_SUBDIR);
            let contents = Maps::open_pinned(&dir)
                .and_then(|maps| maps.read())
                .with_context(|| format!("reading the eBPF maps under {}", dir.display()))?;
            if contents.dst_policy.is_empty() {
                bail!(
                    "no non-masquerade CIDR in the eBPF maps under {}",
                    dir.display()
                );
            }
        }
        other => bail!("no read-back known for the {other} datapath"),
    }
    Ok(started.elapsed())
}
