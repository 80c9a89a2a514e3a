/* Address and port rewrites with incremental checksum updates (RFC 1624). */
#ifndef MASQ_LIB_CSUM_H
#define MASQ_LIB_CSUM_H

#include "common.h"
#include "kern_ctx.h"
#include "parse.h"

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

/*
 * The TCP/UDP checksum depends on skb->ip_summed. With CHECKSUM_PARTIAL (pod traffic with
 * offload) the field holds the pseudo-header sum itself, not its complement, and the port is not
 * in it yet; with CHECKSUM_COMPLETE the kernel's skb->csum must follow an address change, which
 * only the helper can write. So the field is updated here, with arithmetic, when the kernel
 * tells the program its ip_summed (kern_ctx.h) and it is not COMPLETE; otherwise through
 * bpf_l4_csum_replace, one call per changed field. The IPv4 header checksum is always complete
 * and written directly; each direct change is balanced by its checksum field, so a COMPLETE
 * skb->csum stays right. Helpers invalidate packet pointers: they run first, and the pointers
 * are derived afresh afterwards.
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

/* Where the port (or ICMP echo identifier) of one side of the tuple sits. */
__always_inline_fn __u32 port_off(const struct pkt *p, int dst_side)
{
	if (p->proto == IPPROTO_ICMP)
		return ICMP_ID_OFF(p->l4_off);
	return p->l4_off + (dst_side ? 2 : 0);
}

/* The transport checksum after the rewrite, for every ip_summed but COMPLETE (see above). */
__always_inline_fn __u16 l4_csum_updated(__u16 csum, __u8 summed, __u8 proto, __be32 from_addr,
					 __be32 to_addr, __be16 from_port, __be16 to_port)
{
	/* TCP and UDP sums cover the addresses through the pseudo header; ICMP's does not. */
	int pseudo = proto != IPPROTO_ICMP;

	if (proto == IPPROTO_UDP && csum == 0)
		return 0;
	if (summed == CHECKSUM_PARTIAL) {
		/* The sum itself: add the address change to it; the port is not summed yet. */
		if (pseudo && from_addr != to_addr)
			csum = (__u16)~csum_replace4((__u16)~csum, from_addr, to_addr);
	} else {
		if (pseudo && from_addr != to_addr)
			csum = csum_replace4(csum, from_addr, to_addr);
		if (from_port != to_port)
			csum = csum_replace2(csum, from_port, to_port);
	}
	return proto == IPPROTO_UDP && csum == 0 ? 0xffff : csum;
}

/*
 * Replaces the source (dst_side = 0) or destination address and port of the packet.
 * Later fragments have no transport header: only the address changes.
 */
__always_inline_fn int rewrite(struct __sk_buff *skb, const struct pkt *p, int dst_side,
			       __be32 from_addr, __be32 to_addr, __be16 from_port, __be16 to_port)
{
	int has_l4 = p->frag != FRAG_LATER;
	__u32 csum_off = l4_csum_off(p), poff = port_off(p, dst_side);
	__u64 flags = l4_csum_flags(p->proto);
	__u8 summed = has_l4 ? skb_ip_summed(skb) : CHECKSUM_NONE;
	int by_helper = summed == CHECKSUM_UNKNOWN || summed == CHECKSUM_COMPLETE;
	void *data, *data_end;
	struct iphdr *ip;
	__sum16 *csum;
	__be16 *port;

	if (has_l4 && by_helper) {
		if (p->proto != IPPROTO_ICMP && from_addr != to_addr &&
		    bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr,
					BPF_F_PSEUDO_HDR | flags | sizeof(to_addr)) < 0)
			return -1;
		if (from_port != to_port &&
		    bpf_l4_csum_replace(skb, csum_off, from_port, to_port, flags | sizeof(to_port)) < 0)
			return -1;
	}

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	/* The parser's L3 offset (Ethernet only today), bounded for the verifier. */
	if (p->l3_off > ETH_HLEN)
		return -1;
	ip = data + p->l3_off;
	if ((void *)(ip + 1) > data_end)
		return -1;
	ip->check = csum_replace4(ip->check, from_addr, to_addr);
	if (dst_side)
		ip->daddr = to_addr;
	else
		ip->saddr = to_addr;
	if (!has_l4)
		return 0;
	if (!by_helper) {
		if (csum_off > TCP_CSUM_OFF(MAX_IPV4_L4_OFF))
			return -1;
		csum = data + csum_off;
		if ((void *)(csum + 1) > data_end)
			return -1;
		*csum = l4_csum_updated(*csum, summed, p->proto, from_addr, to_addr, from_port,
					to_port);
	}
	if (from_port != to_port) {
		if (poff > ICMP_ID_OFF(MAX_IPV4_L4_OFF))
			return -1;
		port = data + poff;
		if ((void *)(port + 1) > data_end)
			return -1;
		*port = to_port;
	}
	return 0;
}

#endif /* MASQ_LIB_CSUM_H */
