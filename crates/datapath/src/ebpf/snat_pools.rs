//! The values of the SNAT pool maps (`masq_snat_pools`, `masq_snat_pools6`, `bpf/lib/pool.h`):
//! `#[repr(C)]` copies of `struct snat_pool` and `struct snat_pool6`, checked against the
//! object's BTF by `tests/ebpf_abi.rs`. One value is one interface's pool (key 0: every
//! interface's), written whole, so a program sees the old pool or the new one, never a mix.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `MASQ_SNAT_POOL_MAX`: most addresses of a pool, [`crate::pool::MAX_ADDRESSES`].
pub const SNAT_POOL_MAX: usize = crate::pool::MAX_ADDRESSES;

/// A pool of addresses `A` (network-order bytes), in pool order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatPoolOf<A> {
    /// Addresses in use, 1 to [`SNAT_POOL_MAX`].
    pub count: u32,
    /// The addresses; zero past `count`.
    pub addrs: [A; SNAT_POOL_MAX],
}

/// `struct snat_pool`: an IPv4 pool.
pub type SnatPool = SnatPoolOf<[u8; 4]>;
/// `struct snat_pool6`: an IPv6 pool.
pub type SnatPool6 = SnatPoolOf<[u8; 16]>;

const _: () = assert!(std::mem::size_of::<SnatPool>() == 132);
const _: () = assert!(std::mem::size_of::<SnatPool6>() == 516);

// SAFETY: plain #[repr(C)] data without padding (a u32, then byte arrays whose sizes are
// multiples of 4), valid for every bit pattern.
unsafe impl aya::Pod for SnatPool {}
// SAFETY: as above.
unsafe impl aya::Pod for SnatPool6 {}

/// An address type and its network-order bytes in a pool.
pub trait PoolAddr: Copy {
    /// The bytes, as the programs store them.
    type Bytes: Copy + Default;
    /// The address's bytes.
    fn to_bytes(self) -> Self::Bytes;
    /// The address of `bytes`.
    fn from_bytes(bytes: Self::Bytes) -> Self;
}

impl PoolAddr for Ipv4Addr {
    type Bytes = [u8; 4];
    fn to_bytes(self) -> [u8; 4] {
        self.octets()
    }
    fn from_bytes(bytes: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(bytes)
    }
}

impl PoolAddr for Ipv6Addr {
    type Bytes = [u8; 16];
    fn to_bytes(self) -> [u8; 16] {
        self.octets()
    }
    fn from_bytes(bytes: [u8; 16]) -> Ipv6Addr {
        Ipv6Addr::from(bytes)
    }
}

impl<A: Copy + Default> SnatPoolOf<A> {
    /// The value for `addrs`, in order (at most [`SNAT_POOL_MAX`]; the rest is left out).
    pub fn new<I: PoolAddr<Bytes = A>>(addrs: &[I]) -> SnatPoolOf<A> {
        let mut pool = SnatPoolOf {
            count: 0,
            addrs: [A::default(); SNAT_POOL_MAX],
        };
        for (slot, addr) in pool.addrs.iter_mut().zip(addrs) {
            *slot = addr.to_bytes();
            pool.count += 1;
        }
        pool
    }

    /// The addresses in use, in order.
    pub fn addresses<I: PoolAddr<Bytes = A>>(&self) -> Vec<I> {
        let used = (self.count as usize).min(SNAT_POOL_MAX);
        self.addrs[..used]
            .iter()
            .map(|a| I::from_bytes(*a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_keeps_its_order_and_no_more_than_the_maximum() {
        let addrs: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let pool = SnatPool::new(&addrs[..3]);
        assert_eq!(pool.count, 3);
        assert_eq!(pool.addrs[1], [192, 0, 2, 2]);
        assert_eq!(pool.addrs[3], [0; 4]);
        assert_eq!(pool.addresses::<Ipv4Addr>(), addrs[..3]);
        assert_eq!(SnatPool::new(&addrs).addresses::<Ipv4Addr>(), addrs[..32]);
        let v6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(SnatPool6::new(&[v6]).addresses::<Ipv6Addr>(), [v6]);
    }
}
