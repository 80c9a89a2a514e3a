/* The IPv6 maps the userspace agent fills: CIDR tries, node addresses (SNAT pools: pool6.h). */
#ifndef MASQ_LIB_MAPS6_H
#define MASQ_LIB_MAPS6_H

#include "addr6.h"
#include "common.h"
#include "maps.h"
#include "nat_types.h"

/* IPv6 addresses of the node (as masq_local_addrs). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct v6_addr);
	__type(value, __u8);
	__uint(max_entries, 4096);
} masq_local_addrs6 SEC(".maps");

/* masq_dst_policy (lib/maps.h) for IPv6: destination prefix → decide6()'s reason. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(max_entries, MASQ_CIDR_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_dst_policy6 SEC(".maps");

/* nonMasqueradeSrcCIDRs, IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(max_entries, MASQ_CIDR_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_nonmasq_src6 SEC(".maps");

/* --pod-cidr, IPv6; consulted when MASQ_CFG_POD_CIDRS is set (then a source of neither
 * family's pod CIDRs is no pod, as docs/decision.md says). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_pod_cidrs6 SEC(".maps");

__always_inline_fn const __u8 *lpm6_lookup(void *trie, const __be32 *addr)
{
	struct lpm_v6_key key = { .prefixlen = 128 };

	v6_copy(key.addr, addr);
	return bpf_map_lookup_elem(trie, &key);
}

__always_inline_fn int lpm6_contains(void *trie, const __be32 *addr)
{
	return lpm6_lookup(trie, addr) != NULL;
}

__always_inline_fn int is_local_addr6(const __be32 *addr)
{
	struct v6_addr key;

	v6_copy(key.a, addr);
	return bpf_map_lookup_elem(&masq_local_addrs6, &key) != NULL;
}

#endif /* MASQ_LIB_MAPS6_H */
