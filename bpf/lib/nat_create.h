/* A new flow's NAT pair: the port search over the SNAT pool's addresses, then the claim. */
#ifndef MASQ_LIB_NAT_CREATE_H
#define MASQ_LIB_NAT_CREATE_H

#include "common.h"
#include "metrics.h"
#include "nat.h"
#include "nat_types.h"
#include "parse.h"
#include "pool.h"

/*
 * Does a socket of the node own the replies this reverse key would catch? A UDP socket bound to
 * the port (a WireGuard or IPsec NAT-T listener) or a TCP socket on that 4-tuple (including
 * TIME_WAIT) or listening on the port: handing the port to a pod would steal its packets, or
 * make the node's next flow collide. Only for the candidate about to be claimed.
 */
__always_inline_fn int port_owned_by_node(struct __sk_buff *skb, const struct nat_tuple *rev)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = rev->saddr;
	t.ipv4.daddr = rev->daddr;
	t.ipv4.sport = rev->sport;
	t.ipv4.dport = rev->dport;
	if (rev->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else if (rev->proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The state of one port search (bpf_loop hands it to port_probe). */
struct port_search {
	struct __sk_buff *skb;
	const struct snat_pool *pool; /* the addresses, tried in cursor.order; NULL: rev.daddr */
	struct nat_tuple rev;         /* the reply key; daddr the address searched, dport the candidate */
	struct nat_entry val;         /* the reverse half to claim it with */
	struct pool_cursor cursor;
	__u32 count;                  /* ports in masq_ports */
	int result;                   /* PORT_*; 0 while searching, and when every port is taken */
};

#define PORT_CLAIMED 1     /* a free port, now ours (the reverse half is written) */
#define PORT_ADOPTED 2     /* the flow's own reverse half was found: its port is kept */
#define PORT_TABLE_FULL -1 /* no room for the reverse half */

/* Claims the candidate with a NOEXIST insert, which is what makes the port ours atomically
 * across CPUs; 1 when that settles the search (claimed, or the table is full). */
__always_inline_fn int port_claim(struct port_search *s)
{
	long err = bpf_map_update_elem(&masq_nat_ingress, &s->rev, &s->val, BPF_NOEXIST);

	if (err == 0)
		s->result = PORT_CLAIMED;
	else if (err == -MASQ_E2BIG)
		s->result = PORT_TABLE_FULL;
	return s->result != 0;
}

/*
 * Tries one candidate: not owned by a node socket, then claimed. An address's first candidate
 * (`first`) is claimed at once: it is free unless the address is filling up, and the insert
 * walks the bucket a look-up would. Any other is looked up first, as is a first one found
 * taken: a failed NOEXIST insert costs as much as a successful one, and a taken port may be
 * this flow's own. Returns 1 to stop the search.
 */
__always_inline_fn int port_try(struct port_search *s, __be16 port, int first)
{
	struct nat_entry *taken;

	s->rev.dport = port;
	if (first && !port_owned_by_node(s->skb, &s->rev) && port_claim(s))
		return 1;
	taken = bpf_map_lookup_elem(&masq_nat_ingress, &s->rev);
	if (taken) {
		/* This flow's own reverse half, whose forward half went missing: the flow keeps
		 * its port, and the forward half is written again. */
		if (!(taken->flags & (NAT_F_HOST | NAT_F_PASS)) && taken->to_addr == s->val.to_addr &&
		    taken->to_port == s->val.to_port) {
			s->result = PORT_ADOPTED;
			return 1;
		}
	} else if (!port_owned_by_node(s->skb, &s->rev) && port_claim(s)) {
		return 1;
	}
	count(MASQ_PORT_RETRY);
	return 0;
}

/* Tries the port at `candidate` in the port table, on the address being searched. */
__always_inline_fn int port_try_index(struct port_search *s, __u32 candidate, int first)
{
	__be16 *port = bpf_map_lookup_elem(&masq_ports, &candidate);

	if (!port)
		return 1;
	return port_try(s, *port, first);
}

/*
 * port_search finds and claims a port towards the reverse key's destination, like nf_nat with
 * fully-random but to the end: 64 random candidates (lib/pool.h says why), then every port in
 * turn from a random place: a pool with one free port gives it (bpf_loop, kernel 5.17+). When
 * the address has none left, the search goes on with the next address of the pool in order
 * (docs/snat-pools.md), never a random one; an address found full lately is skipped. The pod's own port gets no preference, so a pod never holds a port the
 * node may bind later (a WireGuard or IPsec listener started after the pod's flow).
 */
#ifdef MASQ_PORT_SEARCH_BOUNDED
/* The bounded build (older kernels): MASQ_PORT_PROBES_BOUNDED candidates of the first address
 * of the order, no fall-over (lib/pool.h). */
__always_inline_fn int port_search(struct port_search *s)
{
	__u32 address = snat_order_index(&s->cursor.order, 0);

	if (!s->count || s->count > MASQ_PORTS_MAX)
		return 0;
	pool_cursor_begin(&s->cursor, s->count);
	if (s->pool && address < MASQ_SNAT_POOL_MAX)
		s->rev.daddr = s->pool->addrs[address];
	for (__u32 i = 0; i < MASQ_PORT_PROBES_BOUNDED && i < s->count; i++) {
		__u32 index = s->cursor.start + i;

		/* No claim without a look-up here: the unrolled loop has no verifier budget for it. */
		if (port_try_index(s, index >= s->count ? index - s->count : index, 0))
			break;
	}
	return s->result;
}
#else
/* Step i of one address's search: a random candidate, or the sweep's next one. */
static long port_probe(__u32 i, void *ctx)
{
	struct port_search *s = ctx;

	return port_try_index(s, pool_cursor_candidate(&s->cursor, i, s->count), i == 0);
}

/* The rank-k address of the order: skipped when it was found full towards this destination
 * lately, else searched, and marked full when it has no free port. Returns 1 to stop. */
static long port_search_address(__u32 k, void *ctx)
{
	struct port_search *s = ctx;
	__u32 address = snat_order_index(&s->cursor.order, k);
	__u64 *at;

	if (address >= MASQ_SNAT_POOL_MAX)
		return 1;
	if (s->pool)
		s->rev.daddr = s->pool->addrs[address];
	s->rev.dport = 0;
	s->cursor.rank = k;
	if (s->cursor.lately) {
		at = bpf_map_lookup_elem(&masq_ports_full, &s->rev);
		if (at && ports_full_fresh(*at, nat_now()))
			return 0;
	}
	bpf_loop(pool_cursor_steps(&s->cursor, s->count), port_probe, s, 0);
	if (s->result)
		return 1;
	/* Its time: the flow's (no stack here, where the frames of three calls add up). */
	s->rev.dport = 0;
	bpf_map_update_elem(&masq_ports_full, &s->rev, &s->val.created, BPF_ANY);
	s->cursor.found_full = 1;
	return 0;
}

__always_inline_fn int port_search(struct port_search *s)
{
	if (!s->count || s->count > MASQ_PORTS_MAX)
		return 0;
	pool_cursor_begin(&s->cursor, s->count);
	s->cursor.lately = ports_full_lately(nat_now());
	/* At most 32 addresses × (65536 + 64) steps. */
	bpf_loop(s->cursor.order.tries, port_search_address, s, 0);
	pool_cursor_end(&s->cursor, nat_now());
	return s->result;
}
#endif

/* Remembers which pool refused a flow (a rare path: one array write). */
__always_inline_fn void alloc_failure_note(const struct nat_tuple *rev, __u32 span)
{
	__u32 zero = 0;
	struct alloc_failure *last = bpf_map_lookup_elem(&masq_alloc_failure, &zero);

	if (!last)
		return;
	last->snat_addr = rev->daddr;
	last->daddr = rev->saddr;
	last->dport = rev->sport;
	last->proto = rev->proto;
	last->span = span;
	last->when = nat_now();
}

/*
 * Creates the NAT pair for a new flow and copies its forward half to *out; returns -1 when no
 * port is free on any address it may take, or the table is full (counted). The addresses are
 * the pool's in `order`; without a pool, the flow's own source address (a node flow that must
 * move). The reverse half is claimed first; the forward half follows, and a lost race on it
 * rolls the claim back and uses the winner's entry.
 */
__always_inline_fn int nat_create(struct __sk_buff *skb, const struct pkt *p,
				  const struct nat_tuple *fwd, const struct snat_pool *pool,
				  const struct snat_order *order, const struct masq_config *cfg,
				  __u8 flags, struct nat_entry *out)
{
	struct port_search s = { .skb = skb, .pool = pool, .count = cfg->port_count };
	struct nat_entry *e;
	int found;

	/* TCP teardown seen on the very packet that creates the pair (a stray FIN or RST). */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)))
		flags |= NAT_F_CLOSING;
	s.val.to_addr = fwd->saddr;
	s.val.to_port = fwd->sport;
	s.val.flags = flags;
	s.val.created = nat_now();
	s.val.last_seen = s.val.created;
	s.rev.saddr = fwd->daddr;
	s.rev.daddr = fwd->saddr;
	s.rev.sport = fwd->dport;
	s.rev.proto = fwd->proto;
	s.cursor.order = *order;

	found = port_search(&s);
	if (found <= 0) {
		if (found == 0)
			alloc_failure_note(&s.rev, s.count);
		count(found < 0 ? MASQ_DROP_NAT_INSERT : MASQ_DROP_PORT_EXHAUSTED);
		return -1;
	}

	out->to_addr = s.rev.daddr;
	out->to_port = s.rev.dport;
	out->flags = flags;
	out->pad = 0;
	out->created = s.val.created;
	out->last_seen = s.val.created;
	if (bpf_map_update_elem(&masq_nat_egress, fwd, out, BPF_NOEXIST) == 0) {
		count(MASQ_NAT_CREATED);
		return 0;
	}
	/* Another CPU created this flow's pair meanwhile, or the table is full: give the port back. */
	if (found == PORT_CLAIMED)
		bpf_map_delete_elem(&masq_nat_ingress, &s.rev);
	e = bpf_map_lookup_elem(&masq_nat_egress, fwd);
	if (!e || (e->flags & NAT_F_PASS)) {
		count(MASQ_DROP_NAT_INSERT);
		return -1;
	}
	*out = *e;
	return 0;
}

#endif /* MASQ_LIB_NAT_CREATE_H */
