//! The eBPF datapath's metrics (README: Observability), read from the pinned maps at each scrape so they
//! are never stale and cost nothing between scrapes: packets by reason, drops by reason,
//! translations, NAT entries and pressure, port-allocation retries and failures, SNAT pool
//! fall-overs, and for each SNAT address its most saturated (address, destination) port pool.
//! Both address families: the counters are shared, the entries also come by family.

use std::path::{Path, PathBuf};

use masq_datapath::ebpf::{Ebpf, GcTotals, Reason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reads `<pin dir>` on every scrape.
#[derive(Debug)]
pub struct EbpfCollector {
    pin_dir: PathBuf,
}

impl EbpfCollector {
    /// A collector for the maps pinned under `pin_dir`.
    pub fn new(pin_dir: &Path) -> EbpfCollector {
        EbpfCollector {
            pin_dir: pin_dir.to_path_buf(),
        }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for EbpfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ebpf = Ebpf::new(self.pin_dir.clone());
        // Maps not pinned yet (before the first sync): nothing to report, not an error.
        let Ok(counters) = ebpf.counters() else {
            return Ok(());
        };
        let count = |r: Reason| counters.get(&r).copied().unwrap_or(0);
        counter(
            &mut encoder,
            "ebpf_translations",
            "Packets whose addresses the eBPF programs rewrote",
            count(Reason::TranslatedEgress) + count(Reason::TranslatedIngress),
        )?;
        counter(
            &mut encoder,
            "ebpf_port_allocation_retries",
            "Port candidates found taken and tried again",
            count(Reason::PortRetry),
        )?;
        counter(
            &mut encoder,
            "ebpf_port_allocation_failures",
            "New flows dropped because no port was free",
            count(Reason::DropPortExhausted),
        )?;
        counter(
            &mut encoder,
            "ebpf_snat_fallovers",
            "Times a new flow's SNAT address had no free port towards its destination and the \
             next address of the pool was searched",
            count(Reason::SnatFallover),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "ebpf_packets",
                "Packets seen by the eBPF programs, by what happened to them",
                None,
                MetricType::Counter,
            )?;
            for (reason, value) in counters.iter().filter(|(r, _)| !r.is_drop()) {
                let labels = [("reason", reason.label())];
                ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ebpf_drops",
                "Packets dropped by the eBPF programs, by reason",
                None,
                MetricType::Counter,
            )?;
            for reason in Reason::ALL.iter().filter(|r| r.is_drop()) {
                let labels = [("reason", reason.label())];
                ConstCounter::new(count(*reason)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ebpf_nat_halves_restored",
                "Halves of NAT pairs put back from their partner, by the half restored and by \
                 whom (the programs on a packet, or the GC)",
                None,
                MetricType::Counter,
            )?;
            let gc = GcTotals::get();
            for (direction, by, value) in [
                ("reverse", "program", count(Reason::NatReverseRestored)),
                ("forward", "program", count(Reason::NatForwardRestored)),
                ("reverse", "gc", gc.restored_reverse),
                ("forward", "gc", gc.restored_forward),
            ] {
                let labels = [("direction", direction), ("by", by)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        encode_gc(&mut encoder)?;
        if let Ok(pressure) = ebpf.pressure() {
            {
                let mut family = encoder.encode_descriptor(
                    "ebpf_nat_entries",
                    "NAT table entries, by half (both address families)",
                    None,
                    MetricType::Gauge,
                )?;
                for (direction, value) in [
                    ("egress", pressure.egress_entries),
                    ("ingress", pressure.ingress_entries),
                ] {
                    let labels = [("direction", direction)];
                    ConstGauge::new(i64::from(value)).encode(family.encode_family(&labels)?)?;
                }
            }
            {
                let mut family = encoder.encode_descriptor(
                    "ebpf_nat_entries_by_family",
                    "NAT table entries, by address family (each has its own maps) and half",
                    None,
                    MetricType::Gauge,
                )?;
                for (address_family, forward, reverse) in &pressure.by_family {
                    for (direction, value) in [("egress", forward), ("ingress", reverse)] {
                        let labels = [("family", *address_family), ("direction", direction)];
                        ConstGauge::new(i64::from(*value))
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
            gauge(
                &mut encoder,
                "ebpf_nat_pressure",
                "Fullness of the fullest NAT map (either family), 0 to 1",
                pressure.ratio(),
            )?;
            if !pressure.busiest_by_address.is_empty() {
                let mut family = encoder.encode_descriptor(
                    "ebpf_port_pool_saturation",
                    "Share of the port range in use towards the busiest destination of each SNAT \
                     address (one series per address in use)",
                    None,
                    MetricType::Gauge,
                )?;
                for pool in &pressure.busiest_by_address {
                    let snat = pool.snat_addr.to_string();
                    let destination =
                        std::net::SocketAddr::new(pool.dst_addr, pool.dst_port).to_string();
                    let protocol = masq_datapath::ebpf::nat::proto_name(pool.proto);
                    let labels = [
                        ("snat_ip", snat.as_str()),
                        ("destination", destination.as_str()),
                        ("protocol", protocol),
                    ];
                    ConstGauge::new(pool.saturation(pressure.pool_size))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
            if let Some(failed) = &pressure.last_failure {
                let pool = &failed.pool;
                let snat = pool.snat_addr.to_string();
                let destination =
                    std::net::SocketAddr::new(pool.dst_addr, pool.dst_port).to_string();
                let protocol = masq_datapath::ebpf::nat::proto_name(pool.proto);
                let mut family = encoder.encode_descriptor(
                    "ebpf_port_pool_fill_at_last_failure",
                    "Share of its range in use in the pool that last refused a flow for want of \
                     a port (the complete port search refuses only a full pool)",
                    None,
                    MetricType::Gauge,
                )?;
                let labels = [
                    ("snat_ip", snat.as_str()),
                    ("destination", destination.as_str()),
                    ("protocol", protocol),
                ];
                ConstGauge::new(failed.fill()).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// What this process's GC did: passes, their last duration, entries removed, live flows by
/// kind and state (as of the last pass, every few seconds).
fn encode_gc(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let gc = GcTotals::get();
    counter(
        encoder,
        "ebpf_gc_passes",
        "Passes of the NAT table's garbage collector",
        gc.passes,
    )?;
    counter(
        encoder,
        "ebpf_gc_deferred",
        "Housekeeping ticks that ran no GC pass: the passes are kept within 2 % of one CPU \
         while the table has room",
        gc.deferred,
    )?;
    {
        let mut family = encoder.encode_descriptor(
            "ebpf_gc_removed",
            "NAT table entries the GC removed, by why",
            None,
            MetricType::Counter,
        )?;
        for (why, value) in [("expired", gc.expired), ("superseded", gc.superseded)] {
            ConstCounter::new(value).encode(family.encode_family(&[("why", why)])?)?;
        }
    }
    let Some(last) = gc.last else {
        return Ok(());
    };
    gauge(
        encoder,
        "ebpf_gc_duration_seconds",
        "Time the last GC pass took, reading the whole table included",
        last.duration.as_secs_f64(),
    )?;
    let mut family = encoder.encode_descriptor(
        "ebpf_nat_flows",
        "Flows in the NAT table at the last GC pass, by kind and state",
        None,
        MetricType::Gauge,
    )?;
    for ((kind, state), n) in &last.flows {
        let labels = [("kind", kind.label()), ("state", state.label())];
        ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
