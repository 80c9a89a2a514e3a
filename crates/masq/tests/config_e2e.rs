//! The real `masq agent`, end to end, on every datapath (issue 18): `masqueradeCIDRs` on the
//! wire, and several ConfigMaps merged from one projected volume (`--config-dir`) as they come,
//! change, break and go. Each test builds its own pod / node / external topology (masq-testbed)
//! and its own kubelet-style volume; the source address is read at the far side.

#[allow(dead_code, unused_imports)] // Shared with agent_e2e, which uses all of it.
mod harness;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use harness::*;
use masq_testbed::addr;

/// The exempt range 192.0.0.0/2 holds both internet hosts; the forced /24 takes one of them
/// back. The forced /9 inside 10/8 would take the private host too, but a /16 inside it keeps
/// it again; and the metadata server is masqueraded although link-local is kept.
const FORCED: &str = "\
nonMasqueradeCIDRs: [192.0.0.0/2, 10.0.0.0/8, 10.200.0.0/16]
masqueradeCIDRs: [203.0.113.0/24, 10.128.0.0/9, 169.254.169.254/32]
";

/// The platform team's ConfigMap: everything private or TEST-NET keeps the pod address.
const PLATFORM: &str = "nonMasqueradeCIDRs: [192.0.0.0/2, 10.0.0.0/8]\n";
/// The tenant's: one peered network only accepts node addresses.
const TENANT: &str = "masqueradeCIDRs: [203.0.113.0/24]\n";
/// The tenant's, broken: host bits set.
const TENANT_INVALID: &str = "masqueradeCIDRs: [203.0.113.1/24]\n";

const PLATFORM_KEY: &str = "ip-masq-platform";
const TENANT_KEY: &str = "ip-masq-tenant";

/// The sources each external host sees, in the order of [`addr::EXTERNAL_HOSTS`].
fn sources(bed: &Bed) -> Result<Vec<IpAddr>> {
    addr::EXTERNAL_HOSTS
        .iter()
        .map(|host| bed.source_of(*host))
        .collect()
}

/// What `masq_config_error` says.
fn config_error_metric(bed: &Bed) -> Result<Option<String>> {
    let metrics = bed.metrics()?;
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix("masq_config_error "))
        .map(str::to_string))
}

mod scenarios {
    use super::*;

    /// A forced range inside an exempt range is masqueraded, its neighbour in the same exempt
    /// range keeps the pod address, a longer exempt entry inside a forced range keeps again,
    /// and a forced link-local address is masqueraded while link-local is kept.
    pub fn forced_range_inside_an_exempt_range(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(datapath, FORCED)?;
        let (node, pod) = (IpAddr::from(addr::NODE), IpAddr::from(addr::POD));
        assert_eq!(
            bed.source_of(addr::INTERNET)?,
            node,
            "203.0.113.10: in the forced 203.0.113.0/24"
        );
        assert_eq!(
            bed.source_of(addr::INTERNET2)?,
            pod,
            "198.51.100.10: its neighbour in the exempt 192.0.0.0/2"
        );
        assert_eq!(
            bed.source_of(addr::PRIVATE)?,
            pod,
            "10.200.0.10: the exempt /16 inside the forced /9"
        );
        assert_eq!(
            bed.source_of(addr::METADATA)?,
            node,
            "169.254.169.254: forced out of link-local"
        );
        // What the agent said it decided, per destination.
        let explain = bed.masq(&[
            "explain",
            "--config",
            &bed.config.config_path().to_string_lossy(),
            "203.0.113.10",
            "198.51.100.10",
        ])?;
        let text = String::from_utf8_lossy(&explain.stdout);
        ensure!(
            text.contains("masquerade-cidr      203.0.113.0/24"),
            "explain: {text}"
        );
        Ok(())
    }

    /// A second ConfigMap appears in the projected volume and is merged within a second;
    /// breaking it changes nothing on the wire and names the file; removing it goes back.
    pub fn a_second_config_map_comes_breaks_and_goes(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, None)?;
        bed.config.update_keys(&[(PLATFORM_KEY, PLATFORM)])?;
        bed.config_dir = true;
        bed.start_agent()?;
        bed.wait_ready()?;
        let (node, pod) = (IpAddr::from(addr::NODE), IpAddr::from(addr::POD));
        assert_eq!(bed.source_of(addr::INTERNET)?, pod, "platform only: kept");
        assert_eq!(bed.source_of(addr::INTERNET2)?, pod);
        let platform = bed.config.dir().join(PLATFORM_KEY);
        let tenant = bed.config.dir().join(TENANT_KEY);
        let files = |bed: &Bed| -> Result<Vec<String>> { Ok(bed.status()?.config_files) };
        assert_eq!(files(&bed)?, [platform.display().to_string()]);

        // The tenant's ConfigMap is added to the volume.
        bed.config
            .update_keys(&[(PLATFORM_KEY, PLATFORM), (TENANT_KEY, TENANT)])?;
        let took = bed.wait_for_source(addr::INTERNET, node, Duration::from_secs(3))?;
        eprintln!(
            "merge of a new file took {} ms ({datapath:?})",
            took.as_millis()
        );
        assert!(took < Duration::from_secs(1), "the merge took {took:?}");
        assert_eq!(bed.source_of(addr::INTERNET2)?, pod, "its neighbour: kept");
        let both = vec![platform.display().to_string(), tenant.display().to_string()];
        assert_eq!(files(&bed)?, both);

        // It becomes invalid: nothing changes, the error names the file, key, value and why.
        bed.config
            .update_keys(&[(PLATFORM_KEY, PLATFORM), (TENANT_KEY, TENANT_INVALID)])?;
        let reported = eventually(Duration::from_secs(3), || {
            Ok(bed.status()?.last_config_error.is_some())
        })?;
        assert!(reported, "no last_config_error in /status:\n{}", bed.log());
        let error = bed.status()?.last_config_error.unwrap_or_default();
        let expected = format!(
            "{}: masqueradeCIDRs[0]: \"203.0.113.1/24\" has host bits set; did you mean \
             203.0.113.0/24?",
            tenant.display()
        );
        assert_eq!(error, expected);
        assert_eq!(config_error_metric(&bed)?.as_deref(), Some("1"));
        assert_eq!(sources(&bed)?, [node, pod, pod, pod], "the last good merge");
        assert_eq!(files(&bed)?, both, "the files of the last good merge");
        assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

        // It is removed: back to the platform's alone.
        bed.config.update_keys(&[(PLATFORM_KEY, PLATFORM)])?;
        let took = bed.wait_for_source(addr::INTERNET, pod, Duration::from_secs(3))?;
        eprintln!("removal took {} ms ({datapath:?})", took.as_millis());
        assert!(took < Duration::from_secs(1), "the removal took {took:?}");
        assert_eq!(bed.status()?.last_config_error, None);
        assert_eq!(config_error_metric(&bed)?.as_deref(), Some("0"));
        assert_eq!(files(&bed)?, [platform.display().to_string()]);
        assert_eq!(sources(&bed)?, [pod, pod, pod, pod]);
        Ok(())
    }
}

macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::*;

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn forced_range_inside_an_exempt_range() {
                run($datapath, scenarios::forced_range_inside_an_exempt_range)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn a_second_config_map_comes_breaks_and_goes() {
                run(
                    $datapath,
                    scenarios::a_second_config_map_comes_breaks_and_goes,
                )
            }
        }
    };
}

tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
tests_for!(ebpf, Datapath::Ebpf);
