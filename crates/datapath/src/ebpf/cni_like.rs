//! Test support (feature `test-programs`): a stand-in for a CNI's tc programs, to put on the
//! same hooks as masq. `bpf/tests/cni_like.bpf.c`, its own object (never part of masq's), counts
//! the packets it sees per direction and returns `TC_ACT_OK`, as Cilium's `bpf_host` does, which
//! ends the hook for every program behind it.
//!
//! Attached by TCX at a given position or as a clsact filter at a given priority and handle. Its links belong to the [`CniLike`] value:
//! dropping it removes them.

use std::fs::File;

use aya::maps::Array;
use aya::programs::links::LinkOrder;
use aya::programs::tc::{self, NlOptions, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};

use super::kernel_err;
use crate::Error;

/// The compiled object, built from `bpf/tests/cni_like.bpf.c` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cni_like.bpf.o"));

/// The program on egress hooks (its name as TCX and the filter dump report it).
pub const EGRESS_PROGRAM: &str = "cnilike_egress";
/// The program on ingress hooks.
pub const INGRESS_PROGRAM: &str = "cnilike_ingress";

/// A loaded instance (private maps) and the hooks it is attached to.
pub struct CniLike {
    /// Always Some until dropped.
    bpf: Option<aya::Ebpf>,
    /// The network namespace of the thread that loaded it, where its hooks are.
    netns: File,
}

impl CniLike {
    /// Loads both programs, unattached, for hooks in the calling thread's network namespace.
    pub fn load() -> Result<CniLike, Error> {
        let netns = File::open("/proc/thread-self/ns/net")
            .map_err(kernel_err("opening this thread's network namespace"))?;
        let mut bpf = aya::Ebpf::load(OBJECT).map_err(kernel_err("loading cni_like.bpf.o"))?;
        for name in [EGRESS_PROGRAM, INGRESS_PROGRAM] {
            program(&mut bpf, name)?
                .load()
                .map_err(kernel_err(format!("loading {name}")))?;
        }
        Ok(CniLike {
            bpf: Some(bpf),
            netns,
        })
    }

    fn bpf(&mut self) -> &mut aya::Ebpf {
        self.bpf.as_mut().expect("present until dropped")
    }

    /// Attaches the program of `hook` to `iface` by TCX at `position` (`LinkOrder::last()`:
    /// after every program there, as a CNI that gives no anchor). Runs in the caller's network
    /// namespace.
    pub fn attach_tcx(
        &mut self,
        iface: &str,
        hook: TcAttachType,
        position: LinkOrder,
    ) -> Result<(), Error> {
        let prog = program(self.bpf(), name_for(hook))?;
        prog.attach_with_options(iface, hook, TcAttachOptions::TcxOrder(position))
            .map_err(kernel_err(format!(
                "attaching {} to {iface}",
                name_for(hook)
            )))?;
        Ok(())
    }

    /// Attaches the program of `hook` to `iface` as a clsact filter (direct action, every
    /// protocol) with `priority` and `handle`, adding the clsact qdisc if needed.
    pub fn attach_clsact(
        &mut self,
        iface: &str,
        hook: TcAttachType,
        priority: u16,
        handle: u16,
    ) -> Result<(), Error> {
        // EEXIST when masq (or anyone) added it already.
        let _ = tc::qdisc_add_clsact(iface);
        let prog = program(self.bpf(), name_for(hook))?;
        let options = TcAttachOptions::Netlink(NlOptions {
            priority,
            handle: TcHandle::new(0, handle),
            classid: None,
        });
        prog.attach_with_options(iface, hook, options)
            .map_err(kernel_err(format!(
                "attaching {} to {iface}",
                name_for(hook)
            )))?;
        Ok(())
    }

    /// Packets the program of `hook` has seen, on every interface it is attached to.
    pub fn packets(&self, hook: TcAttachType) -> Result<u64, Error> {
        let map = self
            .bpf
            .as_ref()
            .and_then(|bpf| bpf.map("cnilike_packets"))
            .ok_or_else(|| Error::Unsupported("cnilike_packets missing".into()))?;
        let counts: Array<_, u64> = Array::try_from(map).map_err(kernel_err("cnilike_packets"))?;
        let slot = u32::from(hook == TcAttachType::Ingress);
        counts
            .get(&slot, 0)
            .map_err(kernel_err("reading cnilike_packets"))
    }
}

impl Drop for CniLike {
    /// Detaches from a thread in the namespace of the hooks; where that fails the links are
    /// leaked rather than removed from the wrong namespace (they go with their namespace).
    fn drop(&mut self) {
        let Some(bpf) = self.bpf.take() else { return };
        let netns = &self.netns;
        std::thread::scope(|s| {
            s.spawn(
                move || match nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    Ok(()) => drop(bpf),
                    Err(_) => std::mem::forget(bpf),
                },
            );
        });
    }
}

fn name_for(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Ingress => INGRESS_PROGRAM,
        _ => EGRESS_PROGRAM,
    }
}

fn program<'a>(bpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut SchedClassifier, Error> {
    bpf.program_mut(name)
        .ok_or_else(|| Error::Unsupported(format!("program {name} missing")))?
        .try_into()
        .map_err(kernel_err(format!("program {name} is not a classifier")))
}
