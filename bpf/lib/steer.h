/*
 * Egress steering on VPC-native nodes (docs/vpc-native.md): a masqueraded packet that the pod's
 * policy route sent to a secondary interface is looked up again in the egress table (main by
 * default) and redirected to the interface found there, translated to that interface's address.
 */
#ifndef MASQ_LIB_STEER_H
#define MASQ_LIB_STEER_H

#include "common.h"
#include "maps.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#define MASQ_MAIN_TABLE 254

struct steer_route {
	__u32 ifindex;   /* the egress interface */
	__be32 nexthop;  /* the gateway, or the destination itself on a connected route */
	__u32 mark;      /* set on the redirected packet: the egress interface's program leaves it */
};

/* Returns 0 with *out filled when the egress table has a unicast route to daddr. */
__always_inline_fn int steer_lookup(struct __sk_buff *skb, __be32 daddr, struct steer_route *out)
{
	const struct masq_steer *steer = steer_get();
	struct bpf_fib_lookup fib = {};

	if (!steer || !steer->mark)
		return -1;
	fib.family = AF_INET;
	fib.ifindex = skb->ifindex;
	fib.ipv4_dst = daddr;
	fib.tbid = steer->table ? steer->table : MASQ_MAIN_TABLE;
	/* No MTU check (tot_len 0): the packet already passed the pod's route. */
	if (bpf_fib_lookup(skb, &fib, sizeof(fib),
			   BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID | BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	out->ifindex = fib.ifindex;
	out->nexthop = fib.ipv4_dst;
	out->mark = steer->mark;
	return 0;
}

/* Hands the (already translated) packet to the egress interface; the neighbour layer fills in
 * the MACs. TC_ACT_REDIRECT, or TC_ACT_SHOT when the redirect is refused. */
__always_inline_fn int steer_redirect(struct __sk_buff *skb, const struct steer_route *route)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = route->nexthop };

	skb->mark |= route->mark;
	return bpf_redirect_neigh(route->ifindex, &nh, sizeof(nh), 0);
}

/* Was this packet redirected here by the steering program? (It is translated already.) */
__always_inline_fn int steered_here(const struct __sk_buff *skb)
{
	const struct masq_steer *steer = steer_get();

	return steer && steer->mark && (skb->mark & steer->mark) == steer->mark;
}

/*
 * A reply of a steered flow, translated back to the pod: the pod's own rule would send the
 * reverse-path check to the secondary interface and strict rp_filter would drop the reply. With
 * the egress mark (and src_valid_mark), masq's ip rule answers it with the egress table.
 */
__always_inline_fn void mark_steered_reply(struct __sk_buff *skb)
{
	const struct masq_steer *steer = steer_get();

	if (steer)
		skb->mark |= steer->mark;
}

#endif /* MASQ_LIB_STEER_H */
