/* Address and port rewrites with incremental checksum updates (RFC 1624). */
#ifndef MASQ_LIB_CSUM_H
#define MASQ_LIB_CSUM_H

#include "common.h"
#include "parse.h"

/*
 * The kernel helpers are used for the packet's own headers because only they know
 * skb->ip_summed: with CHECKSUM_PARTIAL (pod traffic with offload) the TCP/UDP field holds the
 * pseudo-header sum only and a port change must not touch it. Every helper call invalidates
 * packet pointers, so callers pass offsets and values read beforehand.
 */

__always_inline_fn __u64 l4_csum_flags(__u8 proto)
{
	/* A UDP checksum of 0 means "none": keep it 0, and never produce 0 from a real sum. */
	return proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

__always_inline_fn int l4_csum_off(const struct pkt *p)
{
	switch (p->proto) {
	case IPPROTO_TCP:
		return TCP_CSUM_OFF(p->l4_off);
	case IPPROTO_UDP:
		return UDP_CSUM_OFF(p->l4_off);
	}
	return ICMP_CSUM_OFF(p->l4_off);
}

/* Replaces the source (addr_off = IP_SADDR_OFF) or destination address. */
__always_inline_fn int rewrite_addr(struct __sk_buff *skb, const struct pkt *p, __u32 addr_off,
				    __be32 from, __be32 to)
{
	if (from == to)
		return 0;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF(p->l3_off), from, to, sizeof(to)) < 0)
		return -1;
	/* TCP and UDP sums cover the addresses through the pseudo header; ICMP's does not. */
	if (p->frag != FRAG_LATER && p->proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				BPF_F_PSEUDO_HDR | l4_csum_flags(p->proto) | sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, addr_off, &to, sizeof(to), 0);
}

/* Replaces a port (or the ICMP echo identifier) at port_off. */
__always_inline_fn int rewrite_port(struct __sk_buff *skb, const struct pkt *p, __u32 port_off,
				    __be16 from, __be16 to)
{
	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to,
				l4_csum_flags(p->proto) | sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, port_off, &to, sizeof(to), 0);
}

/* Software checksum arithmetic for headers the helpers cannot reach (ICMP error payloads). */
__always_inline_fn __u32 csum_add32(__u32 sum, __u32 word)
{
	return sum + (word & 0xffff) + (word >> 16);
}

__always_inline_fn __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* New checksum after a 32-bit field changed from `from` to `to` (both as stored). */
__always_inline_fn __u16 csum_replace4(__u16 csum, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~csum;

	sum = csum_add32(sum, ~from);
	sum = csum_add32(sum, to);
	return ~csum_fold(sum);
}

__always_inline_fn __u16 csum_replace2(__u16 csum, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~csum;

	sum += (__u16)~from;
	sum += to;
	return ~csum_fold(sum);
}

#endif /* MASQ_LIB_CSUM_H */
