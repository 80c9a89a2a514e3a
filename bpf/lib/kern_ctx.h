/* The kernel's struct sk_buff behind the tc context, for the one field __sk_buff lacks. */
#ifndef MASQ_LIB_KERN_CTX_H
#define MASQ_LIB_KERN_CTX_H

#include "common.h"
#include <bpf/bpf_core_read.h>

/* skb->ip_summed (include/linux/skbuff.h) */
#define CHECKSUM_NONE 0
#define CHECKSUM_UNNECESSARY 1
#define CHECKSUM_COMPLETE 2
#define CHECKSUM_PARTIAL 3
/* The kernel cannot tell us (no bpf_cast_to_kern_ctx): leave checksums to the helpers. */
#define CHECKSUM_UNKNOWN 0xff

/* Only the field masq reads; CO-RE finds it wherever the running kernel's sk_buff has it. */
struct sk_buff {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

/*
 * bpf_cast_to_kern_ctx is a kfunc (kernel 6.2+). aya 0.14 cannot relocate kfunc calls, so the
 * program calls this placeholder helper id instead and the loader rewrites every such call:
 * into the kfunc call (by its BTF id in vmlinux), or into `r0 = 0` on a kernel without it
 * (crates/datapath/src/ebpf/kfunc.rs, which holds the same number).
 */
#define MASQ_KFUNC_CAST_TO_KERN_CTX 0x6d617301
static struct sk_buff *(*const cast_to_kern_ctx)(struct __sk_buff *skb) =
	(void *)MASQ_KFUNC_CAST_TO_KERN_CTX;

__always_inline_fn __u8 skb_ip_summed(struct __sk_buff *skb)
{
	struct sk_buff *kskb = cast_to_kern_ctx(skb);

	if (!kskb)
		return CHECKSUM_UNKNOWN;
	return BPF_CORE_READ_BITFIELD(kskb, ip_summed);
}

#endif /* MASQ_LIB_KERN_CTX_H */
