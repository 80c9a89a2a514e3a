//! Path-MTU discovery through the masquerade: a router hop behind the external side whose
//! route MTU is locked at 1300 sends a real ICMPv6 Packet Too Big about the pod's datagram.
//! The error is addressed to the node (the datagram left masqueraded) and the external side has
//! no route to the pods: only a datapath that translates the error back gets it to the pod,
//! whose kernel then lowers its path MTU.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_testbed::probe::{udp_source, UdpEchoServer};
use masq_testbed::topology::set_sysctl;
use masq_testbed::{addr6, veth, Netns, Topology};

use super::dual_bed;
use crate::harness::*;

/// The host behind the router hop (masqueraded: outside fd00::/8).
const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 0x10);
const LOCKED_MTU: i32 = 1300;

/// A namespace behind the external side holding [`FAR6`]; the external side routes to it
/// with its route MTU locked at [`LOCKED_MTU`] (its link's MTU stays 1500).
fn far_host(external: &Netns) -> Result<Netns> {
    let far = Netns::new("far")?;
    for scope in ["all", "default"] {
        set_sysctl(&far, &format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
        set_sysctl(&far, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
    }
    veth(external, "efar", &far, "eth0")?;
    external.ip(&["-6", "addr", "add", "fd00:99::1/64", "dev", "efar", "nodad"])?;
    far.ip(&["-6", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"])?;
    far.ip(&["-6", "addr", "add", &format!("{FAR6}/128"), "dev", "lo"])?;
    far.ip(&["-6", "route", "add", "default", "via", "fd00:99::1"])?;
    set_sysctl(external, "net/ipv6/conf/all/forwarding", "1")?;
    external.ip(&[
        "-6",
        "route",
        "add",
        &format!("{FAR6}/128"),
        "via",
        "fd00:99::2",
        "dev",
        "efar",
        "mtu",
        "lock",
        &LOCKED_MTU.to_string(),
    ])?;
    Ok(far)
}

fn int_option(socket: &UdpSocket, name: i32) -> i32 {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a valid socket, and value/len describe an i32 the kernel may write.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            name,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        value
    } else {
        -1
    }
}

/// From the pod: datagrams of 1400 bytes, never fragmented by the pod, to `server` until the
/// pod's kernel knows a path MTU below 1500; returns it (or fails after `bound`).
fn learned_path_mtu(pod: &Netns, server: SocketAddr, bound: Duration) -> Result<i32> {
    pod.enter(|| -> Result<i32> {
        let socket = UdpSocket::bind("[::]:0")?;
        socket.connect(server)?;
        let dont_fragment: i32 = libc::IPV6_PMTUDISC_DO;
        // SAFETY: a valid socket and an i32 option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                (&dont_fragment as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!("IPV6_MTU_DISCOVER: {}", std::io::Error::last_os_error());
        }
        let started = Instant::now();
        let mut mtu = int_option(&socket, libc::IPV6_MTU);
        while mtu >= 1500 && started.elapsed() < bound {
            // EMSGSIZE once the lower MTU is known.
            let _ = socket.send(&[0x42; 1400]);
            std::thread::sleep(Duration::from_millis(100));
            mtu = int_option(&socket, libc::IPV6_MTU);
        }
        Ok(mtu)
    })?
    .context("in the pod")
}

pub fn path_mtu_through_the_masquerade(datapath: Datapath) -> Result<()> {
    let topology = Topology::builder().route_pods_from_external(false);
    let mut bed = dual_bed(datapath, topology)?;
    bed.start_agent()?;
    bed.wait_ready()?;
    let far = far_host(&bed.topology.external)?;
    let echo = SocketAddr::new(FAR6.into(), 9000);
    let _server = UdpEchoServer::start(&far, &[echo])?;
    assert_eq!(
        udp_source(&bed.topology.pod, echo)?,
        IpAddr::from(addr6::NODE),
        "the far host sees the node: the datagrams are masqueraded"
    );
    let mtu = learned_path_mtu(
        &bed.topology.pod,
        SocketAddr::new(FAR6.into(), 9001),
        Duration::from_secs(5),
    )?;
    assert_eq!(
        mtu,
        LOCKED_MTU,
        "the Packet Too Big never reached the pod\n{}",
        bed.log()
    );
    Ok(())
}
