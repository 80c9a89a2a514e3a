//! `masq explain [--src IP] DST...`: the decision for each destination and what decided it,
//! as a table or (`-o json`) the array docs/cli.md documents.

use std::net::IpAddr;
use std::process::ExitCode;

use masq_config::{CidrList, Merged, Source};
use masq_datapath::{pool, Family, NodeSettings};
use masq_decision::{Action, Policy, Reason, Verdict};
use serde::Serialize;

use crate::errors::InvalidInput;
use crate::flags::{ExplainArgs, OutputFormat};
use crate::settings::ip_flag;

/// One line of the answer; field names and order are those of `explain -o json`.
#[derive(Debug, Serialize)]
struct Explanation {
    destination: IpAddr,
    source: Option<IpAddr>,
    #[serde(flatten)]
    verdict: Verdict,
    /// With `--config-dir`: the file that listed the deciding CIDR (null when none did: the
    /// default set, link-local, a flag). Absent otherwise, so the documented fields are
    /// unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    config_file: Option<Option<String>>,
    /// With `--egress-interface`: where a masqueraded flow leaves (docs/vpc-native.md).
    /// Absent otherwise, so the documented fields are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    egress_interface: Option<String>,
    /// With a `--snat-ip` pool and `--src`: the pool's address this source's masqueraded flows
    /// take (docs/snat-pools.md). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    snat_ip: Option<IpAddr>,
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    let ipv6 = settings.parse_options.enable_ipv6;
    let mut problems = Vec::new();
    let source = args.src.as_deref().and_then(|text| {
        ip_flag("--src", text, ipv6)
            .map_err(|p| problems.push(p))
            .ok()
    });
    let local_addrs: Vec<IpAddr> = args
        .node_ips
        .iter()
        .filter_map(|text| {
            ip_flag("--node-ip", text, ipv6)
                .map_err(|p| problems.push(p))
                .ok()
        })
        .collect();
    let destinations: Vec<IpAddr> = args
        .destinations
        .iter()
        .filter_map(|text| {
            destination(text, source, ipv6)
                .map_err(|p| problems.push(p))
                .ok()
        })
        .collect();
    if !problems.is_empty() {
        return Err(InvalidInput::new(problems).into());
    }
    match &settings.source {
        Source::File(path) if !path.exists() => eprintln!(
            "masq: note: {} does not exist; explaining the default config",
            path.display()
        ),
        Source::Dir(dir) if settings.source.read().is_ok_and(|files| files.is_empty()) => {
            eprintln!(
                "masq: note: {} holds no {}* file; explaining the default config",
                dir.display(),
                masq_config::FILE_PREFIX
            )
        }
        _ => {}
    }
    let loaded = super::load_config(&settings.source, &settings.parse_options)?;
    // Offline, `--node-ip` is all that says which addresses are the node's.
    let node = NodeSettings {
        local_addrs,
        ..settings.node.clone()
    };
    let policy = Policy::new(&loaded.config, &node.decision_context());
    let from_dir = matches!(settings.source, Source::Dir(_));
    // Offline, the egress interface is known only from the flag (the agent also learns it from
    // the main table's default route).
    let egress = settings
        .node
        .active_egress_routing()
        .and(settings.node.egress_interface.clone());
    if settings.node.snat_ips_from_interface {
        eprintln!(
            "masq: note: --snat-ips-from-interface: the pool is the egress interface's addresses, \
             which the agent learns on the node (see `masq status`)"
        );
    }
    let with_pool = !settings.node.snat_ips.is_empty();
    let explanations: Vec<Explanation> = destinations
        .into_iter()
        .map(|destination| {
            let verdict = policy.decide(source, destination);
            let masquerade = verdict.action == Action::Masquerade;
            let egress_interface = egress.clone().filter(|_| masquerade);
            let pool = settings.node.snat_pool(Family::of_addr(&destination));
            let snat_ip = source
                .filter(|_| masquerade)
                .and_then(|src| pool::address_for(&pool, src));
            Explanation {
                destination,
                source,
                config_file: from_dir.then(|| deciding_file(&loaded, &verdict)),
                verdict,
                egress_interface,
                snat_ip,
            }
        })
        .collect();
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&explanations)? + "\n",
        OutputFormat::Text => table(&explanations, egress.is_some(), with_pool),
    };
    super::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The file that listed the CIDR behind `verdict`, if one did.
fn deciding_file(loaded: &Merged, verdict: &Verdict) -> Option<String> {
    let list = match verdict.reason {
        Reason::NonMasqueradeSrc => CidrList::NonMasqueradeSrc,
        Reason::NonMasqueradeCidr => CidrList::NonMasquerade,
        Reason::MasqueradeCidr => CidrList::Masquerade,
        Reason::NotAPod | Reason::LinkLocal | Reason::Local | Reason::Default => return None,
    };
    let file = loaded.origins.file_of(list, verdict.matched.as_ref()?)?;
    Some(file.display().to_string())
}

/// A destination argument: an address of the same family as the source, IPv6 only when enabled
/// (the agent leaves IPv6 untouched otherwise, so there is no decision to explain).
fn destination(text: &str, source: Option<IpAddr>, enable_ipv6: bool) -> Result<IpAddr, String> {
    let addr: IpAddr = text
        .parse()
        .map_err(|_| format!("destination {text:?} is not an IP address"))?;
    if addr.is_ipv6() && !enable_ipv6 {
        return Err(format!(
            "destination {text:?} is IPv6, which masq leaves untouched unless --enable-ipv6 is given"
        ));
    }
    if let Some(source) = source {
        if source.is_ipv4() != addr.is_ipv4() {
            return Err(format!(
                "destination {text:?} and --src {source} are not the same IP version"
            ));
        }
    }
    Ok(addr)
}

/// Aligned columns, like `kubectl get`; the FILE column only with `--config-dir`, the EGRESS
/// column only with `--egress-interface`, the SNAT column only with `--snat-ip`.
fn table(explanations: &[Explanation], with_egress: bool, with_pool: bool) -> String {
    let with_file = explanations.iter().any(|e| e.config_file.is_some());
    let mut header = vec!["DESTINATION", "SOURCE", "ACTION", "REASON", "MATCHED"];
    if with_file {
        header.push("FILE");
    }
    if with_egress {
        header.push("EGRESS");
    }
    if with_pool {
        header.push("SNAT");
    }
    let rows: Vec<Vec<String>> = explanations
        .iter()
        .map(|e| {
            let mut row = vec![
                e.destination.to_string(),
                e.source.map_or("-".to_string(), |s| s.to_string()),
                name(&e.verdict.action),
                name(&e.verdict.reason),
                e.verdict.matched.map_or("-".to_string(), |m| m.to_string()),
            ];
            if with_file {
                row.push(
                    e.config_file
                        .clone()
                        .flatten()
                        .unwrap_or_else(|| "-".into()),
                );
            }
            if with_egress {
                row.push(e.egress_interface.clone().unwrap_or_else(|| "-".into()));
            }
            if with_pool {
                row.push(e.snat_ip.map_or("-".to_string(), |ip| ip.to_string()));
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The serialized (kebab-case) name, so the table and the JSON say the same words.
fn name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked() {
        assert!(destination("8.8.8.8", None, false).is_ok());
        let e = destination("abcdefg", None, false).unwrap_err();
        assert_eq!(e, "destination \"abcdefg\" is not an IP address");
        assert!(destination("2001:db8::1", None, false)
            .unwrap_err()
            .contains("--enable-ipv6"));
        assert!(destination("2001:db8::1", None, true).is_ok());
        let v4 = Some("10.0.0.1".parse().unwrap());
        assert!(destination("2001:db8::1", v4, true)
            .unwrap_err()
            .contains("same IP version"));
    }
}
