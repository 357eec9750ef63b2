/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * The only place where the reader core meets its environment.  ubreader.c
 * compiles in the Linux kernel (kmod/), in userspace (ubdump, FUSE) and
 * under libFuzzer; everything it needs from outside is spelled here:
 * fixed-width types, memcpy/memcmp/memset, errno values, little-endian
 * loads and 64-bit division.  Nothing else may be included by the core.
 */
#ifndef __UB_COMPAT_H
#define __UB_COMPAT_H

#ifdef __KERNEL__

#include <linux/types.h>
#include <linux/string.h>
#include <linux/errno.h>
#include <asm/byteorder.h>
#include <linux/math64.h>

#define ub_le16(x)	le16_to_cpu(x)
#define ub_le32(x)	le32_to_cpu(x)
#define ub_le64(x)	le64_to_cpu(x)

/* 64-by-32 division: 32-bit kernels have no plain u64 '/'. */
#define ub_div_u64_rem(n, d, rem)	div_u64_rem(n, d, rem)

#else /* userspace */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <endian.h>

typedef uint8_t  u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t  s64;

#define ub_le16(x)	le16toh(x)
#define ub_le32(x)	le32toh(x)
#define ub_le64(x)	le64toh(x)

static inline u64 ub_div_u64_rem(u64 n, u32 d, u32 *rem)
{
	*rem = (u32)(n % d);
	return n / d;
}

#endif /* __KERNEL__ */

/* The kernel calls it "structure needs cleaning"; some libcs lack it. */
#ifndef EUCLEAN
#define EUCLEAN 117
#endif
#ifndef ENODATA
#define ENODATA 61
#endif

#endif /* __UB_COMPAT_H */
