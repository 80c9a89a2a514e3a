/* The SNAT address pools: which address a pod's new flow takes, and in what order it falls over. */
#ifndef MASQ_LIB_POOL_H
#define MASQ_LIB_POOL_H

#include "common.h"
#include "jhash.h"
#include "metrics.h"
#include "nat_types.h"

/* The seed of every datapath's pool hash ("masq" in ASCII; crates/datapath/src/pool.rs). */
#define MASQ_POOL_HASH_SEED 0x6d617371

/*
 * ifindex → that interface's pool (its primary address, a pool of one); key 0 applies to every
 * interface without an entry of its own (--snat-ip, --snat-ips-from-interface). Written by the
 * agent, whole values at a time.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct snat_pool);
	__uint(max_entries, 256);
} masq_snat_pools SEC(".maps");

/* The pool of an interface (or the one of every interface); NULL when there is none. */
__always_inline_fn const struct snat_pool *snat_pool_for(__u32 ifindex)
{
	__u32 any = 0;
	const struct snat_pool *pool = bpf_map_lookup_elem(&masq_snat_pools, &ifindex);

	if (!pool)
		pool = bpf_map_lookup_elem(&masq_snat_pools, &any);
	return pool;
}

/*
 * How many addresses of a pool may be used: count when it is 1 to MASQ_SNAT_POOL_MAX, else 0
 * (no pool: the agent never writes such a value). Also bounds the value for the verifier, as
 * one range: a clamp to the maximum would leave it two states to check the rest with.
 */
__always_inline_fn __u32 snat_pool_size(__u32 count)
{
	return count - 1 < MASQ_SNAT_POOL_MAX ? count : 0;
}

/* The index of a pod's own address in a pool of `size` (≥ 1): reciprocal_scale(jhash(pod,
 * seed), size), what nft's `jhash ip saddr mod N` and pool.rs compute. */
__always_inline_fn __u32 snat_pool_home(__be32 pod, __u32 size)
{
	return reciprocal_scale(jhash_1word(pod, MASQ_POOL_HASH_SEED), size);
}

/*
 * Is addr one of the pool's? A packet from a pool address is the node's own. A linear scan,
 * bounded by the pool's size (one compare for a pool of one). Only the answer leaves the loop:
 * an index would reach the verifier as one precise value per iteration, and every path after
 * it would be checked once per value.
 */
__always_inline_fn int snat_pool_contains(const struct snat_pool *pool, __be32 addr)
{
	__u32 size = snat_pool_size(pool->count);

	for (__u32 i = 0; i < MASQ_SNAT_POOL_MAX; i++) {
		if (i >= size)
			break;
		if (pool->addrs[i] == addr)
			return 1;
	}
	return 0;
}

/*
 * Which addresses a new flow tries, in order: `tries` of them from index `first` on, wrapping
 * around the pool (first + tries ≤ 2 × size). A pod's flow starts at its own address and falls
 * over to the next ones. (A node flow that must move keeps its own address: no pool, one try.)
 */
struct snat_order {
	__u32 first;
	__u32 tries;
	__u32 size;
};

/* The index of the k-th address a flow tries (k < tries ≤ size ≤ MASQ_SNAT_POOL_MAX). */
__always_inline_fn __u32 snat_order_index(const struct snat_order *o, __u32 k)
{
	__u32 index = o->first + k;

	return index >= o->size ? index - o->size : index;
}

/*
 * The build without bpf_loop (before 5.17) walks its search as a bounded loop that the verifier
 * checks candidate by candidate, and uses half of the verifier's budget already: it searches the
 * pod's own address only, MASQ_PORT_PROBES_BOUNDED candidates of it, with no fall-over.
 */
#ifdef MASQ_PORT_SEARCH_BOUNDED
#define MASQ_SNAT_TRIES_MAX 1
#else
#define MASQ_SNAT_TRIES_MAX MASQ_SNAT_POOL_MAX
#endif

/* A pod's order: its own address first, then the rest of the pool. */
__always_inline_fn void snat_order_for_pod(struct snat_order *o, __u32 size, __u32 home)
{
	o->first = home;
	o->size = size;
	/* The complete build: size itself (the verifier knows it is at most the maximum). */
	o->tries = MASQ_SNAT_TRIES_MAX < size ? MASQ_SNAT_TRIES_MAX : size;
}

/* The order of a search that keeps the flow's own source address (a node flow that must move
 * to another port). */
__always_inline_fn void snat_order_own(struct snat_order *o)
{
	o->first = 0;
	o->size = 1;
	o->tries = 1;
}

/*
 * A port search over a pool (the complete build): every (address, port) pair in pool order, in
 * one bpf_loop. Step i is candidate i % ports of the address ranked i / ports in the order.
 * Each step is computed from i alone, never from counters kept across steps, and writes its
 * address whether it changed or not: the verifier then checks the step once, without a branch
 * per address, however many addresses the pool has.
 */
struct pool_cursor {
	struct snat_order order;
	__u32 start; /* port-table index of every address's first candidate: random */
	__u32 rank;  /* the rank in the order of the address searched last */
};

/* Starts a search over a port table of `ports` entries (1 to MASQ_PORTS_MAX), from a random
 * place, as nf_nat's fully-random does. */
__always_inline_fn void pool_cursor_begin(struct pool_cursor *c, __u32 ports)
{
	c->start = bpf_get_prandom_u32() % ports;
	c->rank = 0;
}

/* The steps a search over `ports` ports an address takes at most. */
__always_inline_fn __u32 pool_cursor_steps(const struct pool_cursor *c, __u32 ports)
{
	return ports * c->order.tries;
}

/* What step i of a search tries. */
struct pool_step {
	__u32 rank;      /* of the address in the order */
	__u32 address;   /* its index in the pool (< MASQ_SNAT_POOL_MAX) */
	__u32 candidate; /* index into the port table */
};

/* Step i of a search over `ports` ports an address; 0 past the last one. */
__always_inline_fn int pool_cursor_step(const struct pool_cursor *c, __u32 i, __u32 ports,
					struct pool_step *step)
{
	__u32 index;

	if (!ports)
		return 0;
	step->rank = i / ports;
	if (step->rank >= c->order.tries)
		return 0;
	step->address = snat_order_index(&c->order, step->rank);
	if (step->address >= MASQ_SNAT_POOL_MAX)
		return 0;
	index = c->start + (i - step->rank * ports);
	step->candidate = index >= ports ? index - ports : index;
	return 1;
}

/* Counts the fall-overs of a finished search: each address it moved past had no free port. */
__always_inline_fn void pool_cursor_count_fallovers(const struct pool_cursor *c)
{
	if (c->rank)
		count_n(MASQ_SNAT_FALLOVER, c->rank);
}

#endif /* MASQ_LIB_POOL_H */
