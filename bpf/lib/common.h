/* Kernel headers, helper declarations and small compiler shims shared by every masq header. */
#ifndef MASQ_LIB_COMMON_H
#define MASQ_LIB_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define __always_inline_fn static __always_inline

/* Fails the build when a condition on a type (usually its size) is false. */
#define build_bug_on(expr) _Static_assert(!(expr), #expr)

/* Returned to tc/TCX when the packet goes on unchanged or translated: TC_ACT_UNSPEC lets any
 * program attached after masq run too (TCX_NEXT), where TC_ACT_OK would end the chain. */
#define MASQ_CONTINUE TC_ACT_UNSPEC
#define MASQ_DROP TC_ACT_SHOT

#endif /* MASQ_LIB_COMMON_H */
