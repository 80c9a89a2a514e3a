/* The maps the userspace agent fills: config, CIDR tries, node addresses (SNAT pools: pool.h). */
#ifndef MASQ_LIB_MAPS_H
#define MASQ_LIB_MAPS_H

#include "common.h"
#include "nat_types.h"

/* Large enough for cidrLimit's default (16384) many times over; no memory until used. */
#define MASQ_CIDR_MAX 131072

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct masq_config);
	__uint(max_entries, 1);
} masq_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct masq_steer);
	__uint(max_entries, 1);
} masq_steer_cfg SEC(".maps");

/*
 * The ports translated flows are given, network order, masq_config.port_count of them: the
 * --port-range list less the NodePort range, written by userspace. A new flow takes one at a
 * random index and probes on from there (lib/nat_create.h).
 */
#define MASQ_PORTS_MAX 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __be16);
	__uint(max_entries, MASQ_PORTS_MAX);
} masq_ports SEC(".maps");

/* Addresses of the node: never pods (without --pod-cidr), and local destinations are kept. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u8);
	__uint(max_entries, 4096);
} masq_local_addrs SEC(".maps");

/*
 * Steps 4 and 5 of docs/decision.md in one longest-prefix lookup: destination prefix → the
 * enum masq_reason decide() returns for it, MASQ_KEEP_LINK_LOCAL or MASQ_KEEP_NON_MASQ_DST to
 * keep, MASQ_TRANSLATED_EGRESS for a masqueradeCIDRs entry. The agent renders it from the
 * compiled policy (crates/datapath/src/ebpf/policy.rs): the link-local range is an entry, not
 * code here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(max_entries, MASQ_CIDR_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_dst_policy SEC(".maps");

/* nonMasqueradeSrcCIDRs. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(max_entries, MASQ_CIDR_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_nonmasq_src SEC(".maps");

/* --pod-cidr, consulted only when MASQ_CFG_POD_CIDRS is set. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} masq_pod_cidrs SEC(".maps");

__always_inline_fn const __u8 *lpm_lookup(void *trie, __be32 addr)
{
	struct lpm_v4_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(trie, &key);
}

__always_inline_fn int lpm_contains(void *trie, __be32 addr)
{
	return lpm_lookup(trie, addr) != NULL;
}

__always_inline_fn const struct masq_steer *steer_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&masq_steer_cfg, &zero);
}

#endif /* MASQ_LIB_MAPS_H */
