//! The eBPF datapath's metrics (README: Observability), read from the pinned maps at each scrape so they
//! are never stale and cost nothing between scrapes: packets by reason, drops by reason,
//! translations, NAT entries and pressure, port-allocation retries and failures, and the most
//! saturated (SNAT address, destination) port pool.

use std::path::{Path, PathBuf};

use masq_datapath::ebpf::{Ebpf, Reason, DEFAULT_PORT_RANGE};
use masq_datapath::PortRange;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Reads `<pin dir>` on every scrape.
#[derive(Debug)]
pub struct EbpfCollector {
    pin_dir: PathBuf,
    port_range: PortRange,
}

impl EbpfCollector {
    /// A collector for the maps pinned under `pin_dir`; `port_range` sizes the pools.
    pub fn new(pin_dir: &Path, port_range: Option<PortRange>) -> EbpfCollector {
        EbpfCollector {
            pin_dir: pin_dir.to_path_buf(),
            port_range: port_range.unwrap_or(DEFAULT_PORT_RANGE),
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
        if let Ok(pressure) = ebpf.pressure(self.port_range) {
            {
                let mut family = encoder.encode_descriptor(
                    "ebpf_nat_entries",
                    "NAT table entries, by half",
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
            gauge(
                &mut encoder,
                "ebpf_nat_pressure",
                "Fullness of the NAT table, 0 to 1",
                pressure.ratio(),
            )?;
            if let Some(pool) = &pressure.busiest_pool {
                let snat = pool.snat_addr.to_string();
                let destination = format!("{}:{}", pool.dst_addr, pool.dst_port);
                let protocol = masq_datapath::ebpf::nat::proto_name(pool.proto);
                let mut family = encoder.encode_descriptor(
                    "ebpf_port_pool_saturation",
                    "Share of the port range in use for the busiest (SNAT address, destination)",
                    None,
                    MetricType::Gauge,
                )?;
                let labels = [
                    ("snat_ip", snat.as_str()),
                    ("destination", destination.as_str()),
                    ("protocol", protocol),
                ];
                ConstGauge::new(pool.saturation(self.port_range))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
