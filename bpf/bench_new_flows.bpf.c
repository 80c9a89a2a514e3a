/*
 * Benchmark harness, never loaded by the agent (bench/ebpf_test_run.rs): masq's egress code
 * meeting a new flow on every repeat of one BPF_PROG_TEST_RUN (IPv4, and IPv6 below). Each repeat turns the packet
 * back into the first packet of a flow not seen before whose source port is free, as most new
 * flows are: the pod's address again (the last repeat translated it) and the next source port.
 */
#include "masq.bpf.c"

SEC("classifier")
int bench_new_flow(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct tcphdr *tcp = (void *)(ip + 1);
	__u32 n;

	if ((void *)(tcp + 1) > data_end)
		return MASQ_DROP;
	/* skb->cb lives as long as the run's skb: the flow counter, the pod, its first port. */
	if (skb->cb[0] == 0) {
		skb->cb[1] = ip->saddr;
		skb->cb[2] = bpf_ntohs(tcp->source);
	}
	n = skb->cb[0]++;
	ip->saddr = skb->cb[1];
	tcp->source = bpf_htons((__u16)(skb->cb[2] + n));
	return egress(skb, 0);
}

/*
 * The same for IPv6: each repeat's packet becomes the SYN of a new flow from the pod's address
 * (skb->cb[1..4], saved at the first repeat) and the next source port from 32768, a free one.
 */
SEC("classifier")
int bench_new_flow6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct tcphdr *tcp = (void *)(ip6 + 1);
	__u32 n;

	if ((void *)(tcp + 1) > data_end)
		return MASQ_DROP;
	if (skb->cb[0] == 0) {
		skb->cb[1] = ip6->saddr.in6_u.u6_addr32[0];
		skb->cb[2] = ip6->saddr.in6_u.u6_addr32[1];
		skb->cb[3] = ip6->saddr.in6_u.u6_addr32[2];
		skb->cb[4] = ip6->saddr.in6_u.u6_addr32[3];
	}
	n = skb->cb[0]++;
	ip6->saddr.in6_u.u6_addr32[0] = skb->cb[1];
	ip6->saddr.in6_u.u6_addr32[1] = skb->cb[2];
	ip6->saddr.in6_u.u6_addr32[2] = skb->cb[3];
	ip6->saddr.in6_u.u6_addr32[3] = skb->cb[4];
	tcp->source = bpf_htons((__u16)(32768 + n));
	return egress6(skb, 0);
}
