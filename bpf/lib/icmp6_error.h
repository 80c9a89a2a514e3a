/*
 * ICMPv6 errors about translated flows, both ways (lib/icmp_error.h for IPv4): Destination
 * Unreachable, Packet Too Big (path-MTU discovery), Time Exceeded (traceroute) and Parameter
 * Problem quote the packet they are about, which is translated as its flow is.
 */
#ifndef MASQ_LIB_ICMP6_ERROR_H
#define MASQ_LIB_ICMP6_ERROR_H

#include "addr6.h"
#include "common.h"
#include "csum.h"
#include "csum6.h"
#include "icmp_error.h"
#include "metrics.h"
#include "nat6.h"
#include "parse6.h"
#include "steer.h"

#define INNER6_SADDR_OFF 8
#define INNER6_DADDR_OFF 24
#define INNER_TCP_CSUM_END 18 /* bytes of a quoted TCP header up to its checksum's end */

/*
 * As icmp_error(), with IPv6's differences: there is no header checksum, and the ICMPv6
 * checksum covers a pseudo-header, as the quoted UDP, TCP and ICMPv6 checksums do theirs. So
 * the pod's address appears four times: outer header, outer pseudo-header (both through the
 * outer checksum), quoted header, quoted pseudo-header (through the quoted transport checksum,
 * whose change the outer checksum follows). The quoted TCP checksum is updated when the error
 * quotes it (ICMPv6 errors quote up to 1280 bytes, so usually they do). Every change is
 * balanced by a checksum field inside the packet: a CHECKSUM_COMPLETE skb->csum stays right.
 * The quoted packet must be the transport header right after its fixed header (no extension
 * headers); anything else is left untouched.
 */
__always_inline_fn int icmp6_error(struct __sk_buff *skb, const struct pkt6 *p, const int ingress)
{
	__u32 inner_l3 = p->l4_off + ICMP_HDR_LEN, inner_l4, addr_off, port_off, diff;
	__be32 old_addr[4], new_addr[4], *outer_addr, *quoted_addr;
	__be16 old_port, new_port, old_sum, new_sum;
	struct icmp_echo_hdr *icmp;
	struct nat_tuple6 key = {};
	struct ipv6hdr *ip6, *inner;
	struct nat_entry6 *e;
	void *data, *data_end;
	__u8 *l4;
	__u16 icmp_sum;
	int tcp_sum;

	if (inner_l3 > MASQ_IPV6_L4_MAX_OFF + ICMP_HDR_LEN)
		return MASQ_CONTINUE;
	inner_l4 = inner_l3 + IPV6_HDR_LEN;
	if (ensure_linear(skb, inner_l4 + INNER_L4_LEN) < 0)
		return MASQ_CONTINUE;
	/* The quoted TCP checksum, when the error quotes that far (and it can be made linear). */
	tcp_sum = ensure_linear(skb, inner_l4 + INNER_TCP_CSUM_END) == 0;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip6 = data + p->l3_off;
	icmp = data + p->l4_off;
	inner = data + inner_l3;
	l4 = data + inner_l4;
	if ((void *)(ip6 + 1) > data_end || (void *)(icmp + 1) > data_end ||
	    (void *)(inner + 1) > data_end || (void *)(l4 + INNER_L4_LEN) > data_end)
		return MASQ_CONTINUE;
	if (inner->version != 6)
		return MASQ_CONTINUE;
	/* The quoted packet was sent by (ingress) or to (egress) the error's own peer. */
	if (!v6_equal(ingress ? inner->saddr.in6_u.u6_addr32 : inner->daddr.in6_u.u6_addr32,
		      ingress ? ip6->daddr.in6_u.u6_addr32 : ip6->saddr.in6_u.u6_addr32))
		return MASQ_CONTINUE;

	/* The flow's key in this direction's half: the mirror of the quoted tuple. */
	v6_copy(key.saddr, inner->daddr.in6_u.u6_addr32);
	v6_copy(key.daddr, inner->saddr.in6_u.u6_addr32);
	key.proto = inner->nexthdr;
	if (inner->nexthdr == IPPROTO_TCP || inner->nexthdr == IPPROTO_UDP) {
		key.sport = *(__be16 *)(l4 + 2);
		key.dport = *(__be16 *)(l4 + 0);
		port_off = ingress ? 0 : 2;
	} else if (ingress && inner->nexthdr == IPPROTO_ICMPV6 && l4[0] == ICMPV6_ECHO_REQUEST) {
		key.dport = *(__be16 *)(l4 + 4);
		port_off = 4;
	} else {
		return MASQ_CONTINUE;
	}
	e = bpf_map_lookup_elem(ingress ? (void *)&masq_nat6_ingress : (void *)&masq_nat6_egress,
				&key);
	if (!e || (e->flags & (NAT_F_HOST | NAT_F_PASS)))
		return MASQ_CONTINUE;
	v6_copy(new_addr, e->to_addr);
	new_port = e->to_port;

	/* The outer header and the quoted one change from and to the same address. */
	outer_addr = ingress ? ip6->daddr.in6_u.u6_addr32 : ip6->saddr.in6_u.u6_addr32;
	addr_off = ingress ? INNER6_SADDR_OFF : INNER6_DADDR_OFF;
	quoted_addr = (__be32 *)((__u8 *)inner + addr_off);
	v6_copy(old_addr, quoted_addr);
	diff = csum_diff16(old_addr, new_addr);
	icmp_sum = icmp->checksum;
	icmp_sum = csum_replace_diff(icmp_sum, diff); /* the outer pseudo-header */
	icmp_sum = csum_replace_diff(icmp_sum, diff); /* the quoted header */
	v6_copy(outer_addr, new_addr);
	v6_copy(quoted_addr, new_addr);

	/* The quoted transport header: the pod's port (or echo id), and its checksum. */
	old_port = *(__be16 *)(l4 + port_off);
	if (inner->nexthdr == IPPROTO_UDP) {
		old_sum = *(__u16 *)(l4 + 6);
		if (old_sum) {
			new_sum = csum_replace_diff(old_sum, diff);
			new_sum = csum_replace2(new_sum, old_port, new_port);
			if (!new_sum)
				new_sum = 0xffff;
			icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
			*(__u16 *)(l4 + 6) = new_sum;
		}
	} else if (inner->nexthdr == IPPROTO_ICMPV6) {
		old_sum = *(__u16 *)(l4 + 2);
		new_sum = csum_replace_diff(old_sum, diff);
		new_sum = csum_replace2(new_sum, old_port, new_port);
		icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
		*(__u16 *)(l4 + 2) = new_sum;
	} else if (tcp_sum) {
		__u16 *quoted_sum = (__u16 *)(l4 + 16);

		if ((void *)(quoted_sum + 1) <= data_end) {
			old_sum = *quoted_sum;
			new_sum = csum_replace_diff(old_sum, diff);
			new_sum = csum_replace2(new_sum, old_port, new_port);
			icmp_sum = csum_replace2(icmp_sum, old_sum, new_sum);
			*quoted_sum = new_sum;
		}
	}
	*(__be16 *)(l4 + port_off) = new_port;
	icmp_sum = csum_replace2(icmp_sum, old_port, new_port);
	icmp->checksum = icmp_sum;

	if (ingress && (e->flags & NAT_F_STEERED))
		mark_steered_reply(skb);
	nat6_touch(e, p, ingress);
	count(MASQ_ICMP_ERROR_TRANSLATED);
	return MASQ_CONTINUE;
}

#endif /* MASQ_LIB_ICMP6_ERROR_H */
