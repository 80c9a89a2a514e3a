/* Egress steering on VPC-native nodes for IPv6 (lib/steer.h): the same FIB lookup in the egress
 * table and redirect, with IPv6 routes and neighbours. */
#ifndef MASQ_LIB_STEER6_H
#define MASQ_LIB_STEER6_H

#include "addr6.h"
#include "common.h"
#include "maps.h"
#include "steer.h"

#ifndef AF_INET6
#define AF_INET6 10
#endif

struct steer_route6 {
	__u32 ifindex;      /* the egress interface */
	__be32 nexthop[4];  /* the gateway, or the destination itself on a connected route */
	__u32 mark;         /* set on the redirected packet */
};

/* Returns 0 with *out filled when the egress table has a unicast IPv6 route to daddr. */
__always_inline_fn int steer6_lookup(struct __sk_buff *skb, const __be32 *daddr,
				     struct steer_route6 *out)
{
	const struct masq_steer *steer = steer_get();
	struct bpf_fib_lookup fib = {};

	if (!steer || !steer->mark)
		return -1;
	fib.family = AF_INET6;
	fib.ifindex = skb->ifindex;
	v6_copy(fib.ipv6_dst, daddr);
	fib.tbid = steer->table ? steer->table : MASQ_MAIN_TABLE;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib),
			   BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID | BPF_FIB_LOOKUP_SKIP_NEIGH) !=
	    BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	out->ifindex = fib.ifindex;
	v6_copy(out->nexthop, fib.ipv6_dst);
	out->mark = steer->mark;
	return 0;
}

__always_inline_fn int steer6_redirect(struct __sk_buff *skb, const struct steer_route6 *route)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET6 };

	v6_copy(nh.ipv6_nh, route->nexthop);
	skb->mark |= route->mark;
	return bpf_redirect_neigh(route->ifindex, &nh, sizeof(nh), 0);
}

#endif /* MASQ_LIB_STEER6_H */
