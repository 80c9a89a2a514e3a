//! The real `masq agent` binary, end to end, on every datapath (issue 3).
//!
//! Each test builds its own pod / pod2 / node / external topology (masq-testbed, unique network
//! namespaces removed on drop, also on failure), its own kubelet-style ConfigMap volume, runs
//! the agent inside the node namespace and checks the source address the external side sees
//! over TCP, UDP and ping. Every scenario runs once per datapath (see `tests_for!` at the
//! bottom), so a failure names both. Before and after each test the root namespace is read, only
//! read, to prove the agent never installed anything there.
//!
//! The eBPF datapath (issue 4) runs every scenario too, with its pins on a bpffs private to the
//! test's thread, plus its own scenarios in `ebpf_scenarios` (module `ebpf_only` below):
//! floods, shared source ports, `kill -9` under traffic, the NAT table, `auto`, port exhaustion,
//! a CNI's program on the same hooks and the bpffs the agent mounts itself.
//!
//! Dual stack (`--enable-ipv6`, issue 17): module `dual_stack`, every datapath again.

mod dual_stack;
mod ebpf_scenarios;
mod harness;
// Shared with node_mix.rs, which runs all of it: `dual_stack`'s IPv6 NodePort, hostPort and
// host-flow scenarios reuse its checks and sabotages; the IPv4 scenarios stay unused here.
#[allow(dead_code)]
mod node_mix_scenarios;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::*;
use masq_agent::status::Status;
use masq_testbed::addr;
use masq_testbed::probe::{tcp_source, TcpEchoServer, TcpSession};

/// The pod's view with TEST-NET masqueraded and the private network kept.
const VPC_ONLY: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";

mod scenarios {
    use super::*;

    /// Every decision reason on the wire: default (masquerade), non-masquerade-cidr,
    /// link-local (kept by default), non-masquerade-src and local (keep); and the rules sit
    /// where the datapath puts them (the nft table, or the iptables backend the host uses).
    pub fn decision_reasons(datapath: Datapath) -> Result<()> {
        let config = "nonMasqueradeCIDRs: [10.0.0.0/8]\nnonMasqueradeSrcCIDRs: [10.244.1.3/32]\n";
        let bed = Bed::ready(datapath, config)?;
        let (node, pod, pod2) = (
            IpAddr::from(addr::NODE),
            IpAddr::from(addr::POD),
            IpAddr::from(addr::POD2),
        );
        let installed = bed.installed()?;
        let expected_backends: Vec<_> = datapath.iptables_backend().into_iter().collect();
        assert_eq!(installed.ipt_backends, expected_backends, "{installed:?}");
        assert_eq!(
            installed.nft_table,
            datapath == Datapath::Nftables,
            "{installed:?}"
        );
        if datapath == Datapath::Ebpf {
            // Only the egress interface (the default route's) gets the programs.
            assert_eq!(installed.bpf_hooks, both_hooks("eth0"), "{installed:?}");
            assert!(
                installed.bpf_pins.iter().any(|p| p.starts_with("maps-v3/")),
                "{installed:?}"
            );
        }
        assert_eq!(bed.source_of(addr::INTERNET)?, node, "default: masquerade");
        assert_eq!(
            bed.source_of(addr::PRIVATE)?,
            pod,
            "non-masquerade-cidr: keep"
        );
        assert_eq!(
            bed.source_of(addr::METADATA)?,
            pod,
            "link-local: kept by default"
        );
        assert_eq!(
            bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
            pod2,
            "non-masquerade-src: keep"
        );

        let local = SocketAddr::new(addr::NODE.into(), 8090);
        let _server = TcpEchoServer::start(&bed.topology.node, &[local])?;
        assert_eq!(tcp_source(&bed.topology.pod, local)?, pod, "local: keep");
        Ok(())
    }

    /// `masqLinkLocal: true` masquerades the metadata server.
    pub fn link_local_masqueraded_when_asked(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(
            datapath,
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n",
        )?;
        assert_eq!(bed.source_of(addr::METADATA)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// A source outside `--pod-cidr` is not a pod: kept, while the pod is masqueraded.
    pub fn not_a_pod(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
        bed.pod_cidr = format!("{}/32", addr::POD);
        bed.start_agent()?;
        bed.wait_ready()?;
        assert_eq!(
            bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
            IpAddr::from(addr::POD2)
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// A `..data` swap reaches the wire in under a second (the time is printed), and a
    /// destination the change does not concern stays masqueraded throughout.
    pub fn live_reload(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        let bystander = bed.probes.tcp_addr(addr::INTERNET2.into());
        let changed = bed.probes.tcp_addr(addr::INTERNET.into());
        let (took, bystander_saw) = probing_while(&bed.topology.pod, bystander, || {
            bed.config
                .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
            wait_for_source(
                &bed.topology.pod,
                changed,
                addr::POD.into(),
                Duration::from_secs(3),
            )
        });
        let took = took.map_err(|e| bed.with_log(e))?;
        eprintln!("reload took {} ms ({datapath:?})", took.as_millis());
        assert!(took < Duration::from_secs(1), "reload took {took:?}");
        let node = Ok(IpAddr::from(addr::NODE));
        assert!(
            !bystander_saw.is_empty() && bystander_saw.iter().all(|s| *s == node),
            "{bystander} saw during the reload: {bystander_saw:?}"
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        assert_eq!(bed.source_of(addr::INTERNET2)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// A masqueraded connection open across a config change keeps its translation after its
    /// destination becomes non-masquerade (docs/decision.md: the new config applies to new
    /// connections); new connections follow the new config.
    pub fn masqueraded_connection_keeps_its_translation_across_a_reload(
        datapath: Datapath,
    ) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let server = bed.probes.tcp_addr(addr::INTERNET.into());
        let mut session = TcpSession::connect(&bed.topology.pod, server)?;
        let before = session.observed_source()?;
        assert_eq!(before.ip(), IpAddr::from(addr::NODE));
        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
        bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
        assert_eq!(session.observed_source()?, before);
        Ok(())
    }

    /// A kept connection open across a config change keeps the pod source after its
    /// destination becomes masqueraded (docs/decision.md: the new config applies to new
    /// connections); rewriting it mid-stream would reset it.
    pub fn kept_connection_stays_kept_across_a_reload(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let server = bed.probes.tcp_addr(addr::PRIVATE.into());
        let mut session = TcpSession::connect(&bed.topology.pod, server)?;
        let before = session.observed_source()?;
        assert_eq!(before.ip(), IpAddr::from(addr::POD));
        bed.config
            .update("nonMasqueradeCIDRs: [192.168.0.0/16]\n")?;
        bed.wait_for_source(addr::PRIVATE, addr::NODE, Duration::from_secs(3))?;
        assert_eq!(session.observed_source()?, before);
        Ok(())
    }

    /// The file appearing after being absent is applied; deleting it again means the defaults
    /// (whose set holds TEST-NET, so the internet host keeps the pod source).
    pub fn config_file_created_and_deleted(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, None)?;
        bed.start_agent()?;
        bed.wait_ready()?;
        assert_eq!(
            bed.source_of(addr::INTERNET)?,
            IpAddr::from(addr::POD),
            "defaults: keep"
        );
        bed.config.update(VPC_ONLY)?;
        bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(3))?;
        bed.config.remove()?;
        bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// An invalid file changes nothing on the wire, shows in /status, /metrics and
    /// `masq status -o json`, and the agent keeps running until a valid file is applied.
    pub fn invalid_config_keeps_the_last_good_one(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.1/8, 203.0.113.0/24]\n")?;
        let reported = eventually(Duration::from_secs(3), || {
            Ok(bed.status()?.last_config_error.is_some())
        })?;
        assert!(reported, "no last_config_error in /status:\n{}", bed.log());
        let error = bed.status()?.last_config_error.unwrap_or_default();
        assert!(
            error.contains("10.0.0.0/8"),
            "the error should name the aligned form: {error}"
        );
        assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(1.0));
        assert_eq!(
            bed.source_of(addr::INTERNET)?,
            IpAddr::from(addr::NODE),
            "old config: masquerade"
        );
        assert_eq!(
            bed.source_of(addr::PRIVATE)?,
            IpAddr::from(addr::POD),
            "old config: keep"
        );
        assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

        // `masq status` as an operator runs it on the node.
        let out = bed.masq(&["status", "-o", "json"])?;
        assert!(
            out.status.success(),
            "masq status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: Status = serde_json::from_slice(&out.stdout)?;
        assert_eq!(status.datapath, datapath.flag());
        assert!(status.ready);
        let desired = status
            .desired
            .context("masq status shows no desired config")?;
        // Listed as strings in the JSON, parsed back here.
        assert_eq!(desired.non_masquerade_cidrs, ["10.0.0.0/8".parse()?]);
        assert_eq!(desired.pod_cidrs, [addr::POD_CIDR.parse()?]);
        assert_eq!(status.last_config_error.as_deref(), Some(error.as_str()));

        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
        bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
        assert_eq!(bed.status()?.last_config_error, None);
        assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(0.0));
        Ok(())
    }

    /// Started with an invalid file: not ready and nothing installed, until a valid one appears.
    pub fn invalid_first_config_installs_nothing(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, Some("resyncInterval: soon\n"))?;
        bed.start_agent()?;
        let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
        assert!(answered, "the admin server never answered:\n{}", bed.log());
        // Give a wrong first sync time to happen before looking.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(bed.readyz()?, Some(503));
        let installed = bed.installed()?;
        assert!(
            installed.nothing(),
            "installed with an invalid config: {installed:?}"
        );
        assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

        bed.config.update(VPC_ONLY)?;
        bed.wait_ready()?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// A crash while the file is invalid: the new agent is not ready, but leaves the rules
    /// the previous one installed (traffic keeps its last good treatment) until the file is
    /// fixed.
    pub fn restart_with_an_invalid_config_keeps_the_rules(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let installed = bed.installed()?;
        bed.config.update("masqLinkLocal: maybe\n")?;
        bed.take_agent().kill9();
        bed.start_agent()?;
        let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
        assert!(answered, "the admin server never answered:\n{}", bed.log());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(bed.readyz()?, Some(503));
        let reported = eventually(Duration::from_secs(3), || {
            Ok(bed.status()?.last_config_error.is_some())
        })?;
        assert!(reported, "no last_config_error in /status:\n{}", bed.log());
        assert_eq!(bed.installed()?, installed);
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));

        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n")?;
        bed.wait_ready()?;
        assert_eq!(bed.source_of(addr::METADATA)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// `kill -9` and a restart: an open connection keeps its translation (address and port),
    /// new connections are masqueraded at every moment, and the new agent adopts the rules
    /// without duplicating them.
    pub fn kill9_and_restart_keep_connections(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let server = bed.probes.tcp_addr(addr::INTERNET.into());
        let mut session = TcpSession::connect(&bed.topology.pod, server)?;
        let before = session.observed_source()?;
        assert_eq!(before.ip(), IpAddr::from(addr::NODE));
        let installed_before = bed.installed()?;

        let crashed = bed.take_agent();
        let (restarted, seen) = probing_while(&bed.topology.pod, server, || {
            crashed.kill9();
            let mut agent = bed.spawn_agent()?;
            agent.wait_ready(&bed.topology.node, Duration::from_secs(10))?;
            anyhow::Ok(agent)
        });
        bed.agent = Some(restarted?);
        let node = Ok(IpAddr::from(addr::NODE));
        assert!(
            !seen.is_empty() && seen.iter().all(|s| *s == node),
            "new connections during the restart saw: {seen:?}"
        );
        assert_eq!(
            session.observed_source()?,
            before,
            "the open connection changed its source"
        );
        let installed_after = bed.installed()?;
        assert_eq!(
            installed_after, installed_before,
            "the restart changed the rules"
        );
        match datapath {
            Datapath::Nftables => assert!(installed_after.nft_rules > 0),
            Datapath::Ebpf => assert_eq!(installed_after.bpf_hooks, both_hooks("eth0")),
            Datapath::IptablesNft | Datapath::IptablesLegacy => {
                assert_eq!(installed_after.ipt_jumps, 1, "{installed_after:?}")
            }
        }
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// SIGTERM: exit 0, and the datapath stays so traffic flows while the pod is replaced;
    /// the replacement takes over with its new config.
    pub fn sigterm_leaves_the_datapath(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let installed = bed.installed()?;
        let agent = bed.take_agent();
        let status = agent.terminate()?;
        let log = bed.log_of_start(1);
        assert!(status.success(), "the agent exited with {status}:\n{log}");
        assert!(log.contains("leaving the datapath installed"), "{log}");
        assert!(
            !log.contains('\x1b'),
            "colour codes in a log that is not a terminal:\n{log}"
        );
        assert_eq!(bed.installed()?, installed);
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));

        // The replacement pod starts with an edited ConfigMap: it adopts and updates the
        // rules in place, without a second copy.
        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
        bed.start_agent()?;
        bed.wait_ready()?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        assert_eq!(bed.source_of(addr::INTERNET2)?, IpAddr::from(addr::NODE));
        let replaced = bed.installed()?;
        assert_eq!(
            (
                replaced.nft_table,
                replaced.ipt_jumps,
                &replaced.ipt_backends,
                &replaced.bpf_pins,
                &replaced.bpf_hooks,
            ),
            (
                installed.nft_table,
                installed.ipt_jumps,
                &installed.ipt_backends,
                &installed.bpf_pins,
                &installed.bpf_hooks,
            ),
            "{replaced:?}"
        );
        Ok(())
    }

    /// SIGTERM as soon as the admin server answers, before or during the first sync: still a
    /// clean stop (exit 0, the log says so), never the default action of the signal.
    pub fn early_sigterm_is_graceful(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
        bed.start_agent()?;
        let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
        assert!(answered, "the admin server never answered:\n{}", bed.log());
        let status = bed.take_agent().terminate()?;
        let log = bed.log_of_start(1);
        assert!(status.success(), "the agent exited with {status}:\n{log}");
        assert!(log.contains("leaving the datapath installed"), "{log}");
        Ok(())
    }

    /// The datapath's `damage_caught_between_resyncs` is found by the agent's check every 5
    /// seconds and repaired at once, long before the resync (60 s here).
    pub fn repaired_between_resyncs(datapath: Datapath) -> Result<()> {
        let what = datapath.damage_caught_between_resyncs();
        let bed = Bed::ready(
            datapath,
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 60s\n",
        )?;
        let damage = bed
            .damages()
            .into_iter()
            .find(|d| d.what == what)
            .with_context(|| format!("no damage {what:?} for {datapath:?}"))?;
        assert_eq!(bed.tcp_source_of(damage.dst)?, damage.repaired);
        damage.apply(&bed.topology.node)?;
        assert_ne!(
            bed.tcp_source_of(damage.dst)?,
            damage.repaired,
            "{what} did not take"
        );
        let took = bed.wait_for_source(damage.dst, damage.repaired, Duration::from_secs(10))?;
        eprintln!(
            "{what} repaired after {} ms ({datapath:?})",
            took.as_millis()
        );
        ensure!(
            bed.log().contains("not as the last sync left it"),
            "not repaired by the 5-second check:\n{}",
            bed.log()
        );
        Ok(())
    }

    /// Someone deletes or edits the datapath's objects: repaired within resyncInterval, each
    /// time, and counted.
    pub fn drift_repaired_within_resync(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(
            datapath,
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 2s\n",
        )?;
        let damages = bed.damages();
        for damage in &damages {
            assert_eq!(
                bed.tcp_source_of(damage.dst)?,
                damage.repaired,
                "before: {}",
                damage.what
            );
            damage.apply(&bed.topology.node)?;
            assert_ne!(
                bed.tcp_source_of(damage.dst)?,
                damage.repaired,
                "{} did not take",
                damage.what
            );
            let took = bed.wait_for_source(damage.dst, damage.repaired, Duration::from_secs(4))?;
            eprintln!(
                "{} repaired after {} ms ({datapath:?})",
                damage.what,
                took.as_millis()
            );
        }
        // The counter moves just after the kernel is repaired, which the probe may beat.
        let repairs =
            || anyhow::Ok(metric(&bed.metrics()?, "masq_drift_repairs_total").unwrap_or(0.0));
        let counted = eventually(Duration::from_secs(1), || {
            Ok(repairs()? >= damages.len() as f64)
        })?;
        assert!(counted, "masq_drift_repairs_total {}", repairs()?);
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// The node's address changes (the primary deleted, a secondary promoted): new connections
    /// leave with the new one (the time is printed).
    pub fn node_address_change_is_followed(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(datapath, VPC_ONLY)?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        let node = &bed.topology.node;
        masq_testbed::topology::set_sysctl(node, "net/ipv4/conf/eth0/promote_secondaries", "1")?;
        let new: IpAddr = "172.30.0.9".parse()?;
        node.ip(&["addr", "add", "172.30.0.9/24", "dev", "eth0"])?;
        node.ip(&["addr", "del", "172.30.0.1/24", "dev", "eth0"])?;
        let took = bed.wait_for_source(addr::INTERNET, new, Duration::from_secs(3))?;
        eprintln!("new node address used after {} ms", took.as_millis());
        assert_eq!(bed.source_of(addr::INTERNET)?, new);
        Ok(())
    }

    /// The egress interface is deleted and created again (a new ifindex, as when a CNI or
    /// cloud agent re-plugs it): the agent follows, and pod traffic is masqueraded again.
    pub fn egress_interface_recreated(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(datapath, VPC_ONLY)?;
        let (node, external) = (&bed.topology.node, &bed.topology.external);
        node.ip(&["link", "del", "eth0"])?;
        masq_testbed::veth(node, "eth0", external, "eth0")?;
        node.ip(&["addr", "add", &format!("{}/24", addr::NODE), "dev", "eth0"])?;
        let gateway = addr::EXTERNAL_GATEWAY.to_string();
        external.ip(&["addr", "add", &format!("{gateway}/24"), "dev", "eth0"])?;
        node.ip(&["route", "add", "default", "via", &gateway])?;
        let via = addr::NODE.to_string();
        external.ip(&["route", "add", addr::POD_CIDR, "via", &via])?;
        let took = bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(3))?;
        eprintln!(
            "masqueraded again {} ms after the interface came back",
            took.as_millis()
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
        if datapath == Datapath::Ebpf {
            assert_eq!(bed.installed()?.bpf_hooks, both_hooks("eth0"));
        }
        Ok(())
    }

    /// `masq cleanup` with the agent stopped removes everything, and can run twice.
    pub fn cleanup_leaves_nothing(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        assert!(!bed.installed()?.nothing());
        bed.take_agent().terminate()?;
        for round in ["first", "second"] {
            let out = bed.masq_with_pins(&["cleanup"])?;
            assert!(
                out.status.success(),
                "{round} cleanup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let installed = bed.installed()?;
            assert!(
                installed.nothing(),
                "after the {round} cleanup: {installed:?}"
            );
        }
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        Ok(())
    }
}

/// One `#[test]` per scenario × datapath, named `<datapath>::<scenario>`.
macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::{run, scenarios, Datapath};

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn decision_reasons() {
                run($datapath, scenarios::decision_reasons)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn link_local_masqueraded_when_asked() {
                run($datapath, scenarios::link_local_masqueraded_when_asked)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn not_a_pod() {
                run($datapath, scenarios::not_a_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn live_reload() {
                run($datapath, scenarios::live_reload)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn masqueraded_connection_keeps_its_translation_across_a_reload() {
                run(
                    $datapath,
                    scenarios::masqueraded_connection_keeps_its_translation_across_a_reload,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kept_connection_stays_kept_across_a_reload() {
                run(
                    $datapath,
                    scenarios::kept_connection_stays_kept_across_a_reload,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn config_file_created_and_deleted() {
                run($datapath, scenarios::config_file_created_and_deleted)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn invalid_config_keeps_the_last_good_one() {
                run($datapath, scenarios::invalid_config_keeps_the_last_good_one)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn invalid_first_config_installs_nothing() {
                run($datapath, scenarios::invalid_first_config_installs_nothing)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn restart_with_an_invalid_config_keeps_the_rules() {
                run(
                    $datapath,
                    scenarios::restart_with_an_invalid_config_keeps_the_rules,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kill9_and_restart_keep_connections() {
                run($datapath, scenarios::kill9_and_restart_keep_connections)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn sigterm_leaves_the_datapath() {
                run($datapath, scenarios::sigterm_leaves_the_datapath)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn early_sigterm_is_graceful() {
                run($datapath, scenarios::early_sigterm_is_graceful)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn repaired_between_resyncs() {
                run($datapath, scenarios::repaired_between_resyncs)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn drift_repaired_within_resync() {
                run($datapath, scenarios::drift_repaired_within_resync)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn node_address_change_is_followed() {
                run($datapath, scenarios::node_address_change_is_followed)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn egress_interface_recreated() {
                run($datapath, scenarios::egress_interface_recreated)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn cleanup_leaves_nothing() {
                run($datapath, scenarios::cleanup_leaves_nothing)
            }
        }
    };
}

// The datapaths under test; adding one is one line.
tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
tests_for!(ebpf, Datapath::Ebpf);

/// The scenarios only the eBPF datapath has (issue 4).
mod ebpf_only {
    use super::{ebpf_scenarios as scenarios, run, Datapath};

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn floods_reach_the_right_pod() {
        run(Datapath::Ebpf, scenarios::floods_reach_the_right_pod)
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn same_source_port_from_two_pods() {
        run(Datapath::Ebpf, scenarios::same_source_port_from_two_pods)
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn kill9_under_traffic_breaks_nothing() {
        run(
            Datapath::Ebpf,
            scenarios::kill9_under_traffic_breaks_nothing,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn nat_table_in_metrics_and_nat_list() {
        run(Datapath::Ebpf, scenarios::nat_table_in_metrics_and_nat_list)
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn auto_prefers_ebpf_and_says_why() {
        run(Datapath::Ebpf, scenarios::auto_prefers_ebpf_and_says_why)
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn loading_memory_is_given_back() {
        run(Datapath::Ebpf, scenarios::loading_memory_is_given_back)
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn status_shows_a_cni_program_behind_masq() {
        run(
            Datapath::Ebpf,
            scenarios::beside_cni::status_shows_a_cni_program_behind_masq,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn mounts_a_bpffs_where_there_is_none() {
        run(
            Datapath::Ebpf,
            scenarios::beside_cni::mounts_a_bpffs_where_there_is_none,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn port_exhaustion_is_counted_and_recovers() {
        run(
            Datapath::Ebpf,
            scenarios::port_exhaustion_is_counted_and_recovers,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn reset_then_reuse_then_idle_stays_translated() {
        run(
            Datapath::Ebpf,
            scenarios::engine::reset_then_reuse_then_idle_stays_translated,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn unanswered_syns_leave_after_their_lifetime() {
        run(
            Datapath::Ebpf,
            scenarios::engine::unanswered_syns_leave_after_their_lifetime,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_port_pool_is_used_to_the_last_port() {
        run(
            Datapath::Ebpf,
            scenarios::engine::a_port_pool_is_used_to_the_last_port,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn a_flood_that_fills_the_table_spares_idle_connections() {
        run(
            Datapath::Ebpf,
            scenarios::engine::a_flood_that_fills_the_table_spares_idle_connections,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn big_tcp_is_translated() {
        run(Datapath::Ebpf, scenarios::engine::big_tcp_is_translated)
    }
}
