// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for what callers of the reader choose, not the blob:
 * inode numbers (FUSE node ids, NFS-style handles), readdir positions
 * (seekdir/telldir hand any d_off back), names to look up and xattr names
 * (from userspace), file offsets and lengths.  fuzz_reader.c walks what the
 * blob says; this one asks for anything.
 *
 * The input is a blob (fuzz_common.h) whose last OPS_BYTES bytes are also
 * read as a script of OPS_BYTES / 16 operations:
 *   u8 op, u8 len, u16 name_off (into the input), u32 inode, u64 arg
 * so a real blob is a valid seed and the fuzzer mutates the script in place.
 *
 *   make -C format/c fuzz && build/fuzz_ops -max_len=1048576 CORPUS_DIR
 */
#include "fuzz_common.h"

#define OPS_BYTES	256

struct op {
	u8 code;
	u8 len;
	u16 name_off;
	u32 inode;
	u64 arg;
};

static struct op parse_op(const u8 *p)
{
	struct op o;

	o.code = p[0];
	o.len = p[1];
	o.name_off = (u16)(p[2] | p[3] << 8);
	memcpy(&o.inode, p + 4, 4);
	memcpy(&o.arg, p + 8, 8);
	o.inode = le32toh(o.inode);
	o.arg = le64toh(o.arg);
	return o;
}

/* Mostly a valid index (so the ops reach past the range check), sometimes any u64. */
static u64 pick_index(const struct ub_blob *b, const struct op *o)
{
	if (o->code & 0x80)
		return o->arg;
	return o->inode % (b->inode_count + 1);
}

static int count_entries(void *arg, const struct ub_dirent_info *de)
{
	unsigned int *n = arg;

	/* what the kernel's dir_emit and FUSE's fuse_add_direntry rely on */
	if (de->name_len < 1 || de->name_len > 255 || de->next_pos <= de->pos)
		abort();
	return ++*n >= 16;
}

static void op_readdir(const struct ub_blob *b, const struct ub_inode_info *dir, u64 pos)
{
	unsigned int n = 0;
	u64 start = pos;

	if (ub_readdir(b, dir, &pos, count_entries, &n) == 0 &&
	    start <= ub_dir_end_pos(dir) && pos < start)
		abort();	/* positions never go backwards */
}

static void op_data(const struct ub_blob *b, const struct ub_inode_info *i, u64 off, size_t len)
{
	static u8 buf[UB_INLINE_MAX + 1];
	u8 digest[UB_DIGEST_SIZE];
	int n;

	n = ub_read_data(b, i, off, buf, len);
	if (n > (int)len)
		abort();
	n = ub_readlink(b, i, (char *)buf, (size_t)(off % sizeof(buf)));
	if (n >= 0 && (size_t)n >= off % sizeof(buf))
		abort();
	if (ub_get_digest(b, i, digest) == 0 && i->payload >= b->sect[UB_SECT_DIGESTS].count)
		abort();	/* a digest from outside DIGESTS */
}

static void run_op(const struct ub_blob *b, const u8 *data, size_t size, const struct op *o)
{
	struct ub_inode_info ino, child;
	const char *name = (const char *)data + (o->name_off % size);
	size_t name_len = o->len;
	u8 digest[UB_DIGEST_SIZE], value[64];
	u64 index = pick_index(b, o), st_ino;
	unsigned int dtype;

	if (name_len > size - (o->name_off % size))
		name_len = size - (o->name_off % size);
	switch (o->code & 0x7) {
	case 0:	/* FUSE: node id from the kernel */
		if (ub_st_ino_to_index(o->arg, &index) && index < b->inode_count &&
		    ub_read_inode(b, index, &ino) == 0 && ub_inode_st_ino(&ino) != o->arg)
			abort();
		return;
	case 1:
		ub_read_digest(b, index, digest);
		return;
	}
	if (ub_read_inode(b, index, &ino))
		return;
	switch (o->code & 0x7) {
	case 2:
		op_readdir(b, &ino, o->arg);
		break;
	case 3:
		if (ub_lookup(b, &ino, name, name_len, &st_ino, &dtype) == 0 &&
		    (st_ino >= b->inode_count || name_len == 0 || name_len > 255))
			abort();
		ub_lookup_inode(b, &ino, name, name_len, &child);
		break;
	case 4:
		ub_getxattr(b, &ino, o->code >> 3 & 1, name, name_len, value, o->arg % sizeof(value));
		ub_getxattr(b, &ino, o->code >> 3 & 1, name, name_len, NULL, 0);
		break;
	case 5:
		op_data(b, &ino, o->arg, o->len * 17u % (UB_INLINE_MAX + 1));
		break;
	case 6:	/* FUSE's ".." and readdirplus: the parent of a directory */
		if (ub_inode_is_dir(&ino))
			ub_read_inode(b, ub_inode_parent(&ino), &child);
		break;
	default:
		ub_listxattr(b, &ino, o->code >> 3 & 1, (char *)value, o->arg % sizeof(value));
		break;
	}
}

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	struct ub_blob b;
	size_t at;

	if (size < UB_HEADER_SIZE + OPS_BYTES || fz_blob_from_input(data, size, &b))
		return 0;
	if (ub_open(&b, UB_OPEN_NO_CRC))
		return 0;
	for (at = size - OPS_BYTES; at + 16 <= size; at += 16) {
		struct op o = parse_op(data + at);

		run_op(&b, data, size, &o);
	}
	return 0;
}
