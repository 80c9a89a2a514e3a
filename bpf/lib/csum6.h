/*
 * IPv6 address and port rewrites with incremental checksum updates. IPv6 has no header
 * checksum; TCP, UDP and ICMPv6 sums all cover a pseudo-header with both addresses.
 */
#ifndef MASQ_LIB_CSUM6_H
#define MASQ_LIB_CSUM6_H

#include "addr6.h"
#include "common.h"
#include "csum.h"
#include "kern_ctx.h"
#include "parse6.h"

/*
 * The ones' complement difference a 16-byte change adds to a sum (what bpf_csum_diff would
 * return, without the helper call): the words of `to` minus those of `from`.
 */
__always_inline_fn __u32 csum_diff16(const __be32 *from, const __be32 *to)
{
	__u64 sum = 0;

	for (int i = 0; i < 4; i++) {
		sum += (__u32)~from[i];
		sum += to[i];
	}
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

/* New checksum after a 16-byte field changed by `diff` (csum_diff16). */
__always_inline_fn __u16 csum_replace_diff(__u16 csum, __u32 diff)
{
	__u32 sum = (__u16)~csum;

	sum = csum_add32(sum, diff);
	return ~csum_fold(sum);
}

__always_inline_fn __u32 l4_csum_off6(const struct pkt6 *p)
{
	switch (p->proto) {
	case IPPROTO_TCP:
		return TCP_CSUM_OFF(p->l4_off);
	case IPPROTO_UDP:
		return UDP_CSUM_OFF(p->l4_off);
	}
	return ICMP_CSUM_OFF(p->l4_off);
}

__always_inline_fn __u32 port_off6(const struct pkt6 *p, int dst_side)
{
	if (p->proto == IPPROTO_ICMPV6)
		return ICMP_ID_OFF(p->l4_off);
	return p->l4_off + (dst_side ? 2 : 0);
}

/* The transport checksum after the rewrite, for every ip_summed but COMPLETE (csum.h). */
__always_inline_fn __u16 l4_csum_updated6(__u16 csum, __u8 summed, __u8 proto, __u32 addr_diff,
					  __be16 from_port, __be16 to_port)
{
	if (proto == IPPROTO_UDP && csum == 0)
		return 0;
	if (summed == CHECKSUM_PARTIAL) {
		/* The pseudo-header sum itself: add the address change; the port is not summed yet. */
		csum = (__u16)~csum_replace_diff((__u16)~csum, addr_diff);
	} else {
		csum = csum_replace_diff(csum, addr_diff);
		if (from_port != to_port)
			csum = csum_replace2(csum, from_port, to_port);
	}
	return proto == IPPROTO_UDP && csum == 0 ? 0xffff : csum;
}

/*
 * Replaces the source (dst_side = 0) or destination address and port of an IPv6 packet; later
 * fragments have no transport header, only the address changes. With CHECKSUM_COMPLETE (or an
 * unknown ip_summed) the transport sum goes through bpf_l4_csum_replace, whose pseudo-header
 * mode also subtracts the change from skb->csum; but in IPv6 the address bytes change too, by
 * as much (no header checksum balances them, as in IPv4), so bpf_csum_update adds it back: the
 * packet's sum did not change, and neither does skb->csum (netfilter's
 * inet_proto_csum_replace16 leaves it alone for the same reason). For later fragments only the
 * address changes, and skb->csum follows it.
 */
__always_inline_fn int rewrite6(struct __sk_buff *skb, const struct pkt6 *p, int dst_side,
				const __be32 *from_addr, const __be32 *to_addr, __be16 from_port,
				__be16 to_port)
{
	int has_l4 = p->frag != FRAG_LATER;
	__u32 csum_off = l4_csum_off6(p), poff = port_off6(p, dst_side);
	__u32 addr_off = dst_side ? IPV6_DADDR_OFF(p->l3_off) : IPV6_SADDR_OFF(p->l3_off);
	__u64 flags = l4_csum_flags(p->proto);
	__u8 summed = skb_ip_summed(skb);
	int by_helper = summed == CHECKSUM_UNKNOWN || summed == CHECKSUM_COMPLETE;
	__u32 diff = csum_diff16(from_addr, to_addr);
	void *data, *data_end;
	__be32 *addr;
	__sum16 *csum;
	__be16 *port;

	if (by_helper) {
		if (has_l4 &&
		    bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | flags) < 0)
			return -1;
		if (has_l4 && from_port != to_port &&
		    bpf_l4_csum_replace(skb, csum_off, from_port, to_port, flags | sizeof(to_port)) < 0)
			return -1;
		/* Only acts on CHECKSUM_COMPLETE (-ENOTSUPP otherwise, nothing to follow). */
		bpf_csum_update(skb, diff);
	}

	/* The parser's L3 offset (Ethernet only today), bounded for the verifier. */
	if (p->l3_off > ETH_HLEN)
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	addr = data + addr_off;
	if ((void *)(addr + 4) > data_end)
		return -1;
	v6_copy(addr, to_addr);
	if (!has_l4)
		return 0;
	if (!by_helper) {
		if (csum_off > TCP_CSUM_OFF(MASQ_IPV6_L4_MAX_OFF))
			return -1;
		csum = data + csum_off;
		if ((void *)(csum + 1) > data_end)
			return -1;
		*csum = l4_csum_updated6(*csum, summed, p->proto, diff, from_port, to_port);
	}
	if (from_port != to_port) {
		if (poff > ICMP_ID_OFF(MASQ_IPV6_L4_MAX_OFF))
			return -1;
		port = data + poff;
		if ((void *)(port + 1) > data_end)
			return -1;
		*port = to_port;
	}
	return 0;
}

#endif /* MASQ_LIB_CSUM6_H */
