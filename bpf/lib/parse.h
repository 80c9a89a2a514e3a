/* Ethernet + IPv4 + TCP/UDP/ICMP parsing into a flat struct, with header lengths checked. */
#ifndef MASQ_LIB_PARSE_H
#define MASQ_LIB_PARSE_H

#include "common.h"
#include "reasons.h"
#include "metrics.h"

/* <linux/icmp.h> pulls in <linux/if.h>, which does not build under -target bpf (EBPF-NOTES). */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11

#define IP_MF 0x2000
#define IPV4_MAX_TOT_LEN 0xffff
#define IP_OFFSET 0x1fff

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST = 1, /* offset 0, more fragments follow: carries the transport header */
	FRAG_LATER = 2, /* offset > 0: no transport header */
};

/* Offsets of the fields the rewrites touch. */
/* The longest IPv4 header (IHL 15) and the furthest transport header it allows. */
#define MAX_IPV4_HLEN 60
#define MAX_IPV4_L4_OFF (ETH_HLEN + MAX_IPV4_HLEN)

#define IP_CSUM_OFF(l3) ((l3) + 10)
#define IP_SADDR_OFF(l3) ((l3) + 12)
#define IP_DADDR_OFF(l3) ((l3) + 16)
#define TCP_CSUM_OFF(l4) ((l4) + 16)
#define UDP_CSUM_OFF(l4) ((l4) + 6)
#define ICMP_CSUM_OFF(l4) ((l4) + 2)
#define ICMP_ID_OFF(l4) ((l4) + 4)

/* Bits of the TCP flags byte (offset 13). */
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* ICMP echo: the identifier (requests) or 0 (replies) */
	__be16 dport; /* ICMP echo: 0 (requests) or the identifier (replies) */
	__be16 ip_id;
	__u8 proto;
	__u8 tcp_flags; /* the byte holding FIN..CWR */
	__u8 icmp_type;
	__u8 frag; /* enum frag_kind */
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_UNSUPPORTED = 1, /* leave the packet alone */
	/* negative: -(enum masq_reason) of a drop */
};

/* Makes the first `len` bytes linear (direct access) if the skb has them at all. */
__always_inline_fn int ensure_linear(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return 0;
	if (len > skb->len)
		return -1;
	if (bpf_skb_pull_data(skb, len) < 0)
		return -1;
	if ((void *)(long)skb->data + len > (void *)(long)skb->data_end)
		return -1;
	return 0;
}

/* Transport header bytes masq reads or writes, per protocol (0: not translated). */
__always_inline_fn __u32 l4_len_needed(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_ICMP:
		return sizeof(struct icmp_echo_hdr);
	}
	return 0;
}

/*
 * Parses an Ethernet frame. On PARSE_OK every field of `p` is set and the headers up to the
 * transport header's end are linear. Ingress is 1 on the ingress program: it decides which
 * ICMP echo type carries a flow (requests leave, replies come back).
 */
__always_inline_fn int parse_ipv4(struct __sk_buff *skb, struct pkt *p, int ingress)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 ihl_bytes, l4_len;
	__u16 frag_off;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PARSE_UNSUPPORTED;
	if (ensure_linear(skb, sizeof(*eth) + sizeof(*ip)) < 0)
		return -MASQ_DROP_BAD_IHL;

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_UNSUPPORTED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_UNSUPPORTED; /* VLAN tags and friends: not ours to translate */
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return -MASQ_DROP_BAD_IHL;
	if (ip->version != 4)
		return PARSE_UNSUPPORTED;
	ihl_bytes = ip->ihl * 4;
	if (ihl_bytes < sizeof(*ip))
		return -MASQ_DROP_BAD_IHL;
	if (ip->tot_len == 0 && skb->len > sizeof(*eth) + IPV4_MAX_TOT_LEN) {
		/* BIG TCP (kernel 6.3+): a GSO packet over 64 KiB has no room for its length in
		 * tot_len and carries 0; the skb's own length is the truth. */
		count(MASQ_BIG_PACKET);
	} else if (bpf_ntohs(ip->tot_len) < ihl_bytes) {
		return -MASQ_DROP_BAD_IHL;
	}

	p->l3_off = sizeof(*eth);
	p->l4_off = sizeof(*eth) + ihl_bytes;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ip_id = ip->id;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	p->icmp_type = 0;

	frag_off = bpf_ntohs(ip->frag_off);
	if (frag_off & IP_OFFSET)
		p->frag = FRAG_LATER;
	else if (frag_off & IP_MF)
		p->frag = FRAG_FIRST;
	else
		p->frag = FRAG_NONE;

	l4_len = l4_len_needed(p->proto);
	if (!l4_len)
		return PARSE_UNSUPPORTED;
	if (p->frag == FRAG_LATER)
		return PARSE_OK; /* no transport header here */

	/* Options sit between the fixed header and the transport header: skip them by IHL. */
	if (p->l4_off > MAX_IPV4_L4_OFF || ensure_linear(skb, p->l4_off + l4_len) < 0)
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
		if (!ingress && icmp->type == ICMP_ECHO)
			p->sport = icmp->id;
		else if (ingress && icmp->type == ICMP_ECHOREPLY)
			p->dport = icmp->id;
		else if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
			return PARSE_UNSUPPORTED;
	}
	return PARSE_OK;
}

#endif /* MASQ_LIB_PARSE_H */
