/*
 * Test only: a stand-in for a CNI's tc programs (Cilium's bpf_host), never part of masq's object.
 * It counts the packets it sees per direction and returns TC_ACT_OK, which ends a TCX chain and
 * clsact classification: a program behind it never runs. The end-to-end tests put it on the
 * same hooks as masq to prove masq runs first (docs/ebpf.md, "Beside other programs").
 */
#include "../lib/common.h"

char _license[] SEC("license") = "GPL";

/* Packets seen: [0] on egress, [1] on ingress. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} cnilike_packets SEC(".maps");

__always_inline_fn int count(__u32 slot)
{
	__u64 *packets = bpf_map_lookup_elem(&cnilike_packets, &slot);

	if (packets)
		__sync_fetch_and_add(packets, 1);
	return TC_ACT_OK;
}

SEC("classifier")
int cnilike_egress(struct __sk_buff *skb)
{
	return count(0);
}

SEC("classifier")
int cnilike_ingress(struct __sk_buff *skb)
{
	return count(1);
}
