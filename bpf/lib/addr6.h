/* IPv6 addresses as four 32-bit words in network order: copy and compare. */
#ifndef MASQ_LIB_ADDR6_H
#define MASQ_LIB_ADDR6_H

#include "common.h"

__always_inline_fn void v6_copy(__be32 *dst, const __be32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

__always_inline_fn int v6_equal(const __be32 *a, const __be32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

__always_inline_fn int v6_is_zero(const __be32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

#endif /* MASQ_LIB_ADDR6_H */
