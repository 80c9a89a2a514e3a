/* Per-CPU packet counters indexed by enum masq_reason, summed by userspace. */
#ifndef MASQ_LIB_METRICS_H
#define MASQ_LIB_METRICS_H

#include "common.h"
#include "reasons.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, MASQ_REASON_MAX);
} masq_counters SEC(".maps");

__always_inline_fn void count(enum masq_reason reason)
{
	__u32 key = reason;
	__u64 *value = bpf_map_lookup_elem(&masq_counters, &key);

	if (value)
		*value += 1; /* per-CPU slot: no other writer */
}

/* Counts n events of one reason at once. */
__always_inline_fn void count_n(enum masq_reason reason, __u64 n)
{
	__u32 key = reason;
	__u64 *value = bpf_map_lookup_elem(&masq_counters, &key);

	if (value)
		*value += n;
}

/* Counts a drop and returns the verdict to hand to tc. */
__always_inline_fn int drop(enum masq_reason reason)
{
	count(reason);
	return MASQ_DROP;
}

#endif /* MASQ_LIB_METRICS_H */
