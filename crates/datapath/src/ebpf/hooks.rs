//! Which tc hooks masq's programs belong on, and what else runs there, in the kernel's order.
//!
//! On one tc hook the kernel runs the TCX programs first, in their chain order, then the clsact
//! filters by priority (lower first; within one priority the newest first, see [`tc_dump`]). A
//! program that returns anything but `TC_ACT_UNSPEC` ends the hook: programs after it never see
//! that packet (Cilium's `bpf_host` returns `TC_ACT_OK`). masq therefore attaches at the head
//! (`attach.rs`) and reports, for `masq status`, every program on its hooks with its own
//! position, and a warning when a foreign program runs before it.
//!
//! [`tc_dump`]: super::tc_dump

use std::collections::BTreeSet;
use std::fmt::Write as _;

use aya::programs::{SchedClassifier, TcAttachType};
use serde::{Deserialize, Serialize};

use super::attach::Direction;
use super::kernel_err;
use super::tc_dump::{self, ClsactFilter, BPF_KIND, ETH_P_ALL};
use crate::{egress, Error, NodeSettings};

/// Every hook masq's programs belong on (docs/ebpf.md, "Which interfaces"): the egress and
/// ingress programs on the datapath's interfaces; and while egress routing is on, the steering
/// program and the ingress program on every secondary uplink (an interface with a default route
/// in some table, other than the egress interface), listed in `--interfaces` or not. A listed
/// secondary uplink is steered, never translated in place to its own address: the egress
/// interface wins (README, "Datapaths"). No interface gets both the egress and the steering
/// program.
pub fn wanted(node: &NodeSettings) -> Vec<(String, Direction)> {
    let steered = egress::secondary_uplinks(node);
    let mut hooks = Vec::new();
    for iface in &node.interfaces {
        if !steered.contains(&iface.name) && !hooks.iter().any(|(name, _)| name == &iface.name) {
            hooks.extend(Direction::BOTH.map(|dir| (iface.name.clone(), dir)));
        }
    }
    for name in steered {
        hooks.push((name.clone(), Direction::Steer));
        hooks.push((name, Direction::Ingress));
    }
    hooks
}

/// The hooks as `masq render --datapath ebpf` prints them, from the flags alone: which listed
/// interfaces are secondary uplinks (a default route in some table) is known only on the node,
/// so the line says what depends on it.
pub fn render(node: &NodeSettings) -> String {
    let mut out = String::new();
    let steering = node.active_egress_routing().is_some();
    let (egress, ingress, steer) = (
        Direction::Egress.program(),
        Direction::Ingress.program(),
        Direction::Steer.program(),
    );
    for iface in &node.interfaces {
        let name = &iface.name;
        if steering && Some(name.as_str()) != node.egress_interface() {
            let _ = writeln!(
                out,
                "{name} egress {steer} if it is a secondary uplink (a default route in some table), else {egress}"
            );
        } else {
            let _ = writeln!(out, "{name} egress {egress}");
        }
        let _ = writeln!(out, "{name} ingress {ingress}");
    }
    if steering {
        let _ = writeln!(
            out,
            "# every other secondary uplink: egress {steer}, ingress {ingress}"
        );
    }
    out
}

/// One of masq's programs (by name: TCX reports the program's, clsact the filter's).
pub fn is_masq_program(name: &str) -> bool {
    Direction::ALL.iter().any(|dir| dir.program() == name)
}

/// The programs on one tc hook of one interface, first to run first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOrder {
    /// The interface.
    pub interface: String,
    /// `egress` or `ingress`.
    pub hook: String,
    /// Every program attached there, in the order packets meet them.
    pub programs: Vec<HookedProgram>,
}

/// One program (or non-BPF filter) on a tc hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookedProgram {
    /// The program's name (a filter's kind when it is not BPF).
    pub name: String,
    /// The kernel's program id, when it is a BPF program.
    pub id: Option<u32>,
    /// `tcx` or `clsact`.
    pub attach: String,
    /// clsact: the filter priority.
    pub priority: Option<u16>,
    /// clsact: the filter handle.
    pub handle: Option<u32>,
    /// One of masq's programs.
    pub masq: bool,
}

impl HookOrder {
    /// Reads what runs on `iface`'s `hook` now (a TCX query and a filter dump, in the caller's
    /// network namespace).
    pub fn read(iface: &str, hook: TcAttachType) -> Result<HookOrder, Error> {
        let ingress = hook == TcAttachType::Ingress;
        let mut programs: Vec<HookedProgram> = SchedClassifier::query_tcx(iface, hook)
            .map(|(_, infos)| infos)
            // A kernel without TCX, or an interface gone: no TCX programs.
            .unwrap_or_default()
            .iter()
            .map(|info| {
                let name = info.name_as_str().unwrap_or_default().to_string();
                HookedProgram {
                    masq: is_masq_program(&name),
                    name,
                    id: Some(info.id()),
                    attach: "tcx".into(),
                    ..HookedProgram::default()
                }
            })
            .collect();
        programs.extend(clsact_filters(iface, ingress)?.into_iter().map(|f| {
            let name = f.name.unwrap_or_else(|| format!("{} filter", f.kind));
            HookedProgram {
                masq: is_masq_program(&name),
                name,
                id: f.id,
                attach: "clsact".into(),
                priority: Some(f.priority),
                handle: Some(f.handle),
            }
        }));
        Ok(HookOrder {
            interface: iface.to_string(),
            hook: if ingress { "ingress" } else { "egress" }.into(),
            programs,
        })
    }

    /// masq's first program here, counted from 1.
    pub fn masq_position(&self) -> Option<usize> {
        self.programs.iter().position(|p| p.masq).map(|i| i + 1)
    }

    /// The foreign programs that run before masq's (none when masq is not here).
    pub fn ahead_of_masq(&self) -> &[HookedProgram] {
        match self.masq_position() {
            Some(position) => &self.programs[..position - 1],
            None => &[],
        }
    }

    /// One line for `masq status`: `eth0 egress: 1. masq_egress (masq; tcx, id 41)  2. …`.
    pub fn text(&self) -> String {
        let mut line = format!("{} {}:", self.interface, self.hook);
        if self.programs.is_empty() {
            line.push_str(" nothing attached");
        }
        for (i, program) in self.programs.iter().enumerate() {
            let _ = write!(line, " {}. {} ({})", i + 1, program.name, program.details());
        }
        line
    }

    /// What `masq status` warns about: foreign programs running before masq's, which masq never
    /// sees the packets of when they end the hook.
    pub fn warning(&self) -> Option<String> {
        let ahead = self.ahead_of_masq();
        if ahead.is_empty() {
            return None;
        }
        let masq = &self.programs[ahead.len()].name;
        let names: Vec<String> = ahead
            .iter()
            .map(|p| format!("{} ({})", p.name, p.details()))
            .collect();
        Some(format!(
            "on {} {}, {} run{} before {masq}: every packet such a program ends (any verdict but \
             TC_ACT_UNSPEC; Cilium's programs return TC_ACT_OK) never reaches masq, so pod traffic \
             can leave untranslated or replies miss their reverse translation \
             (docs/operator-guide.md, \"Beside kube-proxy and a CNI\")",
            self.interface,
            self.hook,
            names.join(", "),
            if ahead.len() == 1 { "s" } else { "" },
        ))
    }
}

impl HookedProgram {
    /// `masq; tcx, id 41` or `clsact prio 1 handle 0x6d61, id 9`.
    fn details(&self) -> String {
        let mut text = String::new();
        if self.masq {
            text.push_str("masq; ");
        }
        text.push_str(&self.attach);
        if let Some(priority) = self.priority {
            let _ = write!(text, " prio {priority}");
        }
        if let Some(handle) = self.handle {
            let _ = write!(text, " handle {handle:#x}");
        }
        if let Some(id) = self.id {
            let _ = write!(text, ", id {id}");
        }
        text
    }
}

/// What runs on the tc hooks of `hooked` (masq's hooks; egress and steer share one), each read
/// once. A hook that cannot be read (its interface just went away) is left out.
pub fn orders(hooked: &BTreeSet<(String, Direction)>) -> Vec<HookOrder> {
    let tc_hooks: BTreeSet<(&str, bool)> = hooked
        .iter()
        .map(|(iface, dir)| (iface.as_str(), dir.tc() == TcAttachType::Ingress))
        .collect();
    tc_hooks
        .into_iter()
        .filter_map(|(iface, ingress)| {
            let hook = if ingress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            HookOrder::read(iface, hook)
                .inspect_err(|e| tracing::debug!(%iface, error = %e, "reading a hook"))
                .ok()
        })
        .collect()
}

/// The clsact filters of `iface`'s hook, in the order they run.
pub fn clsact_filters(iface: &str, ingress: bool) -> Result<Vec<ClsactFilter>, Error> {
    let what = || format!("listing the clsact filters of {iface}");
    let index = nix::net::if_::if_nametoindex(iface).map_err(kernel_err(what()))?;
    tc_dump::clsact_filters(index, ingress).map_err(kernel_err(what()))
}

/// The priority for a new masq filter: 1, the lowest there is (0 asks the kernel to choose), so
/// masq runs before every filter of a higher priority. A filter already at 1 shares it when it
/// is a BPF filter for every protocol, as masq's are (Cilium's are); masq's filter, added later,
/// then runs first. The kernel refuses to mix classifier kinds or protocols in one priority, so
/// where such a filter sits at 1 masq takes the next priority it can use, and that filter runs
/// first (`masq status` says so). `handle` must be free in the priority chosen.
pub fn clsact_priority(filters: &[ClsactFilter], handle: u32) -> u16 {
    let usable = |priority: u16| {
        filters
            .iter()
            .filter(|f| f.priority == priority)
            .all(|f| f.kind == BPF_KIND && f.protocol == ETH_P_ALL && f.handle != handle)
    };
    (1..=u16::MAX).find(|p| usable(*p)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interface, Uplink};

    /// A node with default routes through eth0 (main), eth1 and eth2 (their own tables).
    fn node(listed: &[&str], egress: Option<&str>) -> NodeSettings {
        NodeSettings {
            uplinks: [("eth0", 254), ("eth1", 2), ("eth2", 3)]
                .map(|(name, table)| Uplink {
                    name: name.into(),
                    tables: vec![table],
                })
                .into(),
            interfaces: listed
                .iter()
                .enumerate()
                .map(|(i, name)| Interface {
                    name: name.to_string(),
                    index: i as u32 + 2,
                    addrs: Vec::new(),
                })
                .collect(),
            egress_interface: egress.map(str::to_string),
            ..NodeSettings::default()
        }
    }

    fn names(hooks: &[(String, Direction)]) -> Vec<String> {
        hooks
            .iter()
            .map(|(iface, dir)| format!("{iface} {}", dir.as_str()))
            .collect()
    }

    #[test]
    fn a_listed_secondary_uplink_is_steered_not_translated_in_place() {
        // --egress-interface eth0 --interfaces eth0,eth1 (issue 13, item 7).
        let hooks = wanted(&node(&["eth0", "eth1"], Some("eth0")));
        assert_eq!(
            names(&hooks),
            [
                "eth0 egress",
                "eth0 ingress",
                "eth1 steer",
                "eth1 ingress",
                "eth2 steer",
                "eth2 ingress"
            ]
        );
        // Without egress routing (--egress-mark 0) the pods' routes decide: in place everywhere.
        let mut off = node(&["eth0", "eth1"], Some("eth0"));
        off.egress_routing = None;
        assert_eq!(
            names(&wanted(&off)),
            ["eth0 egress", "eth0 ingress", "eth1 egress", "eth1 ingress"]
        );
        // A listed interface without a default route is translated in place, as netfilter does
        // where the main table routes there.
        let hooks = wanted(&node(&["eth0", "eth9"], None));
        assert_eq!(
            names(&hooks)[..4],
            ["eth0 egress", "eth0 ingress", "eth9 egress", "eth9 ingress"]
        );
        for (iface, _) in &hooks {
            let egress_programs = hooks
                .iter()
                .filter(|(i, d)| i == iface && matches!(d, Direction::Egress | Direction::Steer))
                .count();
            assert_eq!(egress_programs, 1, "{iface}: {hooks:?}");
        }
    }

    #[test]
    fn render_says_which_listed_interfaces_are_steered() {
        let text = render(&node(&["eth0", "eth1"], Some("eth0")));
        assert_eq!(
            text,
            "eth0 egress masq_egress\n\
             eth0 ingress masq_ingress\n\
             eth1 egress masq_steer if it is a secondary uplink (a default route in some table), else masq_egress\n\
             eth1 ingress masq_ingress\n\
             # every other secondary uplink: egress masq_steer, ingress masq_ingress\n"
        );
    }

    fn filter(priority: u16, kind: &str, protocol: u16, handle: u32, name: &str) -> ClsactFilter {
        ClsactFilter {
            priority,
            protocol,
            kind: kind.into(),
            handle,
            name: Some(name.into()),
            id: Some(7),
            direct_action: true,
        }
    }

    #[test]
    fn masq_takes_priority_1_unless_a_filter_there_cannot_share_it() {
        const MASQ: u32 = 0x6d61;
        assert_eq!(clsact_priority(&[], MASQ), 1);
        // Cilium's legacy filter: bpf, every protocol, prio 1 handle 1: shared.
        let cilium = filter(1, "bpf", ETH_P_ALL, 1, "cil_to_netdev");
        assert_eq!(clsact_priority(std::slice::from_ref(&cilium), MASQ), 1);
        // An IPv4-only or u32 filter at 1, and masq's handle taken at 2: 3.
        let filters = [
            filter(1, "bpf", 0x0800, 1, "ipv4_only"),
            filter(1, "u32", ETH_P_ALL, 0x800, "u32"),
            filter(2, "bpf", ETH_P_ALL, MASQ, "someone_else"),
            filter(49152, "bpf", ETH_P_ALL, 1, "tc_default"),
        ];
        assert_eq!(clsact_priority(&filters, MASQ), 3);
    }

    fn program(name: &str, attach: &str) -> HookedProgram {
        HookedProgram {
            masq: is_masq_program(name),
            name: name.into(),
            id: Some(40),
            attach: attach.into(),
            ..HookedProgram::default()
        }
    }

    #[test]
    fn a_foreign_program_before_masq_is_a_warning_after_it_is_not() {
        let mut order = HookOrder {
            interface: "eth0".into(),
            hook: "egress".into(),
            programs: vec![
                program("masq_egress", "tcx"),
                program("cnilike_egress", "tcx"),
            ],
        };
        assert_eq!(order.masq_position(), Some(1));
        assert_eq!(order.warning(), None);
        assert_eq!(
            order.text(),
            "eth0 egress: 1. masq_egress (masq; tcx, id 40) 2. cnilike_egress (tcx, id 40)"
        );
        order.programs.reverse();
        assert_eq!(order.masq_position(), Some(2));
        let warning = order.warning().unwrap();
        assert!(
            warning
                .starts_with("on eth0 egress, cnilike_egress (tcx, id 40) runs before masq_egress"),
            "{warning}"
        );
        // Without masq on the hook there is nothing to be ahead of.
        order.programs.remove(1);
        assert_eq!((order.masq_position(), order.warning()), (None, None));
    }
}
