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
 * An address found full towards a destination (every port of it taken towards that address,
 * port and protocol) is remembered for MASQ_FULL_JIFFIES: the next new flows there skip it
 * (fall over, or are refused) at the cost of one lookup instead of a sweep of every port,
 * which costs ~13 ns a port (0.85 ms for 65,536). Ports come back only when the GC removes
 * flows (every 5 s), so a port freed meanwhile waits at most that long (docs/ebpf.md).
 */
#define MASQ_FULL_JIFFIES 250 /* 1 s at HZ=250 (Debian), 2.5 s at 100, 0.25 s at 1000 */

/* Reply key with dport 0 (the searched address, the destination) → jiffies it was found full. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_tuple);
	__type(value, __u64);
	__uint(max_entries, 4096);
} masq_ports_full SEC(".maps");

/* [0]: jiffies an address was last found full, any family: while that is older than
 * MASQ_FULL_JIFFIES, a search looks nothing up in masq_ports_full(6). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} masq_ports_full_at SEC(".maps");

/* Was `at` (jiffies) within MASQ_FULL_JIFFIES of `now`? */
__always_inline_fn int ports_full_fresh(__u64 at, __u64 now)
{
	return now - at < MASQ_FULL_JIFFIES;
}

/* Was any address found full lately? */
__always_inline_fn int ports_full_lately(__u64 now)
{
	__u32 zero = 0;
	__u64 *at = bpf_map_lookup_elem(&masq_ports_full_at, &zero);

	return at && ports_full_fresh(*at, now);
}

/* Notes that an address was found full now (its entry in masq_ports_full(6) is written too). */
__always_inline_fn void ports_full_note(__u64 now)
{
	__u32 zero = 0;

	bpf_map_update_elem(&masq_ports_full_at, &zero, &now, BPF_ANY);
}

/*
 * Candidates an address's search tries at random before its sweep. A sweep alone, from one
 * random place, claims the first free port after it, so taken ports gather in runs and a new
 * flow at 99 % of an address walks ~5,000 candidates (linear probing's clustering); random
 * candidates keep the taken ports scattered and find a free one in ~1 / (free share) tries.
 * The sweep that follows still finds the last free port. Only for tables of 16 × that size.
 */
#define MASQ_PORT_RANDOM_PROBES 64

/*
 * A port search over a pool (the complete build): the addresses in pool order, one bpf_loop
 * pass each inside a bpf_loop over them (each callback is checked once by the verifier, not
 * once an address), skipping those known to be full. An address's steps: `random` random
 * candidates, then every port from a random place on.
 */
struct pool_cursor {
	struct snat_order order;
	__u32 start;  /* port-table index of every address's sweep: random */
	__u32 random; /* random candidates before each sweep */
	__u32 rank;   /* the rank in the order of the address being searched */
	__u32 lately;     /* an address was found full lately: look masq_ports_full(6) up */
	__u32 found_full; /* this search found an address full */
};

/* Starts a search over a port table of `ports` entries (1 to MASQ_PORTS_MAX), from a random
 * place, as nf_nat's fully-random does. */
__always_inline_fn void pool_cursor_begin(struct pool_cursor *c, __u32 ports)
{
	c->start = bpf_get_prandom_u32() % ports;
	c->random = ports >= 16 * MASQ_PORT_RANDOM_PROBES ? MASQ_PORT_RANDOM_PROBES : 0;
	c->rank = 0;
	c->lately = 0;
	c->found_full = 0;
}

/* The steps of one address's search. */
__always_inline_fn __u32 pool_cursor_steps(const struct pool_cursor *c, __u32 ports)
{
	return ports + c->random;
}

/* The port-table index step i of an address's search tries (ports ≥ 1). */
__always_inline_fn __u32 pool_cursor_candidate(const struct pool_cursor *c, __u32 i, __u32 ports)
{
	__u32 index;

	if (i < c->random)
		return bpf_get_prandom_u32() % ports;
	index = c->start + (i - c->random);
	return index >= ports ? index - ports : index;
}

/* Ends a search: counts its fall-overs (each address it moved past had no free port) and
 * notes, at `now` (jiffies), when it found an address full. */
__always_inline_fn void pool_cursor_end(const struct pool_cursor *c, __u64 now)
{
	if (c->rank)
		count_n(MASQ_SNAT_FALLOVER, c->rank);
	if (c->found_full)
		ports_full_note(now);
}

#endif /* MASQ_LIB_POOL_H */
