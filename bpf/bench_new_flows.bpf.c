/*
 * Benchmark harness, never loaded by the agent (bench/ebpf_test_run.rs): masq's code meeting a
 * new flow on every repeat of one BPF_PROG_TEST_RUN. Each repeat turns the packet back into the
 * first packet of a flow not seen before: bench_new_flow (and bench_new_flow6 for IPv6), a
 * pod's flow (the pod's address again, since the last repeat translated it, and the next source
 * port); bench_new_inbound, a client's flow towards a pod (the next source port), met by the
 * ingress code.
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

SEC("classifier")
int bench_new_inbound(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct tcphdr *tcp = (void *)(ip + 1);
	__u32 n;

	if ((void *)(tcp + 1) > data_end)
		return MASQ_DROP;
	if (skb->cb[0] == 0)
		skb->cb[2] = bpf_ntohs(tcp->source);
	n = skb->cb[0]++;
	tcp->source = bpf_htons((__u16)(skb->cb[2] + n));
	return ingress(skb);
}

/*
 * The same for IPv6: each repeat's packet becomes the SYN of a new flow from the pod's address
 * (skb->cb[1..4], saved at the first repeat) and the next source port from 32768.
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
