//! Loading the programs: the builds of the object (`masq.bpf.o`, `masq_bounded.bpf.o`), tried
//! from the best the kernel may take down, and private unpinned instances for tests and
//! benchmarks.

use aya::programs::SchedClassifier;
use aya::EbpfLoader;

use super::{kernel_err, kfunc, maps, KernCtx, EGRESS_PROGRAM, INGRESS_PROGRAM, STEER_PROGRAM};
use crate::Error;

/// The compiled programs, built from `bpf/` by `build.rs`; loaded through [`kfunc::patched`].
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/masq.bpf.o"));
/// The same programs with a bounded port search, for kernels without `bpf_loop` (before 5.17).
pub static BOUNDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/masq_bounded.bpf.o"));

/// How a new flow's port is searched for, by the build of the programs the kernel accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSearch {
    /// Every port of the range, from a random offset (`bpf_loop`, kernel 5.17+).
    Complete,
    /// At most 64 candidates (older kernels): a nearly full pool may refuse a flow.
    Bounded,
}

/// Which build of the programs runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flavor {
    /// How the kernel-context calls were resolved (the checksum path).
    pub kern_ctx: KernCtx,
    /// The port search.
    pub port_search: PortSearch,
}

/// Loads the object through `loader` (which sets up the maps) and then its programs. The
/// builds are tried from the best the kernel may take down: the kernel-context kfunc with the
/// complete port search, the checksum helpers instead (a verifier whose rules for the kfunc
/// differ from the ones masq was tested on), then the bounded port search (no `bpf_loop`).
/// Slower, never unavailable. Returns the instance and the build that loaded.
pub(super) fn load_object(
    kern_ctx: KernCtx,
    mut loader: impl FnMut(&[u8]) -> Result<aya::Ebpf, aya::EbpfError>,
) -> Result<(aya::Ebpf, Flavor), Error> {
    let mut flavors = vec![Flavor {
        kern_ctx,
        port_search: PortSearch::Complete,
    }];
    if kern_ctx != KernCtx::Absent {
        flavors.push(Flavor {
            kern_ctx: KernCtx::Absent,
            port_search: PortSearch::Complete,
        });
    }
    flavors.push(Flavor {
        kern_ctx: KernCtx::Absent,
        port_search: PortSearch::Bounded,
    });
    let mut last_error = None;
    for flavor in flavors {
        let object = match flavor.port_search {
            PortSearch::Complete => OBJECT,
            PortSearch::Bounded => BOUNDED_OBJECT,
        };
        let attempt = loader(kfunc::patched(object, flavor.kern_ctx).bytes())
            .map_err(kernel_err("loading the masq eBPF object"))
            .and_then(|mut bpf| load_programs(&mut bpf).map(|()| bpf));
        match attempt {
            Ok(bpf) => return Ok((bpf, flavor)),
            Err(e) => {
                tracing::warn!(error = %e, ?flavor, "the kernel refused this build of the programs; trying the next");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.expect("at least one build was tried"))
}

/// What `masq status` says of a build that is not the best one.
pub(super) fn flavor_findings(flavor: Flavor) -> Vec<String> {
    let mut findings = Vec::new();
    if flavor.kern_ctx == KernCtx::Absent {
        findings.push(
            "the eBPF programs update TCP/UDP checksums through the kernel helpers (no usable \
             bpf_cast_to_kern_ctx on this kernel, 6.2+ with BTF): about 28 ns more per translated packet"
                .to_string(),
        );
    }
    if flavor.port_search == PortSearch::Bounded {
        findings.push(
            "the eBPF programs search 64 ports at most for a new flow (no bpf_loop on this \
             kernel, 5.17+): a nearly full port pool towards one destination may refuse flows \
             while ports are free"
                .to_string(),
        );
    }
    findings
}

fn load_programs(bpf: &mut aya::Ebpf) -> Result<(), Error> {
    for name in [EGRESS_PROGRAM, INGRESS_PROGRAM, STEER_PROGRAM] {
        let prog: &mut SchedClassifier = bpf
            .program_mut(name)
            .ok_or_else(|| Error::Unsupported(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(kernel_err(format!("program {name} is not a classifier")))?;
        prog.load()
            .map_err(kernel_err(format!("loading program {name} (verifier)")))?;
    }
    Ok(())
}

/// A private instance with unpinned maps and loaded (unattached) programs: for `test_run` in
/// tests and benchmarks. Nothing of it outlives the returned value.
pub fn load_unpinned() -> Result<aya::Ebpf, Error> {
    load_unpinned_with(KernCtx::detect())
}

/// [`load_unpinned`] with the kernel-context calls resolved as given (tests of both ways).
pub fn load_unpinned_with(kern_ctx: KernCtx) -> Result<aya::Ebpf, Error> {
    load_object(kern_ctx, |object| EbpfLoader::new().load(object)).map(|(bpf, _)| bpf)
}

/// A private instance of one build exactly (tests of the bounded port search), with the flow
/// table sized `nat_capacity`.
pub fn load_unpinned_flavor(flavor: Flavor, nat_capacity: u32) -> Result<aya::Ebpf, Error> {
    let object = match flavor.port_search {
        PortSearch::Complete => OBJECT,
        PortSearch::Bounded => BOUNDED_OBJECT,
    };
    let mut loader = EbpfLoader::new();
    for half in maps::name::NAT_HALVES {
        loader.map_max_entries(half, nat_capacity);
    }
    let mut bpf = loader
        .load(kfunc::patched(object, flavor.kern_ctx).bytes())
        .map_err(kernel_err("loading the masq eBPF object"))?;
    load_programs(&mut bpf)?;
    Ok(bpf)
}
