//! The SNAT address pool: which address of `--snat-ip` (or `--snat-ips-from-interface`) a pod's
//! flows leave with.
//!
//! Every datapath picks the same one: index `reciprocal_scale(jhash(pod address, SEED), N)`
//! into the pool, in the order the operator gave. That is what nftables computes for
//! `jhash ip saddr mod N seed SEED`, what the `cluster` match of iptables computes for
//! `--cluster-total-nodes N --cluster-hash-seed SEED` (`jhash_1word` on the connection's
//! original source, equal to `jhash` of the address's bytes on a little-endian CPU), and what the
//! eBPF programs compute with the kernel's `jhash.h`, so `masq explain` can say which address a
//! pod gets, whatever the datapath. A pod keeps its address as long as the pool does not change;
//! adding or removing an address moves some pods to another (docs/snat-pools.md).

use std::net::IpAddr;

/// The hash seed of every datapath ("masq" in ASCII). Fixed, never random: a random seed (nft's
/// default when none is given) would move every pod to another address at each rule reload.
pub const HASH_SEED: u32 = 0x6d61_7371;

/// Most addresses in a pool: the iptables `cluster` match counts at most 32 buckets
/// (`XT_CLUSTER_NODES_MAX`), and every datapath takes the same pools.
pub const MAX_ADDRESSES: usize = 32;

/// `JHASH_INITVAL` of `include/linux/jhash.h`.
const JHASH_INITVAL: u32 = 0xdead_beef;

/// The kernel's `jhash(key, length, initval)` (Bob Jenkins' lookup3), reading words the way a
/// little-endian CPU does, as x86-64 and arm64 nodes do.
pub fn jhash(key: &[u8], seed: u32) -> u32 {
    let length = u32::try_from(key.len()).expect("a short key");
    let init = JHASH_INITVAL.wrapping_add(length).wrapping_add(seed);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |bytes: &[u8]| -> u32 {
        // The tail is read byte by byte, the full words natively: both little-endian here.
        bytes
            .iter()
            .enumerate()
            .fold(0u32, |word, (i, &byte)| word | u32::from(byte) << (8 * i))
    };
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]));
    }
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// `__jhash_mix`.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// `__jhash_final`.
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// The kernel's `reciprocal_scale`: `hash` scaled into `0..n` (what `mod N` means to nft's
/// `jhash` and to the `cluster` match).
pub fn reciprocal_scale(hash: u32, n: u32) -> u32 {
    ((u64::from(hash) * u64::from(n)) >> 32) as u32
}

/// The index into a pool of `len` addresses that `pod`'s flows take.
pub fn index_for(pod: IpAddr, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let hash = match pod {
        IpAddr::V4(v4) => jhash(&v4.octets(), HASH_SEED),
        IpAddr::V6(v6) => jhash(&v6.octets(), HASH_SEED),
    };
    let len = u32::try_from(len).expect("a pool of at most 32 addresses");
    reciprocal_scale(hash, len) as usize
}

/// The address of `pool` (one family, in order) that `pod`'s flows take; `None` for an empty
/// pool (the egress interface's primary address is used then).
pub fn address_for(pool: &[IpAddr], pod: IpAddr) -> Option<IpAddr> {
    pool.get(index_for(pod, pool.len())).copied()
}

/// Whether `addr` can serve as a SNAT address taken from an interface: global, i.e. not
/// loopback, link-local, multicast or unspecified (what `ip addr` shows as `scope global` on
/// any node that does not set scopes by hand).
pub fn is_global(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jhash_of_one_word_is_jhash_1word() {
        // `jhash_1word(a, seed)` = `__jhash_nwords(a, 0, 0, seed + JHASH_INITVAL + 4)`: the
        // cluster match's hash, which must equal nft's jhash of the same 4 bytes.
        let one_word = |a: u32, seed: u32| {
            let init = seed.wrapping_add(JHASH_INITVAL).wrapping_add(4);
            let (mut a, mut b, mut c) = (a.wrapping_add(init), init, init);
            final_mix(&mut a, &mut b, &mut c);
            c
        };
        for addr in ["10.244.1.2", "10.244.1.3", "192.0.2.1", "255.255.255.255"] {
            let v4: std::net::Ipv4Addr = addr.parse().unwrap();
            // The word as the kernel holds a __be32 on a little-endian CPU.
            let word = u32::from_le_bytes(v4.octets());
            assert_eq!(jhash(&v4.octets(), HASH_SEED), one_word(word, HASH_SEED));
        }
    }

    #[test]
    fn jhash_of_four_words_is_jhash2() {
        // `jhash2(k, 4, seed)`, the cluster match's IPv6 hash, against nft's `jhash ip6 saddr`.
        let words = |k: [u32; 4], seed: u32| {
            let init = JHASH_INITVAL.wrapping_add(16).wrapping_add(seed);
            let (mut a, mut b, mut c) = (init, init, init);
            a = a.wrapping_add(k[0]);
            b = b.wrapping_add(k[1]);
            c = c.wrapping_add(k[2]);
            mix(&mut a, &mut b, &mut c);
            a = a.wrapping_add(k[3]);
            final_mix(&mut a, &mut b, &mut c);
            c
        };
        let v6: std::net::Ipv6Addr = "fd00:10:244:1::2".parse().unwrap();
        let o = v6.octets();
        let k = [0, 4, 8, 12].map(|i| u32::from_le_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]));
        assert_eq!(jhash(&o, 7), words(k, 7));
    }

    #[test]
    fn every_address_of_a_pool_is_used_and_a_pod_keeps_its_own() {
        let pool: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        let mut used = [0usize; 3];
        for host in 0..=255u8 {
            let pod = IpAddr::from([10, 244, 1, host]);
            let chosen = address_for(&pool, pod).unwrap();
            assert_eq!(address_for(&pool, pod), Some(chosen), "stable");
            used[pool.iter().position(|a| *a == chosen).unwrap()] += 1;
        }
        // 256 pods over 3 addresses: each gets a fair share.
        assert!(used.iter().all(|&n| n > 50), "{used:?}");
        assert_eq!(address_for(&[], pool[0]), None);
        assert_eq!(address_for(&pool[..1], pool[2]), Some(pool[0]));
    }

    #[test]
    fn global_addresses() {
        for global in ["172.30.0.1", "2001:db8::1", "fd00::1"] {
            assert!(is_global(&global.parse().unwrap()), "{global}");
        }
        for not in [
            "127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!is_global(&not.parse().unwrap()), "{not}");
        }
    }
}
