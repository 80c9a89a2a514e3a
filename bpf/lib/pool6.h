/* The IPv6 SNAT address pools: lib/pool.h's rules with 16-byte addresses. */
#ifndef MASQ_LIB_POOL6_H
#define MASQ_LIB_POOL6_H

#include "addr6.h"
#include "common.h"
#include "jhash.h"
#include "nat_types.h"
#include "pool.h"

/* ifindex → that interface's IPv6 pool (its primary global address); key 0: every interface
 * without its own (--snat-ip of IPv6, --snat-ips-from-interface). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct snat_pool6);
	__uint(max_entries, 256);
} masq_snat_pools6 SEC(".maps");

/* masq_ports_full (lib/pool.h) for IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_tuple6);
	__type(value, __u64);
	__uint(max_entries, 4096);
} masq_ports_full6 SEC(".maps");

/* snat_pool_for (lib/pool.h) for IPv6. */
__always_inline_fn const struct snat_pool6 *snat_pool6_for(__u32 ifindex)
{
	__u32 any = 0;
	const struct snat_pool6 *pool = bpf_map_lookup_elem(&masq_snat_pools6, &ifindex);

	if (!pool)
		pool = bpf_map_lookup_elem(&masq_snat_pools6, &any);
	return pool;
}

/* snat_pool_home for IPv6: jhash over the address's 16 bytes (nft's `jhash ip6 saddr`). */
__always_inline_fn __u32 snat_pool6_home(const __be32 *pod, __u32 size)
{
	return reciprocal_scale(jhash_4words(pod, MASQ_POOL_HASH_SEED), size);
}

/* snat_pool_contains (lib/pool.h) for IPv6. */
__always_inline_fn int snat_pool6_contains(const struct snat_pool6 *pool, const __be32 *addr)
{
	__u32 size = snat_pool_size(pool->count);

	for (__u32 i = 0; i < MASQ_SNAT_POOL_MAX; i++) {
		if (i >= size)
			break;
		if (v6_equal(pool->addrs[i].a, addr))
			return 1;
	}
	return 0;
}

#endif /* MASQ_LIB_POOL6_H */
