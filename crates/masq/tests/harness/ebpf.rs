//! Looking at, and damaging, what the eBPF datapath installed: the files under its pin
//! directory, the interface hooks running its programs, and two changes another tool could
//! make that the agent's resync must repair.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use aya::programs::links::LinkOrder;
use aya::programs::TcAttachType::{Egress, Ingress};
use masq_datapath::ebpf::attach::{self, Direction};
use masq_datapath::ebpf::cni_like::CniLike;
use masq_datapath::ebpf::maps::name::DST_POLICY;
use masq_datapath::ebpf::MAPS_SUBDIR;
use masq_testbed::topology::NODE_UPLINK;
use masq_testbed::{addr, Netns};

use super::datapath::{owned, Damage};

/// Two drifts `sync` repairs (docs/ebpf.md, "Drift"): an entry deleted from the
/// destination-policy LPM trie (found by comparing the maps with what the agent last wrote), and the
/// egress TCX link detached through its pin (found by checking the hooks; the dead link's pin is
/// replaced by a new link).
pub fn damages(pin_dir: &Path) -> Vec<Damage> {
    let trie = pin_dir.join(MAPS_SUBDIR).join(DST_POLICY);
    let link = attach::link_pin(pin_dir, NODE_UPLINK, Direction::Egress);
    // The LPM key of 10.0.0.0/8: the prefix length (u32, host order), then the address bytes.
    let key = ["08", "00", "00", "00", "0a", "00", "00", "00"];
    let trie_args: Vec<&str> = ["--nomount", "map", "delete", "pinned"]
        .into_iter()
        .chain([trie.to_str().expect("a UTF-8 path"), "key", "hex"])
        .chain(key)
        .collect();
    let link_path = link.to_str().expect("a UTF-8 path");
    vec![
        Damage {
            what: "CIDR deleted from the LPM trie",
            command: owned("bpftool", &trie_args),
            dst: IpAddr::from(addr::PRIVATE),
            repaired: IpAddr::from(addr::POD),
        },
        Damage {
            what: "egress link detached",
            command: owned(
                "bpftool",
                &["--nomount", "link", "detach", "pinned", link_path],
            ),
            dst: IpAddr::from(addr::INTERNET),
            repaired: IpAddr::from(addr::NODE),
        },
    ]
}

/// Both hooks of `iface`, as [`hooks`] lists them.
pub fn both_hooks(iface: &str) -> Vec<String> {
    Direction::BOTH
        .iter()
        .map(|dir| format!("{iface} {}", dir.as_str()))
        .collect()
}

/// Files under `dir` and its subdirectories, relative to it, sorted; none when it is absent.
pub fn pinned_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// Hooks (`eth0 egress`) of `ns`'s interfaces, or the root namespace's with None, running one
/// of masq's programs (TCX or clsact), sorted. Read-only.
pub fn hooks(ns: Option<&Netns>) -> Result<Vec<String>> {
    let mut hooks = match ns {
        Some(ns) => {
            let names = link_names(&ns.ip(&["-o", "link", "show"])?);
            ns.enter(|| hooks_with_masq(&names))?
        }
        // The test thread itself is in the root network namespace.
        None => hooks_with_masq(&link_names(&masq_testbed::netns::run_ok(
            std::process::Command::new("ip").args(["-o", "link", "show"]),
        )?)),
    };
    hooks.sort();
    Ok(hooks)
}

/// Interface names in `ip -o link show` output (`3: eth0@if7: <...` → `eth0`).
fn link_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Which of `names`, interfaces of the calling thread's network namespace, run masq's programs.
fn hooks_with_masq(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|name| Direction::BOTH.iter().map(move |dir| (name, *dir)))
        .filter(|(name, dir)| attach::is_attached(name, *dir))
        .map(|(name, dir)| format!("{name} {}", dir.as_str()))
        .collect()
}

/// The CNI-like program on both hooks of the node's uplink, by TCX, first or last.
pub fn attach_cni(node: &Netns, head: bool) -> Result<CniLike> {
    node.enter(move || -> Result<CniLike> {
        let mut cni = CniLike::load()?;
        for hook in [Egress, Ingress] {
            let position = if head {
                LinkOrder::first()
            } else {
                LinkOrder::last()
            };
            cni.attach_tcx(NODE_UPLINK, hook, position)?;
        }
        Ok(cni)
    })?
}
