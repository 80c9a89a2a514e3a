/* ICMP errors about translated flows, both ways: a router's error back to the pod (PMTU
 * discovery, traceroute), and a pod's error out to the remote side (with the node's address). */
#ifndef MASQ_LIB_ICMP_ERROR_H
#define MASQ_LIB_ICMP_ERROR_H

#include "common.h"
#include "csum.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"
#include "steer.h"

#define ICMP_HDR_LEN 8
#define INNER_L4_LEN 8 /* all an ICMP error is sure to quote of the transport header */
#define INNER_SADDR_OFF 12
#define INNER_DADDR_OFF 16

/*
 * An ICMP error (destination unreachable, including "fragmentation needed", or time exceeded)
 * quotes the packet it is about, as that packet was when the error's sender saw it. Both ways
 * the error belongs to a translated flow and must be translated as the flow is, like
 * conntrack's RELATED packets:
 * - arriving (ingress = 1): a router quotes what masq sent, source = the SNAT address and
 *   port; the outer destination, the quoted source and the quoted source port go back to the
 *   pod's (the reverse half, keyed by the mirror of the quoted tuple);
 * - leaving (ingress = 0): a pod quotes a reply it got (destination = the pod); the outer
 *   source, the quoted destination and port become the flow's translation (the forward half),
 *   or the error would leave with the pod's address.
 * Every checksum covering a changed field is updated by hand (the helpers know nothing of
 * quoted headers); each change is balanced by its checksum field inside the same region, so a
 * CHECKSUM_COMPLETE skb->csum stays right. The quoted TCP checksum lies past the 8 quoted
 * bytes and is left alone; a quoted UDP or ICMP checksum is updated. Anything unexpected
 * leaves the packet untouched.
 */
__always_inline_fn int icmp_error(struct __sk_buff *skb, const struct pkt *p, const int ingress)
{
	__u32 inner_l3 = p->l4_off + ICMP_HDR_LEN, inner_l4, inner_ihl, addr_off, port_off;
	__be32 old_addr, new_addr, *outer_addr, *quoted_addr;
	__be16 old_port, new_port, old_sum, new_sum;
	struct icmp_echo_hdr *icmp;
	struct nat_tuple key = {};
	struct iphdr *ip, *inner;
	struct nat_entry *e;
	void *data, *data_end;
	__u8 *l4;
	__u16 icmp_sum;

	if (inner_l3 > MAX_IPV4_L4_OFF + ICMP_HDR_LEN)
		return MASQ_CONTINUE;
	if (ensure_linear(skb, inner_l3 + sizeof(struct iphdr)) < 0)
		return MASQ_CONTINUE;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	inner = data + inner_l3;
	if ((void *)(inner + 1) > data_end)
		return MASQ_CONTINUE;
	inner_ihl = inner->ihl * 4;
	if (inner_ihl < sizeof(struct iphdr) || (bpf_ntohs(inner->frag_off) & IP_OFFSET))
		return MASQ_CONTINUE;
	inner_l4 = inner_l3 + inner_ihl;
	if (ensure_linear(skb, inner_l4 + INNER_L4_LEN) < 0)
		return MASQ_CONTINUE;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + p->l3_off;
	icmp = data + p->l4_off;
	inner = data + inner_l3;
	l4 = data + inner_l4;
	if ((void *)(ip + 1) > data_end || (void *)(icmp + 1) > data_end ||
	    (void *)(inner + 1) > data_end || (void *)(l4 + INNER_L4_LEN) > data_end)
		return MASQ_CONTINUE;
	/* The quoted packet was sent by (ingress) or to (egress) the error's own peer. */
	if (ingress ? inner->saddr != ip->daddr : inner->daddr != ip->saddr)
		return MASQ_CONTINUE;

	/* The flow's key in this direction's half: the mirror of the quoted tuple. */
	key.saddr = inner->daddr;
	key.daddr = inner->saddr;
	key.proto = inner->protocol;
	if (inner->protocol == IPPROTO_TCP || inner->protocol == IPPROTO_UDP) {
		key.sport = *(__be16 *)(l4 + 2);
		key.dport = *(__be16 *)(l4 + 0);
		port_off = ingress ? 0 : 2;
	} else if (ingress && inner->protocol == IPPROTO_ICMP && l4[0] == ICMP_ECHO) {
		key.dport = *(__be16 *)(l4 + 4);
		port_off = 4;
	} else {
		return MASQ_CONTINUE;
	}
	e = bpf_map_lookup_elem(ingress ? (void *)&masq_nat_ingress : (void *)&masq_nat_egress, &key);
	if (!e || (e->flags & (NAT_F_HOST | NAT_F_PASS)))
		return MASQ_CONTINUE;
	new_addr = e->to_addr;
	new_port = e->to_port;

	/* Outer header: the pod's side of it. */
	outer_addr = ingress ? &ip->daddr : &ip->saddr;
	ip->check = csum_replace4(ip->check, *outer_addr, new_addr);
	*outer_addr = new_addr;

	/* Quoted IP header: the pod's address, its own checksum, and the ICMP sum over both. */
	addr_off = ingress ? INNER_SADDR_OFF : INNER_DADDR_OFF;
	quoted_addr = (__be32 *)((__u8 *)inner + addr_off);
	old_addr = *quoted_addr;
	icmp_sum = icmp->checksum;
	old_sum = inner->check;
	new_sum = csum_replace4(old_sum, old_addr, new_addr);
	icmp_sum = csum_replace4(icmp_sum, old_addr, new_addr);
	icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
	inner->check = new_sum;
	*quoted_addr = new_addr;

	/* Quoted transport header: the pod's port (or echo id), and its checksum when quoted. */
	old_port = *(__be16 *)(l4 + port_off);
	if (inner->protocol == IPPROTO_UDP) {
		old_sum = *(__u16 *)(l4 + 6);
		if (old_sum) {
			new_sum = csum_replace4(old_sum, old_addr, new_addr);
			new_sum = csum_replace2(new_sum, old_port, new_port);
			if (!new_sum)
				new_sum = 0xffff;
			icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
			*(__u16 *)(l4 + 6) = new_sum;
		}
	} else if (inner->protocol == IPPROTO_ICMP) {
		old_sum = *(__u16 *)(l4 + 2);
		new_sum = csum_replace2(old_sum, old_port, new_port);
		icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
		*(__u16 *)(l4 + 2) = new_sum;
	}
	*(__be16 *)(l4 + port_off) = new_port;
	icmp_sum = csum_replace2(icmp_sum, old_port, new_port);
	icmp->checksum = icmp_sum;

	/* Like the flow's own replies: masq's ip rule must answer the reverse-path check. */
	if (ingress && (e->flags & NAT_F_STEERED))
		mark_steered_reply(skb);
	nat_touch(e, p, ingress);
	count(MASQ_ICMP_ERROR_TRANSLATED);
	return MASQ_CONTINUE;
}

#endif /* MASQ_LIB_ICMP_ERROR_H */
