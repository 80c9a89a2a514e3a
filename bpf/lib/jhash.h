/* Bob Jenkins' lookup3 hash as the kernel's jhash computes it, over one or four 32-bit words. */
#ifndef MASQ_LIB_JHASH_H
#define MASQ_LIB_JHASH_H

#include "common.h"

/*
 * Why this hash: nft's `jhash ip saddr mod N seed S` and the iptables `cluster` match pick a
 * pool address with the kernel's jhash, and crates/datapath/src/pool.rs computes the same
 * function for `masq explain`. The eBPF programs must agree with all of them, so a pod keeps
 * its address whatever the datapath. Words are read as the CPU reads them (an address in
 * network order, loaded as a __u32): x86-64 and arm64 are little-endian, as pool.rs assumes.
 * crates/datapath/tests/ebpf_test_run/pools.rs checks the two implementations agree.
 */

/* The initial value every jhash starts from (JHASH_INITVAL). */
#define MASQ_JHASH_INITVAL 0xdeadbeef

__always_inline_fn __u32 jhash_rotl(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> (32 - shift));
}

/* Mixes three words reversibly; what jhash does for every full 12-byte block but the last. */
__always_inline_fn void jhash_mix(__u32 *a, __u32 *b, __u32 *c)
{
	*a -= *c; *a ^= jhash_rotl(*c, 4);  *c += *b;
	*b -= *a; *b ^= jhash_rotl(*a, 6);  *a += *c;
	*c -= *b; *c ^= jhash_rotl(*b, 8);  *b += *a;
	*a -= *c; *a ^= jhash_rotl(*c, 16); *c += *b;
	*b -= *a; *b ^= jhash_rotl(*a, 19); *a += *c;
	*c -= *b; *c ^= jhash_rotl(*b, 4);  *b += *a;
}

/* The final avalanche of the last block into c. */
__always_inline_fn void jhash_final(__u32 *a, __u32 *b, __u32 *c)
{
	*c ^= *b; *c -= jhash_rotl(*b, 14);
	*a ^= *c; *a -= jhash_rotl(*c, 11);
	*b ^= *a; *b -= jhash_rotl(*a, 25);
	*c ^= *b; *c -= jhash_rotl(*b, 16);
	*a ^= *c; *a -= jhash_rotl(*c, 4);
	*b ^= *a; *b -= jhash_rotl(*a, 14);
	*c ^= *b; *c -= jhash_rotl(*b, 24);
}

/* jhash of 4 bytes (an IPv4 address): one block, one word in a. */
__always_inline_fn __u32 jhash_1word(__u32 w0, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = MASQ_JHASH_INITVAL + 4 + seed;
	a += w0;
	jhash_final(&a, &b, &c);
	return c;
}

/* jhash of 16 bytes (an IPv6 address): a full block of three words, then the fourth. */
__always_inline_fn __u32 jhash_4words(const __u32 *w, __u32 seed)
{
	__u32 a, b, c;

	a = b = c = MASQ_JHASH_INITVAL + 16 + seed;
	a += w[0];
	b += w[1];
	c += w[2];
	jhash_mix(&a, &b, &c);
	a += w[3];
	jhash_final(&a, &b, &c);
	return c;
}

/* A hash scaled into 0..n without a division (the kernel's reciprocal_scale, nft's `mod N`). */
__always_inline_fn __u32 reciprocal_scale(__u32 hash, __u32 n)
{
	return (__u32)(((__u64)hash * n) >> 32);
}

#endif /* MASQ_LIB_JHASH_H */
