//! The cost of a new flow, side by side (issue 19): a packet generator in the pod namespace
//! sends UDP frames through an AF_PACKET socket with `sendmmsg`, each the first packet of a
//! flow never seen before (a fresh source and destination port pair), bounded in count and
//! time, and the external side counts what arrives (an nft counter that drops the packets, so
//! nothing answers). No socket per flow, so the setups differ only in the node's work.
//!
//! The frames enter the pod's veth; forwarding, conntrack and NAT run in softirq inside the
//! send calls, on the generator's pinned CPU. So the wall time of the send loop divided by the
//! packets counted at the far side is the CPU time per new flow at saturation; the figure of a
//! setup minus that of `no-nat` is its cost per new flow.
//!
//! The same generator fills one destination's port pool (all flows to one destination port)
//! segment by segment, timing each tenth: the cost of a new flow as the pool fills.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_testbed::{addr, Netns, Topology};
use serde::Serialize;

use crate::family::Family;
use crate::pin::{self, Plan};
use crate::setups::{self, Env, Setup};

/// Frames per `sendmmsg` call.
const BATCH: usize = 32;
/// The destination ports the flows use: 1,000 pools of ports, so no pool fills.
const DPORT_FIRST: u16 = 10000;
const DPORTS: u32 = 1000;
/// The port every flow of the fill run goes to.
pub(crate) const FILL_DPORT: u16 = 11000;
/// The sink's table in the external namespace.
const SINK_TABLE: &str = "masq_bench_sink";

/// One setup's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The setup's name.
    pub setup: String,
    /// The round.
    pub round: usize,
    /// Frames sent.
    pub sent: u64,
    /// Frames counted at the far side.
    pub delivered: u64,
    /// Delivered frames per second at saturation.
    pub per_second: f64,
    /// Wall time of the send loop per delivered frame, ns (CPU time: see the module docs).
    pub ns_per_flow: f64,
    /// With a fill run: ns per new flow for each tenth of one destination's pool, in order.
    pub fill: Vec<f64>,
    /// With a fill run: the share of each tenth's flows that arrived (netfilter drops a flow
    /// whose randomly drawn port another new flow took at the same moment: `insert_failed`).
    pub fill_delivered: Vec<f64>,
    /// eBPF setups: ns per flow spent inside the programs on the uplink's egress hook, from a
    /// pass of [`ATTRIBUTION_FLOWS`] more new flows with the kernel's statistics on
    /// ([`crate::progstats`]); the rest of the cost above no-NAT is paid outside them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_ns_per_flow: Option<f64>,
}

/// New flows of the pass that attributes an eBPF setup's cost to its programs.
const ATTRIBUTION_FLOWS: u32 = 20_000;

/// Installs `setup` on `topology` as every packet-generator sample does: IPv4, 10 filler CIDRs.
pub(crate) fn install(env: &Env, setup: Setup, topology: &Topology) -> Result<setups::Installed> {
    setups::install(
        env,
        setup,
        topology,
        Family::V4,
        &crate::cidrs::fillers(0, 10),
    )
    .with_context(|| format!("installing {}", setup.name()))
}

/// The generator's frames' MAC addresses: the pod's, and the node's bridge (its gateway).
pub(crate) fn frame_macs(topology: &Topology) -> Result<([u8; 6], [u8; 6])> {
    Ok((
        mac(&topology.pod, "eth0")?,
        mac(&topology.node, masq_testbed::topology::NODE_BRIDGE)?,
    ))
}

/// The MAC address of `dev` in `ns`.
fn mac(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let shown = ns.ip(&["-j", "link", "show", dev])?;
    let links: serde_json::Value = serde_json::from_str(&shown)?;
    let text = links[0]["address"]
        .as_str()
        .with_context(|| format!("no address for {dev}"))?;
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(out)
}

/// RFC 1071 over an IPv4 header.
fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One UDP frame from the pod to the internet host, no UDP checksum (0: none).
pub(crate) fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], sport: u16, dport: u16) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes()); // 20 + 8 + 18
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&addr::POD.octets());
    ip[16..20].copy_from_slice(&addr::INTERNET.octets());
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// An AF_PACKET socket bound to `dev` in the calling thread's namespace.
fn packet_socket(dev: &str) -> Result<(OwnedFd, libc::sockaddr_ll)> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: the kernel just returned this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let index = nix::net::if_::if_nametoindex(dev)?;
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = index as i32;
    sll.sll_halen = 6;
    Ok((fd, sll))
}

/// Sends `frames` in batches; returns the wall time of the send calls. Stops at `deadline`.
fn send_all(
    fd: &OwnedFd,
    sll: &libc::sockaddr_ll,
    frames: &[[u8; 60]],
    deadline: Instant,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let mut sent = 0u64;
    for batch in frames.chunks(BATCH) {
        let mut iovs: Vec<libc::iovec> = batch
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; the pointers set below outlive the call.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_name = sll as *const libc::sockaddr_ll as *mut libc::c_void;
                hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                hdr.msg_iov = iov;
                hdr.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: hdr,
                    msg_len: 0,
                }
            })
            .collect();
        let mut offset = 0;
        while offset < msgs.len() {
            // SAFETY: msgs holds valid headers pointing at live frames and the address.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    msgs[offset..].as_mut_ptr(),
                    (msgs.len() - offset) as u32,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                return Err(e).context("sendmmsg");
            }
            offset += n as usize;
            sent += n as u64;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    Ok((sent, started.elapsed()))
}

/// Packets the sink counted so far.
fn delivered(external: &Netns) -> Result<u64> {
    let listed = external.exec("nft", &["list", "chain", "ip", SINK_TABLE, "sink"])?;
    listed
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("reading the sink: {listed}"))
}

/// Counts (and drops) at the far side every frame sent to the generator's destination ports.
pub(crate) fn start_sink(external: &Netns) -> Result<()> {
    let ruleset = format!(
        "table ip {SINK_TABLE} {{\n  chain sink {{\n    type filter hook prerouting priority -300;\n    \
         udp dport 10000-11999 counter drop\n  }}\n}}\n"
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), ruleset)?;
    external.exec("nft", &["-f", &file.path().to_string_lossy()])?;
    Ok(())
}

/// Waits until the sink's count stops moving (the backlog drained).
pub(crate) fn settle(external: &Netns) -> Result<u64> {
    let mut last = delivered(external)?;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = delivered(external)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

/// Builds the generator's frames and socket in the pod, pinned to the client CPU, and runs
/// `body` with a sender there.
pub(crate) fn in_pod<R: Send>(
    topology: &Topology,
    plan: &Plan,
    body: impl FnOnce(&dyn Fn(&[[u8; 60]]) -> Result<(u64, Duration)>) -> Result<R> + Send,
) -> Result<R> {
    topology.pod.enter(|| -> Result<R> {
        pin::current_thread(plan.client);
        let (fd, sll) = packet_socket("eth0")?;
        let send = |frames: &[[u8; 60]]| {
            send_all(&fd, &sll, frames, Instant::now() + Duration::from_secs(10))
        };
        body(&send)
    })?
}

/// `count` frames, each the first of a new flow: source ports from `first_sport` on, each with
/// the 1,000 destination ports in turn (so no port pool fills).
fn new_flow_frames(macs: ([u8; 6], [u8; 6]), first_sport: u16, count: u32) -> Vec<[u8; 60]> {
    (0..count)
        .map(|i| {
            let sport = first_sport + u16::try_from(i / DPORTS).expect("under 64,000 per port");
            let dport = DPORT_FIRST + u16::try_from(i % DPORTS).expect("small");
            frame(macs.0, macs.1, sport, dport)
        })
        .collect()
}

/// Measures `setup`: `flows` new flows (each to one of 1,000 destination ports, so no pool
/// fills) at saturation.
pub fn sample(env: &Env, plan: &Plan, setup: Setup, flows: u32, round: usize) -> Result<Sample> {
    let topology = Topology::new()?;
    let installed = install(env, setup, &topology)?;
    start_sink(&topology.external)?;
    let macs = frame_macs(&topology)?;
    let (src, gateway) = macs;
    let frames = new_flow_frames(macs, 1024, flows);
    // A warm-up of 1,000 flows on other ports (neighbours resolved, caches warm), not counted.
    let warm: Vec<[u8; 60]> = (0..1000u16)
        .map(|i| frame(src, gateway, 60000 + i % 500, 11500 + i / 500))
        .collect();
    in_pod(&topology, plan, |send| send(&warm).map(drop))?;
    let before = settle(&topology.external)?;
    let (sent, elapsed) = in_pod(&topology, plan, |send| send(&frames))?;
    let delivered = settle(&topology.external)?.saturating_sub(before);
    let program_ns_per_flow = if setup.is_ebpf() {
        // Other source ports than the measured flows': new flows again.
        let more = new_flow_frames(macs, 40000, ATTRIBUTION_FLOWS);
        crate::progstats::egress_ns_per_run(&topology.node, || {
            in_pod(&topology, plan, |send| send(&more).map(drop))
        })?
    } else {
        None
    };
    setups::uninstall(env, &topology, installed)?;
    if delivered < sent * 99 / 100 {
        bail!(
            "{}: {delivered} of {sent} frames arrived: the path drops, the figure would not be \
             the cost of a flow",
            setup.name()
        );
    }
    Ok(Sample {
        setup: setup.name(),
        round,
        sent,
        delivered,
        per_second: delivered as f64 / elapsed.as_secs_f64(),
        ns_per_flow: elapsed.as_nanos() as f64 / delivered.max(1) as f64,
        fill: Vec::new(),
        fill_delivered: Vec::new(),
        program_ns_per_flow,
    })
}

/// The ports of the pool the fill run fills, given to masq as `--port-range`.
pub const FILL_RANGE: (u16, u16) = (40000, 59999);

/// Fills one destination's port pool (masq with `--port-range` of [`FILL_RANGE`]) by tenths up
/// to 99 %, timing each tenth: ns per new flow as the pool fills.
pub fn fill_sample(env: &Env, plan: &Plan, setup: Setup, round: usize) -> Result<Sample> {
    let mut env = env.clone();
    env.agent_args.extend([
        "--port-range".into(),
        format!("{}-{}", FILL_RANGE.0, FILL_RANGE.1),
    ]);
    let topology = Topology::new()?;
    let installed = install(&env, setup, &topology)?;
    start_sink(&topology.external)?;
    let (src, gateway) = frame_macs(&topology)?;
    let ports = u32::from(FILL_RANGE.1 - FILL_RANGE.0) + 1;
    let frames: Vec<[u8; 60]> = (0..ports * 99 / 100)
        .map(|i| {
            frame(
                src,
                gateway,
                1024 + u16::try_from(i).expect("a port"),
                FILL_DPORT,
            )
        })
        .collect();
    let (mut fill, mut fill_delivered) = (Vec::new(), Vec::new());
    let (mut sent, mut delivered) = (0, 0);
    for tenth in frames.chunks(frames.len().div_ceil(10)) {
        let before = settle(&topology.external)?;
        let (n, took) = in_pod(&topology, plan, |send| send(tenth))?;
        let arrived = settle(&topology.external)?.saturating_sub(before);
        // Per flow sent: a dropped flow cost its work too.
        fill.push(took.as_nanos() as f64 / n.max(1) as f64);
        fill_delivered.push(arrived as f64 / n.max(1) as f64);
        sent += n;
        delivered += arrived;
    }
    setups::uninstall(&env, &topology, installed)?;
    Ok(Sample {
        setup: setup.name(),
        round,
        sent,
        delivered,
        per_second: 0.0,
        ns_per_flow: 0.0,
        fill,
        fill_delivered,
        program_ns_per_flow: None,
    })
}
