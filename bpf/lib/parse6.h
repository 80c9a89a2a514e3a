/*
 * Ethernet + IPv6 + TCP/UDP/ICMPv6 parsing into a flat struct: the extension headers are walked
 * with a fixed bound, the fragment header read on the way.
 */
#ifndef MASQ_LIB_PARSE6_H
#define MASQ_LIB_PARSE6_H

#include "addr6.h"
#include "common.h"
#include "reasons.h"
#include "metrics.h"
#include "parse.h"
#include <linux/in6.h>
#include <linux/ipv6.h>

#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define IPV6_HDR_LEN 40
#define IPV6_MAX_PAYLOAD_LEN 0xffff
/* Offsets of the addresses in the IPv6 header. */
#define IPV6_SADDR_OFF(l3) ((l3) + 8)
#define IPV6_DADDR_OFF(l3) ((l3) + 24)

/*
 * The walk's bound: at most this many extension headers, ending at most this many bytes past
 * the fixed header. A chain that goes further is passed untouched and counted
 * (MASQ_PASS_EXT_HEADERS): the verifier needs a bound, and no real flow needs more (a
 * hop-by-hop header, a destination options header and a fragment header are the usual most).
 */
#define MASQ_IPV6_EXT_MAX 8
#define MASQ_IPV6_EXT_BYTES 256
/* Where a transport header can start at most. */
#define MASQ_IPV6_L4_MAX_OFF (ETH_HLEN + IPV6_HDR_LEN + MASQ_IPV6_EXT_BYTES)

/* IPv6 fragment header: frag_off holds the offset in 8-byte units << 3 and the M flag. */
#define IP6_OFFSET_MASK 0xfff8
#define IP6_MF_FLAG 0x0001

/* The IPv6 packet; the fields past the addresses mean what they mean in struct pkt. */
struct pkt6 {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 frag_id;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 frag; /* enum frag_kind */
};

/*
 * A value the verifier must forget (its exact range), written to and read back from a per-CPU
 * slot. The extension-header walk leaves a transport offset of a different range on each of
 * its paths; tracked precisely, each would be verified separately through everything that
 * follows (the port search most), past the verifier's limit in the bounded build. Forgotten,
 * they are one state. Only packets that carry extension headers pay this.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} masq_scratch6 SEC(".maps");

__always_inline_fn __u32 verifier_forget(__u32 value)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&masq_scratch6, &zero);

	if (!slot)
		return value;
	*(volatile __u32 *)slot = value;
	return *(volatile __u32 *)slot;
}

/* parse_ipv6 also returns this: leave the packet alone, its reason is counted already. */
#define PARSE_PASS_COUNTED 2

__always_inline_fn __u32 l4_len_needed6(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_ICMPV6:
		return sizeof(struct icmp_echo_hdr); /* the same 8 bytes as ICMP's */
	}
	return 0;
}

/*
 * Walks the extension headers from the fixed header's next-header field. Sets p->proto,
 * p->l4_off, p->frag and p->frag_id; returns PARSE_OK, PARSE_UNSUPPORTED (ESP and AH, which a
 * translation would break as IPv4's masq leaves them; no next header; an unknown header; a
 * routing header with segments left: the final destination is elsewhere and the transport
 * checksum covers that one) or PARSE_PASS_COUNTED (past the bound).
 */
__always_inline_fn int ipv6_walk(struct __sk_buff *skb, struct pkt6 *p, __u8 nexthdr)
{
	__u32 off = ETH_HLEN + IPV6_HDR_LEN;
	__u8 hdr[8];
	__u16 frag_off;

	p->frag = FRAG_NONE;
	p->frag_id = 0;
	p->proto = 0;
	p->l4_off = 0;
	/* One more round than headers: the last can only find the transport header. */
	for (int i = 0; i <= MASQ_IPV6_EXT_MAX; i++) {
		if (off > MASQ_IPV6_L4_MAX_OFF)
			break;
		switch (nexthdr) {
		case IPPROTO_TCP:
		case IPPROTO_UDP:
		case IPPROTO_ICMPV6:
			p->proto = nexthdr;
			p->l4_off = off;
			return PARSE_OK;
		}
		if (i == MASQ_IPV6_EXT_MAX)
			break;
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_DSTOPTS:
		case IPPROTO_ROUTING:
			if (bpf_skb_load_bytes(skb, off, hdr, 4) < 0)
				return -MASQ_DROP_TRUNCATED;
			if (nexthdr == IPPROTO_ROUTING && hdr[3] != 0)
				return PARSE_UNSUPPORTED;
			nexthdr = hdr[0];
			off += ((__u32)hdr[1] + 1) * 8;
			break;
		case IPPROTO_FRAGMENT:
			if (bpf_skb_load_bytes(skb, off, hdr, 8) < 0)
				return -MASQ_DROP_TRUNCATED;
			frag_off = ((__u16)hdr[2] << 8) | hdr[3];
			p->frag_id = *(__be32 *)&hdr[4];
			nexthdr = hdr[0];
			off += 8;
			if (frag_off & IP6_OFFSET_MASK) {
				/* No transport header here: the first fragment's fate decides. */
				p->frag = FRAG_LATER;
				p->proto = nexthdr;
				p->l4_off = off;
				return l4_len_needed6(nexthdr) ? PARSE_OK : PARSE_UNSUPPORTED;
			}
			if (frag_off & IP6_MF_FLAG)
				p->frag = FRAG_FIRST;
			break;
		default:
			return PARSE_UNSUPPORTED;
		}
	}
	count(MASQ_PASS_EXT_HEADERS);
	return PARSE_PASS_COUNTED;
}

/*
 * Parses an Ethernet frame carrying IPv6, like parse_ipv4: on PARSE_OK every field of `p` is
 * set and the headers up to the transport header's end are linear. Only ICMPv6 echo (requests
 * leave, replies come back, the identifier as the port) and the four errors are ICMPv6 masq
 * handles: neighbour discovery, router advertisements, MLD and the rest are never touched.
 */
__always_inline_fn int parse_ipv6(struct __sk_buff *skb, struct pkt6 *p, int ingress)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	__u32 l4_len;
	int ret;

	if (ensure_linear(skb, ETH_HLEN + IPV6_HDR_LEN) < 0)
		return -MASQ_DROP_TRUNCATED;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_UNSUPPORTED;
	if (eth->h_proto != bpf_htons(ETH_P_IPV6))
		return PARSE_UNSUPPORTED; /* VLAN tags and friends: not ours to translate */
	ip6 = (void *)(eth + 1);
	if ((void *)(ip6 + 1) > data_end)
		return -MASQ_DROP_TRUNCATED;
	if (ip6->version != 6)
		return PARSE_UNSUPPORTED;
	/* BIG TCP (kernel 5.19+): a GSO packet over 64 KiB carries payload length 0. */
	if (ip6->payload_len == 0 && skb->len > ETH_HLEN + IPV6_HDR_LEN + IPV6_MAX_PAYLOAD_LEN)
		count(MASQ_BIG_PACKET);

	p->l3_off = ETH_HLEN;
	v6_copy(p->saddr, ip6->saddr.in6_u.u6_addr32);
	v6_copy(p->daddr, ip6->daddr.in6_u.u6_addr32);
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	p->icmp_type = 0;
	ret = ipv6_walk(skb, p, ip6->nexthdr);
	if (ret != PARSE_OK)
		return ret;
	if (p->l4_off != ETH_HLEN + IPV6_HDR_LEN)
		p->l4_off = verifier_forget(p->l4_off);
	if (p->frag == FRAG_LATER)
		return PARSE_OK;

	l4_len = l4_len_needed6(p->proto);
	if (p->l4_off > MASQ_IPV6_L4_MAX_OFF || ensure_linear(skb, p->l4_off + l4_len) < 0)
		return -MASQ_DROP_TRUNCATED;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;

	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = data + p->l4_off;

		if ((void *)(tcp + 1) > data_end)
			return -MASQ_DROP_TRUNCATED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *udp = data + p->l4_off;

		if ((void *)(udp + 1) > data_end)
			return -MASQ_DROP_TRUNCATED;
		p->sport = udp->source;
		p->dport = udp->dest;
	} else {
		struct icmp_echo_hdr *icmp = data + p->l4_off;

		if ((void *)(icmp + 1) > data_end)
			return -MASQ_DROP_TRUNCATED;
		p->icmp_type = icmp->type;
		if (!ingress && icmp->type == ICMPV6_ECHO_REQUEST)
			p->sport = icmp->id;
		else if (ingress && icmp->type == ICMPV6_ECHO_REPLY)
			p->dport = icmp->id;
		else if (icmp->type < ICMPV6_DEST_UNREACH || icmp->type > ICMPV6_PARAMPROB)
			return PARSE_UNSUPPORTED;
	}
	return PARSE_OK;
}

#endif /* MASQ_LIB_PARSE6_H */
