//! What the eBPF datapath can run, known before anything is loaded.

use super::Ebpf;
use crate::{Desired, Error, NodeSettings};

impl Ebpf {
    /// Whether these node settings are within what the programs translate; known without
    /// loading anything, so `--datapath auto` can pass eBPF over before starting it. Both
    /// families run in the same programs, so a node that asks for IPv6 where the kernel has
    /// none is refused whole (never eBPF for IPv4 and nothing for IPv6).
    pub fn supports(node: &NodeSettings) -> Result<(), Error> {
        Ebpf::supports_on(node, kernel_has_ipv6())
    }

    /// [`Ebpf::supports`] on a kernel with IPv6 or without.
    fn supports_on(node: &NodeSettings, kernel_ipv6: bool) -> Result<(), Error> {
        if node.enable_ipv6 && !kernel_ipv6 {
            return Err(Error::Unsupported(
                "--enable-ipv6: this kernel runs without IPv6 (no /proc/net/if_inet6: built \
                 without it, or booted with ipv6.disable=1), so the ebpf datapath cannot \
                 masquerade IPv6 here"
                    .to_string(),
            ));
        }
        Ok(())
    }

    pub(super) fn check_supported(desired: &Desired) -> Result<(), Error> {
        Ebpf::supports(&desired.node)?;
        if desired.node.interfaces.is_empty() {
            return Err(Error::Unsupported(
                "the ebpf datapath needs at least one interface (--interfaces)".to_string(),
            ));
        }
        Ok(())
    }
}

/// Does the kernel (in this network namespace) have IPv6? `/proc/net/if_inet6` exists exactly
/// when the IPv6 stack is there.
fn kernel_has_ipv6() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--enable-ipv6` on a kernel without IPv6 is refused whole, naming why; IPv4 alone is not.
    #[test]
    fn ipv6_on_a_kernel_without_it_is_refused_with_the_reason() {
        let mut node = NodeSettings::default();
        assert!(Ebpf::supports_on(&node, false).is_ok());
        node.enable_ipv6 = true;
        assert!(Ebpf::supports_on(&node, true).is_ok());
        let refused = Ebpf::supports_on(&node, false).unwrap_err().to_string();
        assert!(
            refused.contains("--enable-ipv6") && refused.contains("ipv6.disable=1"),
            "{refused}"
        );
    }
}
