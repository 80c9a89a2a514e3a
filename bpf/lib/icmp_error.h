/* Translates ICMP errors about masqueraded flows back to the pod (PMTU discovery, traceroute). */
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

/*
 * A router's "destination unreachable" (including "fragmentation needed") or "time exceeded"
 * quotes the packet masq sent: source = the SNAT address and port. The outer destination, the
 * quoted source and the quoted port go back to the pod's, and every checksum covering them is
 * updated by hand: the helpers know nothing of quoted headers. Each change is balanced by its
 * checksum field inside the same region, so a CHECKSUM_COMPLETE skb->csum stays right.
 * The quoted TCP checksum lies past the 8 quoted bytes and is left alone; a quoted UDP or ICMP
 * checksum is updated. Anything unexpected leaves the packet untouched.
 */
__always_inline_fn int icmp_error_ingress(struct __sk_buff *skb, const struct pkt *p)
{
	__u32 inner_l3 = p->l4_off + ICMP_HDR_LEN, inner_l4, inner_ihl;
	__be32 old_inner_saddr, pod_addr;
	__be16 old_port, pod_port, old_sum, new_sum;
	struct icmp_echo_hdr *icmp;
	struct nat_tuple rev = {};
	struct iphdr *ip, *inner;
	struct nat_entry *e;
	void *data, *data_end;
	__u8 *l4;
	__u16 icmp_sum;

	if (inner_l3 > ETH_HLEN + 60 + ICMP_HDR_LEN)
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
	if (inner->saddr != ip->daddr)
		return MASQ_CONTINUE;

	rev.saddr = inner->daddr;
	rev.daddr = inner->saddr;
	rev.proto = inner->protocol;
	if (inner->protocol == IPPROTO_TCP || inner->protocol == IPPROTO_UDP) {
		rev.sport = *(__be16 *)(l4 + 2);
		rev.dport = *(__be16 *)(l4 + 0);
		old_port = rev.dport;
	} else if (inner->protocol == IPPROTO_ICMP && l4[0] == ICMP_ECHO) {
		rev.dport = *(__be16 *)(l4 + 4);
		old_port = rev.dport;
	} else {
		return MASQ_CONTINUE;
	}
	e = bpf_map_lookup_elem(&masq_nat_ingress, &rev);
	if (!e || (e->flags & NAT_F_HOST))
		return MASQ_CONTINUE;
	pod_addr = e->to_addr;
	pod_port = e->to_port;
	old_inner_saddr = inner->saddr;

	/* Outer header: destination back to the pod. */
	ip->check = csum_replace4(ip->check, ip->daddr, pod_addr);
	ip->daddr = pod_addr;

	/* Quoted IP header: source back to the pod, its own checksum, and the ICMP sum over both. */
	icmp_sum = icmp->checksum;
	old_sum = inner->check;
	new_sum = csum_replace4(old_sum, old_inner_saddr, pod_addr);
	icmp_sum = csum_replace4(icmp_sum, old_inner_saddr, pod_addr);
	icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
	inner->check = new_sum;
	inner->saddr = pod_addr;

	/* Quoted transport header: source port (or echo id), and its checksum when quoted. */
	if (inner->protocol == IPPROTO_UDP) {
		old_sum = *(__u16 *)(l4 + 6);
		if (old_sum) {
			new_sum = csum_replace4(old_sum, old_inner_saddr, pod_addr);
			new_sum = csum_replace2(new_sum, old_port, pod_port);
			if (!new_sum)
				new_sum = 0xffff;
			icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
			*(__u16 *)(l4 + 6) = new_sum;
		}
		*(__be16 *)(l4 + 0) = pod_port;
	} else if (inner->protocol == IPPROTO_TCP) {
		*(__be16 *)(l4 + 0) = pod_port;
	} else {
		old_sum = *(__u16 *)(l4 + 2);
		new_sum = csum_replace2(old_sum, old_port, pod_port);
		icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
		*(__u16 *)(l4 + 2) = new_sum;
		*(__be16 *)(l4 + 4) = pod_port;
	}
	icmp_sum = csum_replace2(icmp_sum, old_port, pod_port);
	icmp->checksum = icmp_sum;

	/* Like the flow's own replies: masq's ip rule must answer the reverse-path check. */
	if (e->flags & NAT_F_STEERED)
		mark_steered_reply(skb);
	nat_touch(e, p, 1);
	count(MASQ_ICMP_ERROR_TRANSLATED);
	return MASQ_CONTINUE;
}

#endif /* MASQ_LIB_ICMP_ERROR_H */
