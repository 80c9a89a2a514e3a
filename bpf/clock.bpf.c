/*
 * masq's clock reader. The NAT entries are stamped in jiffies (lib/nat.h: nat_now); userspace
 * runs this program through BPF_PROG_TEST_RUN to read jiffies and CLOCK_MONOTONIC_COARSE at
 * one instant, which gives it the kernel's HZ and the jiffies of any moment
 * (crates/datapath/src/ebpf/clock.rs). A separate object: it needs none of masq's maps.
 */
#include "lib/common.h"

char _license[] SEC("license") = "GPL";

struct clock_sample {
	__u64 jiffies;
	__u64 coarse_ns;
};

SEC("classifier")
int masq_clock(struct __sk_buff *skb)
{
	struct clock_sample sample = {
		.jiffies = bpf_jiffies64(),
		.coarse_ns = bpf_ktime_get_coarse_ns(),
	};

	/* Into the test frame, which comes back as data_out. */
	return bpf_skb_store_bytes(skb, 0, &sample, sizeof(sample), 0) == 0 ? 0 : 1;
}
