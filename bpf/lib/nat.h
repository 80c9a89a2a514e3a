/* masq's SNAT engine: the NAT pair table, the new-flow decision and port allocation. */
#ifndef MASQ_LIB_NAT_H
#define MASQ_LIB_NAT_H

#include "common.h"
#include "maps.h"
#include "metrics.h"
#include "nat_types.h"
#include "parse.h"

#define MASQ_NAT_MAX 131072
#define MASQ_FRAG_MAX 8192
/* Port candidates tried for one new flow before it is dropped as exhausted. */
#define MASQ_PORT_TRIES 32
/* Used when userspace has not written a range: above the Kubernetes NodePort range. */
#define MASQ_PORT_MIN_DEFAULT 32768
#define MASQ_PORT_MAX_DEFAULT 65535

/* Forward halves: pod tuple → translated source. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_tuple);
	__type(value, struct nat_entry);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat_egress SEC(".maps");

/* Reverse halves: reply tuple → the pod's address and port. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_tuple);
	__type(value, struct nat_entry);
	__uint(max_entries, MASQ_NAT_MAX);
} masq_nat_ingress SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, MASQ_FRAG_MAX);
} masq_frags SEC(".maps");

__always_inline_fn void tuple_from_pkt(struct nat_tuple *t, const struct pkt *p)
{
	t->saddr = p->saddr;
	t->daddr = p->daddr;
	t->sport = p->sport;
	t->dport = p->dport;
	t->proto = p->proto;
	t->pad[0] = t->pad[1] = t->pad[2] = 0;
}

/*
 * The NAT table's clock: jiffies. bpf_jiffies64 is inlined by the verifier, where the
 * nanosecond clocks are helper calls costing ~16 ns a packet here; userspace converts
 * (crates/datapath/src/ebpf/clock.rs).
 */
__always_inline_fn __u64 nat_now(void)
{
	return bpf_jiffies64();
}

/* An entry's last-seen time is refreshed at most this often: 1 s at HZ=100, 0.1 s at 1000. */
#define NAT_TOUCH_JIFFIES 100

/*
 * Keeps an entry alive for the userspace GC and marks TCP teardown. Returns 1 when the
 * timestamp was refreshed (at most every NAT_TOUCH_JIFFIES per entry): a cheap moment for
 * rarer checks.
 */
__always_inline_fn int nat_touch(struct nat_entry *e, const struct pkt *p)
{
	__u64 now = nat_now();
	int refreshed = 0;

	if (now - e->last_seen >= NAT_TOUCH_JIFFIES) {
		e->last_seen = now;
		refreshed = 1;
	}
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) &&
	    !(e->flags & NAT_F_CLOSING))
		e->flags |= NAT_F_CLOSING;
	return refreshed;
}

/*
 * The two halves live in separate LRU maps, so pressure can evict one alone. Whenever a flow's
 * timestamp is refreshed (NAT_TOUCH_JIFFIES), the egress path puts a missing reverse half
 * back, so replies keep being translated (the userspace GC would otherwise only notice later).
 * NOEXIST: if the port went to another flow meanwhile, that flow keeps it and the GC retires
 * this one.
 */
__always_inline_fn void nat_restore_reverse(const struct nat_tuple *fwd, const struct nat_entry *e)
{
	struct nat_tuple rev = {
		.saddr = fwd->daddr,
		.daddr = e->to_addr,
		.sport = fwd->dport,
		.dport = e->to_port,
		.proto = fwd->proto,
	};
	struct nat_entry val = {
		.to_addr = fwd->saddr,
		.to_port = fwd->sport,
		.flags = e->flags,
		.created = e->created,
		.last_seen = e->last_seen,
	};

	if (bpf_map_lookup_elem(&masq_nat_ingress, &rev))
		return;
	if (bpf_map_update_elem(&masq_nat_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_NAT_REVERSE_RESTORED);
}

/*
 * SPEC section 3, steps 2–6, for the first packet of a flow leaving the node. Returns
 * MASQ_TRANSLATED_EGRESS to masquerade, or the MASQ_KEEP_* reason.
 */
__always_inline_fn enum masq_reason decide(const struct masq_config *cfg, __be32 saddr,
					   __be32 daddr)
{
	if ((cfg->flags & MASQ_CFG_SRC_CIDRS) && lpm_contains(&masq_nonmasq_src, saddr))
		return MASQ_KEEP_NON_MASQ_SRC;
	if (cfg->flags & MASQ_CFG_POD_CIDRS) {
		if (!lpm_contains(&masq_pod_cidrs, saddr))
			return MASQ_KEEP_NOT_A_POD;
	} else if (bpf_map_lookup_elem(&masq_local_addrs, &saddr)) {
		return MASQ_KEEP_NOT_A_POD;
	}
	/* 169.254.0.0/16 */
	if ((daddr & bpf_htonl(0xffff0000)) == bpf_htonl(0xa9fe0000) &&
	    !(cfg->flags & MASQ_CFG_MASQ_LINK_LOCAL))
		return MASQ_KEEP_LINK_LOCAL;
	if (lpm_contains(&masq_nonmasq_dst, daddr))
		return MASQ_KEEP_NON_MASQ_DST;
	if (bpf_map_lookup_elem(&masq_local_addrs, &daddr))
		return MASQ_KEEP_LOCAL;
	return MASQ_TRANSLATED_EGRESS;
}

__always_inline_fn const struct masq_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&masq_config, &zero);
}

/*
 * Creates the NAT pair for a new flow and copies its forward half to *out; returns -1 when no
 * port is free (counted). The reverse half is claimed first with BPF_NOEXIST: that claim is what
 * makes a port ours, atomically across CPUs; the forward half follows, and a lost race on it
 * rolls the claim back and uses the winner's entry.
 */
__always_inline_fn int nat_create(const struct nat_tuple *fwd, __be32 snat_addr,
				  const struct masq_config *cfg, __u8 flags, struct nat_entry *out)
{
	__u32 port_min = cfg->port_min ? cfg->port_min : MASQ_PORT_MIN_DEFAULT;
	__u32 port_max = cfg->port_max ? cfg->port_max : MASQ_PORT_MAX_DEFAULT;
	__u32 span, orig = bpf_ntohs(fwd->sport);
	struct nat_entry rev_val = {};
	struct nat_tuple rev = {};
	struct nat_entry *e;
	int i, claimed = 0;

	if (port_max < port_min)
		port_max = port_min;
	span = port_max - port_min + 1;

	rev_val.to_addr = fwd->saddr;
	rev_val.to_port = fwd->sport;
	rev_val.flags = flags;
	rev_val.created = nat_now();
	rev_val.last_seen = rev_val.created;
	rev.saddr = fwd->daddr;
	rev.daddr = snat_addr;
	rev.sport = fwd->dport;
	rev.proto = fwd->proto;

	for (i = 0; i < MASQ_PORT_TRIES; i++) {
		__u32 port;

		/*
		 * The original port first, so most flows keep theirs. Like netfilter, only an
		 * explicit --port-range confines kept ports too; by default a free original port
		 * is kept wherever it lies and the range is only where changed ports come from
		 * (a pod walking low ports must not crowd one destination's range).
		 */
		if (i == 0 && ((cfg->flags & MASQ_CFG_KEEP_ANY_PORT) ||
			       (orig >= port_min && orig <= port_max)))
			port = orig;
		else
			port = port_min + bpf_get_prandom_u32() % span;
		rev.dport = bpf_htons((__u16)port);
		/*
		 * Look before claiming: a failed NOEXIST insert into an LRU map costs as much as a
		 * successful one (it takes a free node and gives it back), a lookup a fraction.
		 * The insert stays the atomic claim.
		 */
		if (!bpf_map_lookup_elem(&masq_nat_ingress, &rev) &&
		    bpf_map_update_elem(&masq_nat_ingress, &rev, &rev_val, BPF_NOEXIST) == 0) {
			claimed = 1;
			break;
		}
		count(MASQ_PORT_RETRY);
	}
	if (!claimed) {
		count(MASQ_DROP_PORT_EXHAUSTED);
		return -1;
	}

	out->to_addr = snat_addr;
	out->to_port = rev.dport;
	out->flags = flags;
	out->pad = 0;
	out->created = rev_val.created;
	out->last_seen = rev_val.created;
	if (bpf_map_update_elem(&masq_nat_egress, fwd, out, BPF_NOEXIST) == 0) {
		count(MASQ_NAT_CREATED);
		return 0;
	}
	/* Another CPU created this flow's pair meanwhile: give our port back, use theirs. */
	bpf_map_delete_elem(&masq_nat_ingress, &rev);
	e = bpf_map_lookup_elem(&masq_nat_egress, fwd);
	if (!e) {
		count(MASQ_DROP_NAT_INSERT);
		return -1;
	}
	*out = *e;
	return 0;
}

/*
 * A flow of the node itself (source = the SNAT address) leaves untranslated: record its tuple
 * as a reverse entry flagged NAT_F_HOST, so no pod flow is given the same port towards the
 * same destination, and replies to it are recognised and left alone. Returns 1 when a pod flow
 * already holds that port towards that destination (the kernel picked it without knowing):
 * the node's flow must then be moved to another port like a pod's, or its replies would go to
 * the pod.
 */
__always_inline_fn int nat_reserve_host_port(const struct pkt *p)
{
	struct nat_tuple rev = {
		.saddr = p->daddr,
		.daddr = p->saddr,
		.sport = p->dport,
		.dport = p->sport,
		.proto = p->proto,
	};
	struct nat_entry val = { .to_addr = p->saddr, .to_port = p->sport, .flags = NAT_F_HOST };
	struct nat_entry *e = bpf_map_lookup_elem(&masq_nat_ingress, &rev);

	if (e) {
		if (!(e->flags & NAT_F_HOST))
			return 1;
		nat_touch(e, p);
		return 0;
	}
	val.created = nat_now();
	val.last_seen = val.created;
	if (bpf_map_update_elem(&masq_nat_ingress, &rev, &val, BPF_NOEXIST) == 0)
		count(MASQ_HOST_PORT_RESERVED);
	return 0;
}

__always_inline_fn void frag_remember(const struct pkt *p, int ingress, __be32 to_addr)
{
	struct frag_key key = {
		.saddr = p->saddr, .daddr = p->daddr, .ip_id = p->ip_id,
		.proto = p->proto, .ingress = ingress,
	};
	struct frag_value val = { .to_addr = to_addr };

	bpf_map_update_elem(&masq_frags, &key, &val, BPF_ANY);
}

__always_inline_fn struct frag_value *frag_lookup(const struct pkt *p, int ingress)
{
	struct frag_key key = {
		.saddr = p->saddr, .daddr = p->daddr, .ip_id = p->ip_id,
		.proto = p->proto, .ingress = ingress,
	};

	return bpf_map_lookup_elem(&masq_frags, &key);
}

#endif /* MASQ_LIB_NAT_H */
