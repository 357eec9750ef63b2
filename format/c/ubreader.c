// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
/*
 * ubreader: validating reader of unionblob v2 blobs.  See ubreader.h for the
 * API contract and format/SPEC.md for the format.
 *
 * Rules this file keeps, because it also runs inside the kernel:
 *   - only ub_compat.h reaches the environment (memcpy/memcmp/errno/le*);
 *   - no allocation, no recursion, no VLAs, no floating point, small frames;
 *   - every number read from the blob is range-checked before it is used to
 *     compute an address, and sums are checked for overflow first;
 *   - a page is mapped only for as long as one function needs it.
 */
#include "ubreader.h"

#define UB_PAGE_MASK	((u64)UB_BLOCK_SIZE - 1)

/* ---- CRC-32C ----------------------------------------------------------- */

/* Table for the reflected Castagnoli polynomial 0x82F63B78. */
static const u32 ub_crc32c_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4,
	0xc79a971f, 0x35f1141c, 0x26a1e7e8, 0xd4ca64eb,
	0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24,
	0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b,
	0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54,
	0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b,
	0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35,
	0xaa64d611, 0x580f5512, 0x4b5fa6e6, 0xb93425e5,
	0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45,
	0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
	0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595,
	0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48,
	0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687,
	0x0c38d26c, 0xfe53516f, 0xed03a29b, 0x1f682198,
	0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38,
	0xdbfc821c, 0x2997011f, 0x3ac7f2eb, 0xc8ac71e8,
	0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096,
	0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789,
	0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
	0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9,
	0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36,
	0x3cdb9bdd, 0xceb018de, 0xdde0eb2a, 0x2f8b6829,
	0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93,
	0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043,
	0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3,
	0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc,
	0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033,
	0xa24bb5a6, 0x502036a5, 0x4370c551, 0xb11b4652,
	0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d,
	0xef087a76, 0x1d63f975, 0x0e330a81, 0xfc588982,
	0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622,
	0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2,
	0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530,
	0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f,
	0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0,
	0xd3d3e1ab, 0x21b862a8, 0x32e8915c, 0xc083125f,
	0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90,
	0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
	0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1,
	0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321,
	0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81,
	0x34f4f86a, 0xc69f7b69, 0xd5cf889d, 0x27a40b9e,
	0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

u32 ub_crc32c(u32 crc, const void *buf, size_t len)
{
	const u8 *p = buf;

	crc = ~crc;
	while (len--)
		crc = ub_crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

u32 ub_handle_generation(const struct ub_blob *b)
{
	u8 le[8];
	u32 gen = 0;
	unsigned int i, k;

	for (i = 0; i < UB_SECT_NR_V1; i++) {
		for (k = 0; k < 4; k++)
			le[k] = (u8)(b->sect[i].crc >> (8 * k));
		gen = ub_crc32c(gen, le, 4);
	}
	for (k = 0; k < 8; k++)
		le[k] = (u8)(b->inode_count >> (8 * k));
	return ub_crc32c(gen, le, 8);
}

/* ---- page access ------------------------------------------------------- */

/* a + b <= limit, without overflow. */
static inline bool ub_fits(u64 a, u64 b, u64 limit)
{
	return a <= limit && b <= limit - a;
}

/*
 * Map [off, off + len) of the blob, which must lie inside the blob and
 * inside one page.  *p points at off.  Release with ub_unmap().
 */
static int ub_map(const struct ub_blob *b, u64 off, u32 len,
		  const u8 **p, void **cookie)
{
	const u8 *page;

	if (!ub_fits(off, len, b->size))
		return -EUCLEAN;
	if ((off & UB_PAGE_MASK) + len > UB_BLOCK_SIZE)
		return -EUCLEAN;
	*cookie = NULL;
	page = b->get_page(b->ctx, off >> UB_BLOCK_SIZE_LOG2, cookie);
	if (!page)
		return -EIO;
	*p = page + (off & UB_PAGE_MASK);
	return 0;
}

static inline void ub_unmap(const struct ub_blob *b, void *cookie)
{
	if (b->put_page)
		b->put_page(b->ctx, cookie);
}

/* Length of the part of [off, off + len) that lies in off's page. */
static inline u32 ub_chunk(u64 off, u64 len)
{
	u64 room = UB_BLOCK_SIZE - (off & UB_PAGE_MASK);

	return (u32)(len < room ? len : room);
}

/* Copy [off, off + len) of the blob, across pages, into dst. */
static int ub_copy(const struct ub_blob *b, u64 off, void *dst, u64 len)
{
	u8 *d = dst;

	if (!ub_fits(off, len, b->size))
		return -EUCLEAN;
	while (len) {
		u32 n = ub_chunk(off, len);
		const u8 *p;
		void *cookie;
		int err = ub_map(b, off, n, &p, &cookie);

		if (err)
			return err;
		memcpy(d, p, n);
		ub_unmap(b, cookie);
		d += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Compare blob bytes [off, off + len) with s: 0 equal, 1 different, <0 error. */
static int ub_blob_neq(const struct ub_blob *b, u64 off, const char *s, u64 len)
{
	if (!ub_fits(off, len, b->size))
		return -EUCLEAN;
	while (len) {
		u32 n = ub_chunk(off, len);
		const u8 *p;
		void *cookie;
		int err = ub_map(b, off, n, &p, &cookie);

		if (err)
			return err;
		err = memcmp(p, s, n) != 0;
		ub_unmap(b, cookie);
		if (err)
			return 1;
		s += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Does blob range [off, off + len) contain byte c?  1 yes, 0 no, <0 error. */
static int ub_blob_has_byte(const struct ub_blob *b, u64 off, u64 len, u8 c)
{
	if (!ub_fits(off, len, b->size))
		return -EUCLEAN;
	while (len) {
		u32 n = ub_chunk(off, len);
		const u8 *p;
		void *cookie;
		int err = ub_map(b, off, n, &p, &cookie);

		if (err)
			return err;
		err = memchr(p, c, n) != NULL;
		ub_unmap(b, cookie);
		if (err)
			return 1;
		off += n;
		len -= n;
	}
	return 0;
}

/* [rel, rel + len) lies inside section id's content. */
static inline bool ub_in_section(const struct ub_blob *b, unsigned int id,
				 u64 rel, u64 len)
{
	return ub_fits(rel, len, b->sect[id].size);
}

/* ---- header and section table (SPEC §3) -------------------------------- */

static u32 ub_header_crc(const u8 *hdr)
{
	static const u8 zero[4];
	u32 crc;

	/* the crc field itself counts as zero */
	crc = ub_crc32c(0, hdr, 8);
	crc = ub_crc32c(crc, zero, 4);
	return ub_crc32c(crc, hdr + 12, UB_HEADER_SIZE - 12);
}

static int ub_check_sections(struct ub_blob *b, const struct ub_super *sb)
{
	u64 next = UB_BLOCK_SIZE;	/* where the next section may start */
	unsigned int i;

	for (i = 0; i < UB_SECT_MAX; i++) {
		const struct ub_section *s = &sb->sections[i];
		u64 off = ub_le64(s->offset), size = ub_le64(s->size);
		u64 count = ub_le64(s->count);

		if (i >= UB_SECT_NR_V1) {
			/* ids 6..11 are reserved and must be all zero */
			if (off || size || count || s->crc || s->reserved)
				return -EUCLEAN;
			continue;
		}
		b->sect[i].offset = off;
		b->sect[i].size = size;
		b->sect[i].count = count;
		b->sect[i].crc = ub_le32(s->crc);
		if (size == 0) {
			/* empty: where it would start, or 0 */
			if (off != 0 && off != next)
				return -EUCLEAN;
			b->sect[i].offset = next;
			continue;
		}
		if ((off & UB_PAGE_MASK) || off < next ||
		    !ub_fits(off, size, b->size))
			return -EUCLEAN;
		/* round the end up to the page; cannot overflow, size <= blob */
		next = (off + size + UB_PAGE_MASK) & ~UB_PAGE_MASK;
	}
	return 0;
}

/* Byte offset of inode @index in INODES: 85 to a page, none crosses a page. */
static inline u64 ub_inode_offset(u64 index)
{
	u32 slot;
	u64 page = ub_div_u64_rem(index, UB_INODES_PER_PAGE, &slot);

	return (page << UB_BLOCK_SIZE_LOG2) + (u64)slot * UB_INODE_SIZE;
}

/* INODES holds exactly count inodes (the last page's padding is not counted). */
static bool ub_inodes_sized(const struct ub_blob *b)
{
	const struct ub_sect *s = &b->sect[UB_SECT_INODES];
	u32 rem;

	if (s->count == 0)
		return s->size == 0;
	/* a count beyond size / 48 cannot fit; it also keeps the offset from overflowing */
	return s->count <= ub_div_u64_rem(b->size, UB_INODE_SIZE, &rem) &&
	       s->size == ub_inode_offset(s->count - 1) + UB_INODE_SIZE;
}

/* Fixed record sizes; a count that overflows the product is rejected. */
static bool ub_sect_is_array(const struct ub_blob *b, unsigned int id,
			     unsigned int shift)
{
	const struct ub_sect *s = &b->sect[id];

	return s->count <= (b->size >> shift) && s->size == s->count << shift;
}

static int ub_check_super(struct ub_blob *b, const u8 *page, unsigned int flags)
{
	const struct ub_super *sb = (const struct ub_super *)page;
	int err;

	if (memcmp(sb->magic, UB_MAGIC, UB_MAGIC_LEN))
		return -EUCLEAN;
	/*
	 * The version before the crc: another version's header need not be
	 * sealed as ours is, and "rebuild the blob" must not depend on it.
	 * No format ever had version 0: that is corruption.
	 */
	b->version_major = ub_le16(sb->version_major);
	if (b->version_major == 0)
		return -EUCLEAN;
	if (b->version_major != UB_VERSION_MAJOR)
		return -EINVAL;
	if (!(flags & UB_OPEN_NO_CRC) &&
	    ub_header_crc(page) != ub_le32(sb->header_crc))
		return -EUCLEAN;
	if (ub_le32(sb->header_size) != UB_HEADER_SIZE ||
	    ub_le32(sb->block_size_log2) != UB_BLOCK_SIZE_LOG2 ||
	    (ub_le32(sb->feature_incompat) & ~UB_FEATURE_INCOMPAT_SUPP))
		return -EINVAL;
	if (ub_le64(sb->blob_size) != b->size ||
	    ub_le32(sb->inline_threshold) > UB_INLINE_MAX)
		return -EUCLEAN;

	b->version_minor = ub_le16(sb->version_minor);
	b->feature_compat = ub_le32(sb->feature_compat);
	b->feature_ro_compat = ub_le32(sb->feature_ro_compat);
	b->inline_threshold = ub_le32(sb->inline_threshold);
	b->root_ino = ub_le64(sb->root_ino);
	b->inode_count = ub_le64(sb->inode_count);
	b->dirent_count = ub_le64(sb->dirent_count);
	b->data_bytes = ub_le64(sb->data_bytes);

	err = ub_check_sections(b, sb);
	if (err)
		return err;
	if (!ub_inodes_sized(b) ||
	    !ub_sect_is_array(b, UB_SECT_DIGESTS, 5) ||
	    !ub_sect_is_array(b, UB_SECT_XATTR_INDEX, 4))
		return -EUCLEAN;
	if (b->inode_count != b->sect[UB_SECT_INODES].count ||
	    b->root_ino >= b->inode_count)
		return -EUCLEAN;
	return 0;
}

int ub_open(struct ub_blob *b, unsigned int flags)
{
	struct ub_inode_info root;
	const u8 *page;
	void *cookie;
	int err;

	/* a blob is whole pages, at least the header page */
	if (b->size < UB_BLOCK_SIZE || (b->size & UB_PAGE_MASK))
		return -EUCLEAN;
	err = ub_map(b, 0, UB_BLOCK_SIZE, &page, &cookie);
	if (err)
		return err;
	err = ub_check_super(b, page, flags);
	ub_unmap(b, cookie);
	if (err)
		return err;

	/* the root must be a directory that is its own parent */
	err = ub_read_inode(b, b->root_ino, &root);
	if (err)
		return err;
	if (!ub_inode_is_dir(&root) || root.aux != b->root_ino)
		return -EUCLEAN;
	return 0;
}

int ub_check_section_crc(const struct ub_blob *b, unsigned int id)
{
	u64 off, len;
	u32 crc = 0;

	if (id >= UB_SECT_NR_V1)
		return -EINVAL;
	off = b->sect[id].offset;
	len = b->sect[id].size;
	if (!ub_fits(off, len, b->size))
		return -EUCLEAN;
	while (len) {
		u32 n = ub_chunk(off, len);
		const u8 *p;
		void *cookie;
		int err = ub_map(b, off, n, &p, &cookie);

		if (err)
			return err;
		crc = ub_crc32c(crc, p, n);
		ub_unmap(b, cookie);
		off += n;
		len -= n;
	}
	return crc == b->sect[id].crc ? 0 : -EUCLEAN;
}

/* ---- inodes (SPEC §4) -------------------------------------------------- */

unsigned int ub_mode_to_dtype(u32 mode)
{
	switch (mode & UB_S_IFMT) {
	case UB_S_IFREG:	return UB_DT_REG;
	case UB_S_IFDIR:	return UB_DT_DIR;
	case UB_S_IFLNK:	return UB_DT_LNK;
	case UB_S_IFCHR:	return UB_DT_CHR;
	case UB_S_IFBLK:	return UB_DT_BLK;
	case UB_S_IFIFO:	return UB_DT_FIFO;
	case UB_S_IFSOCK:	return UB_DT_SOCK;
	default:		return UB_DT_UNKNOWN;
	}
}

/* No payload at all: NONE layout with zero size and payload. */
static inline bool ub_payload_none(const struct ub_inode_info *i)
{
	return i->layout == UB_LAYOUT_NONE && i->size == 0 && i->payload == 0;
}

/* INLINE item of 1..max bytes inside DATA and inside one page of it (SPEC §6). */
static bool ub_payload_inline(const struct ub_blob *b,
			      const struct ub_inode_info *i, u64 max)
{
	return i->layout == UB_LAYOUT_INLINE && i->size >= 1 &&
	       i->size <= max &&
	       ub_in_section(b, UB_SECT_DATA, i->payload, i->payload_len) &&
	       (i->payload & UB_PAGE_MASK) + i->payload_len <= UB_BLOCK_SIZE;
}

/*
 * A directory's data: inside DIRS; an empty one at 0; a multi-chunk one
 * starting on a page so every chunk is one page; a one-chunk one inside a
 * page (SPEC §4, §5).
 */
static bool ub_payload_dir(const struct ub_blob *b, const struct ub_inode_info *i)
{
	if (!ub_in_section(b, UB_SECT_DIRS, i->payload, i->payload_len))
		return false;
	if (i->payload_len == 0)
		return i->payload == 0;
	if (i->payload_len > UB_DIR_CHUNK_SIZE)
		return (i->payload & UB_PAGE_MASK) == 0;
	return (i->payload & UB_PAGE_MASK) + i->payload_len <= UB_BLOCK_SIZE;
}

/* The allowed (type, layout) combinations of SPEC §4; false = corrupt. */
static bool ub_inode_valid(const struct ub_blob *b, const struct ub_inode_info *i)
{
	if (i->mtime_nsec > 999999999u ||
	    i->xattr_set > b->sect[UB_SECT_XATTR_INDEX].count)
		return false;

	switch (ub_inode_type(i)) {
	case UB_S_IFREG:
		/* a larger size would be a negative st_size / i_size */
		if (i->aux || i->size > UB_FILE_SIZE_MAX)
			return false;
		if (i->layout == UB_LAYOUT_EXTERNAL)
			return i->size >= 1 &&
			       i->payload < b->sect[UB_SECT_DIGESTS].count;
		if (i->layout == UB_LAYOUT_INLINE)
			return ub_payload_inline(b, i, UB_INLINE_MAX);
		return ub_payload_none(i);
	case UB_S_IFLNK:
		return !i->aux && ub_payload_inline(b, i, UB_SYMLINK_MAX);
	case UB_S_IFDIR:
		return i->layout == UB_LAYOUT_DIR && ub_payload_dir(b, i) &&
		       i->aux < b->inode_count;
	case UB_S_IFCHR:
	case UB_S_IFBLK:
		return ub_payload_none(i);
	case UB_S_IFIFO:
	case UB_S_IFSOCK:
		return !i->aux && ub_payload_none(i);
	default:
		return false;
	}
}

/* ub_inode.mtime: 34-bit two's complement seconds, nanoseconds above them. */
static inline void ub_unpack_mtime(u64 t, struct ub_inode_info *out)
{
	/* sign extension without shifting a negative number */
	out->mtime_sec = (s64)((t & UB_MTIME_SEC_MASK) ^ UB_MTIME_SEC_SIGN) -
			 (s64)UB_MTIME_SEC_SIGN;
	out->mtime_nsec = (u32)(t >> UB_MTIME_SEC_BITS);
}

int ub_read_inode(const struct ub_blob *b, u64 index, struct ub_inode_info *out)
{
	const struct ub_inode *di;
	const u8 *p;
	void *cookie;
	u8 reserved;
	int err;

	if (index >= b->inode_count)
		return -EUCLEAN;
	/* ub_inodes_sized(): every index < inode_count lies inside INODES */
	err = ub_map(b, b->sect[UB_SECT_INODES].offset + ub_inode_offset(index),
		     UB_INODE_SIZE, &p, &cookie);
	if (err)
		return err;
	di = (const struct ub_inode *)p;
	out->index = index;
	out->mode = ub_le16(di->mode);
	out->layout = di->layout;
	reserved = di->reserved;
	out->nlink = ub_le32(di->nlink);
	out->uid = ub_le32(di->uid);
	out->gid = ub_le32(di->gid);
	out->size = ub_le64(di->size);
	ub_unpack_mtime(ub_le64(di->mtime), out);
	out->xattr_set = ub_le32(di->xattr_set);
	out->aux = ub_le32(di->aux);
	out->payload = ub_le64(di->payload);
	ub_unmap(b, cookie);
	if (reserved)
		return -EUCLEAN;
	/* inline items and directory data are size bytes, kept in 32 bits */
	out->payload_len = 0;
	if (out->layout == UB_LAYOUT_INLINE || out->layout == UB_LAYOUT_DIR) {
		if (out->size > UB_DIR_MAX)
			return -EUCLEAN;
		out->payload_len = (u32)out->size;
	}
	return ub_inode_valid(b, out) ? 0 : -EUCLEAN;
}

/* ---- directories (SPEC §5) --------------------------------------------- */

/*
 * A directory's data is size (= payload_len) bytes at DIRS + payload, cut into chunks
 * of 4096 bytes (the last one shorter), each inside one page.  Small
 * directories are packed back to back, so a chunk, and its dirents, may
 * start at any byte: dirent fields are loaded bytewise.
 */
static inline u32 ub_get_le16(const u8 *p)
{
	return (u32)p[0] | (u32)p[1] << 8;
}

static inline u32 ub_get_le32(const u8 *p)
{
	return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

#define UB_DE_INO(p, k)		ub_get_le32((p) + (k) * UB_DIRENT_SIZE)
#define UB_DE_NAMEOFF(p, k)	ub_get_le16((p) + (k) * UB_DIRENT_SIZE + 4)
#define UB_DE_TYPE(p, k)	((p)[(k) * UB_DIRENT_SIZE + 6])

/* One mapped directory chunk. */
struct ub_dchunk {
	const u8 *p;
	u32 len;	/* UB_DIR_CHUNK_MIN..4096 */
	u32 n;		/* entries: dirents[0].nameoff / 8 */
	void *cookie;
};

/* One validated entry of a mapped chunk. */
struct ub_dent {
	const char *name;
	u32 len;
	u64 ino;
	unsigned int dtype;
};

static inline u32 ub_dir_chunks(const struct ub_inode_info *dir)
{
	return (u32)(((u64)dir->payload_len + UB_DIR_CHUNK_SIZE - 1) >> UB_BLOCK_SIZE_LOG2);
}

/* Map chunk c of a directory and count its entries (SPEC §5 reader checks). */
static int ub_dchunk_map(const struct ub_blob *b, const struct ub_inode_info *dir,
			 u32 c, struct ub_dchunk *ch)
{
	u64 start = (u64)c << UB_BLOCK_SIZE_LOG2;
	u32 off0;
	int err;

	/* rechecked so a hand-made ub_inode_info cannot point outside DIRS */
	if (start >= dir->payload_len ||
	    !ub_in_section(b, UB_SECT_DIRS, dir->payload, dir->payload_len))
		return -EUCLEAN;
	ch->len = dir->payload_len - start < UB_DIR_CHUNK_SIZE ?
		  (u32)(dir->payload_len - start) : UB_DIR_CHUNK_SIZE;
	if (ch->len < UB_DIR_CHUNK_MIN)
		return -EUCLEAN;
	/* ub_map() refuses a chunk that crosses a page */
	err = ub_map(b, b->sect[UB_SECT_DIRS].offset + dir->payload + start,
		     ch->len, &ch->p, &ch->cookie);
	if (err)
		return err;
	off0 = UB_DE_NAMEOFF(ch->p, 0);
	if (off0 == 0 || (off0 % UB_DIRENT_SIZE) || off0 >= ch->len) {
		ub_unmap(b, ch->cookie);
		return -EUCLEAN;
	}
	ch->n = off0 / UB_DIRENT_SIZE;
	return 0;
}

static bool ub_dtype_known(unsigned int t)
{
	return t == UB_DT_FIFO || t == UB_DT_CHR || t == UB_DT_DIR ||
	       t == UB_DT_BLK || t == UB_DT_REG || t == UB_DT_LNK ||
	       t == UB_DT_SOCK;
}

/* A name of 1..255 bytes, no '/' or NUL, neither "." nor "..". */
static bool ub_name_valid(const char *s, u32 len)
{
	if (len == 0 || len > UB_NAME_MAX)
		return false;
	if (s[0] == '.' && (len == 1 || (len == 2 && s[1] == '.')))
		return false;
	return !memchr(s, '/', len) && !memchr(s, '\0', len);
}

/*
 * Decode and check entry k (< n) of a chunk.  Only local facts are checked
 * (its bounds, its name, its inode index and type), which is all memory
 * safety needs; ordering is checked by readdir and fsck.
 */
static int ub_dchunk_entry(const struct ub_blob *b, const struct ub_dchunk *ch,
			   u32 k, struct ub_dent *e)
{
	u32 start = UB_DE_NAMEOFF(ch->p, k), end;

	if (start < ch->n * UB_DIRENT_SIZE || start >= ch->len)
		return -EUCLEAN;
	if (k + 1 < ch->n) {
		end = UB_DE_NAMEOFF(ch->p, k + 1);
	} else {
		/* the last name ends at the first zero byte or the chunk end */
		const u8 *z = memchr(ch->p + start, 0, ch->len - start);

		end = z ? (u32)(z - ch->p) : ch->len;
	}
	if (end <= start || end > ch->len)
		return -EUCLEAN;
	e->name = (const char *)ch->p + start;
	e->len = end - start;
	e->ino = UB_DE_INO(ch->p, k);
	e->dtype = UB_DE_TYPE(ch->p, k);
	if (!ub_name_valid(e->name, e->len) || e->ino >= b->inode_count ||
	    !ub_dtype_known(e->dtype))
		return -EUCLEAN;
	return 0;
}

/* memcmp order of the format: bytes, then the shorter prefix first. */
static int ub_namecmp(const char *a, u32 alen, const char *b, u32 blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* Compare chunk c's first name with the target: <0, 0, >0; error in *err. */
static int ub_dchunk_cmp_first(const struct ub_blob *b, const struct ub_inode_info *dir,
			       u32 c, const char *name, u32 len, int *err)
{
	struct ub_dchunk ch;
	struct ub_dent e;
	int cmp = 0;

	*err = ub_dchunk_map(b, dir, c, &ch);
	if (*err)
		return 0;
	*err = ub_dchunk_entry(b, &ch, 0, &e);
	if (!*err)
		cmp = ub_namecmp(e.name, e.len, name, len);
	ub_unmap(b, ch.cookie);
	return cmp;
}

/* Binary search inside chunk c. */
static int ub_dchunk_find(const struct ub_blob *b, const struct ub_inode_info *dir,
			  u32 c, const char *name, u32 len,
			  u64 *ino, unsigned int *dtype)
{
	struct ub_dchunk ch;
	u32 lo, hi;
	int err = ub_dchunk_map(b, dir, c, &ch);

	if (err)
		return err;
	lo = 0;
	hi = ch.n;
	err = -ENOENT;
	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;
		struct ub_dent e;
		int cmp;

		err = ub_dchunk_entry(b, &ch, mid, &e);
		if (err)
			break;
		cmp = ub_namecmp(e.name, e.len, name, len);
		if (cmp == 0) {
			*ino = e.ino;
			*dtype = e.dtype;
			break;
		}
		err = -ENOENT;
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	ub_unmap(b, ch.cookie);
	return err;
}

int ub_lookup(const struct ub_blob *b, const struct ub_inode_info *dir,
	      const char *name, size_t len, u64 *ino, unsigned int *dtype)
{
	u32 lo, hi;
	int err, cmp;

	if (!ub_inode_is_dir(dir))
		return -ENOTDIR;
	if (len == 0 || len > UB_NAME_MAX)
		return -ENOENT;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.'))) {
		*ino = len == 1 ? dir->index : dir->aux;
		*dtype = UB_DT_DIR;
		return 0;
	}
	if (dir->payload_len == 0)
		return -ENOENT;

	/* the last chunk whose first name is <= name */
	lo = 0;
	hi = ub_dir_chunks(dir) - 1;
	while (lo < hi) {
		u32 mid = lo + (hi - lo + 1) / 2;

		cmp = ub_dchunk_cmp_first(b, dir, mid, name, (u32)len, &err);
		if (err)
			return err;
		if (cmp <= 0)
			lo = mid;
		else
			hi = mid - 1;
	}
	return ub_dchunk_find(b, dir, lo, name, (u32)len, ino, dtype);
}

int ub_lookup_inode(const struct ub_blob *b, const struct ub_inode_info *dir,
		    const char *name, size_t len, struct ub_inode_info *out)
{
	unsigned int dtype;
	u64 ino;
	int err = ub_lookup(b, dir, name, len, &ino, &dtype);

	if (err)
		return err;
	err = ub_read_inode(b, ino, out);
	if (err)
		return err;
	return ub_inode_dtype(out) == dtype ? 0 : -EUCLEAN;
}

/*
 * Emit the entries of one mapped chunk from entry k on; *pos follows.
 * Returns 1 when emit stopped, 0 at the chunk's end, or an error.
 */
static int ub_readdir_chunk(const struct ub_blob *b, const struct ub_dchunk *ch,
			    u64 base, u32 k, u64 *pos, ub_filldir_t emit, void *arg)
{
	struct ub_dent prev = { 0 }, e;
	int err;

	if (k >= ch->n)
		goto next_chunk;	/* resuming past this chunk's entries */
	if (k > 0) {
		err = ub_dchunk_entry(b, ch, k - 1, &prev);
		if (err)
			return err;
	}
	for (; k < ch->n; k++) {
		struct ub_dirent_info di;

		*pos = base + k * UB_DIRENT_SIZE;
		err = ub_dchunk_entry(b, ch, k, &e);
		if (err)
			return err;
		/* names strictly increase (across chunks: ub_dchunk_check_seam) */
		if (k > 0 && ub_namecmp(prev.name, prev.len, e.name, e.len) >= 0)
			return -EUCLEAN;
		di.name = e.name;
		di.name_len = e.len;
		di.ino = e.ino;
		di.dtype = e.dtype;
		di.pos = *pos;
		di.next_pos = k + 1 < ch->n ? *pos + UB_DIRENT_SIZE : base + UB_DIR_CHUNK_SIZE;
		if (emit(arg, &di))
			return 1;
		prev = e;
	}
next_chunk:
	*pos = base + UB_DIR_CHUNK_SIZE;
	return 0;
}

/*
 * Chunk c (> 0, mapped as ch) must start after chunk c - 1's last name: within a chunk
 * ub_readdir_chunk() checks the order, this is the seam between two.
 */
static int ub_dchunk_check_seam(const struct ub_blob *b, const struct ub_inode_info *dir,
				u32 c, const struct ub_dchunk *ch)
{
	struct ub_dchunk before;
	struct ub_dent last, first;
	int err = ub_dchunk_map(b, dir, c - 1, &before);

	if (err)
		return err;
	err = ub_dchunk_entry(b, &before, before.n - 1, &last);
	if (!err)
		err = ub_dchunk_entry(b, ch, 0, &first);
	if (!err && ub_namecmp(last.name, last.len, first.name, first.len) >= 0)
		err = -EUCLEAN;
	ub_unmap(b, before.cookie);
	return err;
}

/* Emit "." and ".." for positions 0 and 1; 1 if emit stopped. */
static int ub_readdir_dots(const struct ub_inode_info *dir, u64 *pos,
			   ub_filldir_t emit, void *arg)
{
	while (*pos < UB_DIRPOS_FIRST) {
		struct ub_dirent_info di;

		di.name = *pos == UB_DIRPOS_DOT ? "." : "..";
		di.name_len = *pos == UB_DIRPOS_DOT ? 1 : 2;
		di.ino = *pos == UB_DIRPOS_DOT ? dir->index : dir->aux;
		di.dtype = UB_DT_DIR;
		di.pos = *pos;
		di.next_pos = *pos + 1;
		if (emit(arg, &di))
			return 1;
		*pos += 1;
	}
	return 0;
}

int ub_readdir(const struct ub_blob *b, const struct ub_inode_info *dir,
	       u64 *pos, ub_filldir_t emit, void *arg)
{
	u64 end;

	if (!ub_inode_is_dir(dir))
		return -ENOTDIR;
	if (ub_readdir_dots(dir, pos, emit, arg))
		return 0;
	end = ub_dir_end_pos(dir);
	if (*pos >= end) {
		*pos = end;
		return 0;
	}
	while (*pos < end) {
		u64 rel = *pos - UB_DIRPOS_FIRST;
		u32 c = (u32)(rel >> UB_BLOCK_SIZE_LOG2);
		/* round a position inside an entry up to the next entry */
		u32 k = (u32)(((rel & UB_PAGE_MASK) + UB_DIRENT_SIZE - 1) / UB_DIRENT_SIZE);
		u64 base = UB_DIRPOS_FIRST + ((u64)c << UB_BLOCK_SIZE_LOG2);
		struct ub_dchunk ch;
		int ret = ub_dchunk_map(b, dir, c, &ch);

		if (ret)
			return ret;
		if (k == 0 && c > 0)
			ret = ub_dchunk_check_seam(b, dir, c, &ch);
		if (!ret)
			ret = ub_readdir_chunk(b, &ch, base, k, pos, emit, arg);
		ub_unmap(b, ch.cookie);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	return 0;
}

/* ---- data and digests (SPEC §6, §7) ------------------------------------ */

int ub_read_data(const struct ub_blob *b, const struct ub_inode_info *ino,
		 u64 off, void *dst, size_t len)
{
	const u8 *p;
	void *cookie;
	u32 n;
	int err;

	if (ino->layout != UB_LAYOUT_INLINE)
		return -EINVAL;
	/* ub_read_inode() checked the item is in DATA and inside one page */
	if (off >= ino->payload_len)
		return 0;
	n = ino->payload_len - (u32)off;
	if (len < n)
		n = (u32)len;
	if (n == 0)
		return 0;
	err = ub_map(b, b->sect[UB_SECT_DATA].offset + ino->payload + off, n,
		     &p, &cookie);
	if (err)
		return err;
	memcpy(dst, p, n);
	ub_unmap(b, cookie);
	return (int)n;
}

int ub_readlink(const struct ub_blob *b, const struct ub_inode_info *ino,
		char *buf, size_t size)
{
	int n;

	if (!ub_inode_is_lnk(ino) || ino->layout != UB_LAYOUT_INLINE)
		return -EINVAL;
	if (size <= ino->payload_len)
		return -ERANGE;
	n = ub_read_data(b, ino, 0, buf, size - 1);
	if (n < 0)
		return n;
	/* a NUL would silently shorten the target the VFS sees */
	if ((u32)n != ino->payload_len || memchr(buf, 0, n))
		return -EUCLEAN;
	buf[n] = '\0';
	return n;
}

int ub_read_digest(const struct ub_blob *b, u64 index, u8 out[UB_DIGEST_SIZE])
{
	const struct ub_sect *s = &b->sect[UB_SECT_DIGESTS];

	if (index >= s->count)
		return -EUCLEAN;
	/* count * 32 == size, and 32 divides 4096: one page */
	return ub_copy(b, s->offset + index * UB_DIGEST_SIZE, out, UB_DIGEST_SIZE);
}

int ub_get_digest(const struct ub_blob *b, const struct ub_inode_info *ino,
		  u8 out[UB_DIGEST_SIZE])
{
	if (ino->layout != UB_LAYOUT_EXTERNAL)
		return -EINVAL;
	return ub_read_digest(b, ino->payload, out);
}

int ub_object_path(const u8 digest[UB_DIGEST_SIZE], char out[UB_OBJECT_PATH_LEN])
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;
	int i;

	for (i = 0; i < UB_DIGEST_SIZE; i++) {
		*o++ = hex[digest[i] >> 4];
		*o++ = hex[digest[i] & 15];
		if (i == 0)
			*o++ = '/';
	}
	*o = '\0';
	return (int)(o - out);
}

/* ---- xattrs (SPEC §8) -------------------------------------------------- */

static const struct {
	const char *str;
	u32 len;
} ub_xattr_prefixes[UB_XATTR_PREFIX_NR] = {
	[UB_XATTR_PREFIX_NONE]		= { "", 0 },
	[UB_XATTR_PREFIX_USER]		= { "user.", 5 },
	[UB_XATTR_PREFIX_TRUSTED]	= { "trusted.", 8 },
	[UB_XATTR_PREFIX_SECURITY]	= { "security.", 9 },
	[UB_XATTR_PREFIX_ACL_ACCESS]	= { "system.posix_acl_access", 23 },
	[UB_XATTR_PREFIX_ACL_DEFAULT]	= { "system.posix_acl_default", 24 },
};

int ub_xattr_iter_init(const struct ub_blob *b, const struct ub_inode_info *ino,
		       struct ub_xattr_iter *it)
{
	const struct ub_sect *idx = &b->sect[UB_SECT_XATTR_INDEX];
	struct ub_xattr_set set;
	u64 off;
	u32 size;
	int err;

	it->b = b;
	it->pos = it->end = 0;
	it->left = 0;
	if (ino->xattr_set == 0)
		return 0;
	if (ino->xattr_set > idx->count)
		return -EUCLEAN;
	/* 16-byte records never cross a page */
	err = ub_copy(b, idx->offset + ((u64)(ino->xattr_set - 1) << 4),
		      &set, sizeof(set));
	if (err)
		return err;
	off = ub_le64(set.offset);
	size = ub_le32(set.size);
	it->left = ub_le16(set.count);
	if (it->left == 0 || !ub_in_section(b, UB_SECT_XATTR_DATA, off, size))
		return -EUCLEAN;
	it->pos = b->sect[UB_SECT_XATTR_DATA].offset + off;
	it->end = it->pos + size;
	return 0;
}

/* Compare name bytes [from, name_len) of x with s: 0 equal, 1 not, <0 error. */
static int ub_xattr_name_neq(const struct ub_blob *b, const struct ub_xattr *x,
			     u32 from, const char *s, u32 len)
{
	u32 n;

	if (from > x->name_len || x->name_len - from != len)
		return 1;
	if (from < x->prefix_len) {
		n = x->prefix_len - from;
		if (memcmp(x->prefix + from, s, n))
			return 1;
		s += n;
		len -= n;
		from = x->prefix_len;
	}
	return ub_blob_neq(b, x->suffix_off + (from - x->prefix_len), s, len);
}

/* Does the full name of x start with str?  1 yes, 0 no, <0 error. */
static int ub_xattr_name_starts(const struct ub_blob *b, const struct ub_xattr *x,
				const char *str, u32 len)
{
	u32 n;
	int err;

	if (x->name_len < len)
		return 0;
	n = x->prefix_len < len ? x->prefix_len : len;
	if (memcmp(x->prefix, str, n))
		return 0;
	if (n == len)
		return 1;
	err = ub_blob_neq(b, x->suffix_off, str + n, len - n);
	return err < 0 ? err : !err;
}

int ub_xattr_next(struct ub_xattr_iter *it, struct ub_xattr *x)
{
	const struct ub_blob *b = it->b;
	struct ub_xattr_entry h;
	int err;

	if (it->left == 0)
		return it->pos == it->end ? 0 : -EUCLEAN;	/* exactly filled */
	if (it->end - it->pos < UB_XATTR_ENTRY_SIZE)
		return -EUCLEAN;
	err = ub_copy(b, it->pos, &h, sizeof(h));
	if (err)
		return err;
	if (h.prefix >= UB_XATTR_PREFIX_NR)
		return -EUCLEAN;
	x->prefix = ub_xattr_prefixes[h.prefix].str;
	x->prefix_len = ub_xattr_prefixes[h.prefix].len;
	x->suffix_len = h.suffix_len;
	x->name_len = x->prefix_len + x->suffix_len;
	x->value_len = ub_le32(h.value_len);
	if (x->name_len == 0 || x->name_len > UB_XATTR_NAME_MAX ||
	    x->value_len > UB_XATTR_VALUE_MAX)
		return -EUCLEAN;
	x->suffix_off = it->pos + UB_XATTR_ENTRY_SIZE;
	if (it->end - x->suffix_off < x->suffix_len)
		return -EUCLEAN;
	x->value_off = x->suffix_off + x->suffix_len;
	if (it->end - x->value_off < x->value_len)
		return -EUCLEAN;
	/* names are C strings to every consumer (listxattr separates with NUL) */
	err = ub_blob_has_byte(b, x->suffix_off, x->suffix_len, 0);
	if (err)
		return err < 0 ? err : -EUCLEAN;
	err = ub_xattr_name_starts(b, x, UB_XATTR_OVERLAY_PREFIX,
				   UB_XATTR_OVERLAY_PREFIX_LEN);
	if (err < 0)
		return err;
	x->overlay = err;
	/* the encoder refuses longer ones: escaped, they would pass 255 bytes */
	if (x->overlay && x->name_len > UB_XATTR_OVERLAY_NAME_MAX)
		return -EUCLEAN;
	it->pos = x->value_off + x->value_len;
	it->left--;
	return 1;
}

int ub_xattr_copy_name(const struct ub_blob *b, const struct ub_xattr *x,
		       unsigned int flags, char *buf, size_t size)
{
	u32 len = ub_xattr_name_len(x, flags);
	u32 from = 0;
	int err;

	if (size < len)
		return -ERANGE;
	if ((flags & UB_XATTR_ESCAPE_OVERLAY) && x->overlay) {
		/* "trusted.overlay.X" -> "trusted.overlay.overlay.X" */
		memcpy(buf, UB_XATTR_OVERLAY_ESCAPED, UB_XATTR_OVERLAY_ESCAPED_LEN);
		buf += UB_XATTR_OVERLAY_ESCAPED_LEN;
		from = UB_XATTR_OVERLAY_PREFIX_LEN;
	}
	if (from < x->prefix_len) {
		memcpy(buf, x->prefix + from, x->prefix_len - from);
		buf += x->prefix_len - from;
		from = x->prefix_len;
	}
	err = ub_copy(b, x->suffix_off + (from - x->prefix_len), buf,
		      x->name_len - from);
	return err ? err : (int)len;
}

int ub_xattr_copy_value(const struct ub_blob *b, const struct ub_xattr *x,
			void *buf, size_t size)
{
	int err;

	if (size < x->value_len)
		return -ERANGE;
	err = ub_copy(b, x->value_off, buf, x->value_len);
	return err ? err : (int)x->value_len;
}

/* Does the full name of @x start with @start (@len bytes, at most 8)? */
static bool ub_xattr_starts(const struct ub_blob *b, const struct ub_xattr *x,
			    const char *start, u32 len)
{
	char head[8];

	if (x->name_len < len)
		return false;
	if (x->prefix_len >= len)
		return !memcmp(x->prefix, start, len);
	/* a shorter prefix (id 0: none) followed by the rest of it */
	memcpy(head, x->prefix, x->prefix_len);
	if (ub_copy(b, x->suffix_off, head + x->prefix_len, len - x->prefix_len))
		return false;	/* listed; copying its name reports the error */
	return !memcmp(head, start, len);
}

/* Is @x of inode @ino left out of a listing under @flags? */
static bool ub_xattr_hidden(const struct ub_blob *b, const struct ub_inode_info *ino,
			    const struct ub_xattr *x, unsigned int flags)
{
	if ((flags & UB_XATTR_HIDE_TRUSTED) && ub_xattr_starts(b, x, "trusted.", 8))
		return true;
	if ((flags & UB_XATTR_HIDE_UNREADABLE_USER) && ub_inode_type(ino) != UB_S_IFREG &&
	    ub_inode_type(ino) != UB_S_IFDIR && ub_xattr_starts(b, x, "user.", 5))
		return true;
	return false;
}

long ub_listxattr(const struct ub_blob *b, const struct ub_inode_info *ino,
		  unsigned int flags, char *buf, size_t size)
{
	struct ub_xattr_iter it;
	struct ub_xattr x;
	size_t used = 0;
	int err;

	err = ub_xattr_iter_init(b, ino, &it);
	if (err)
		return err;
	while ((err = ub_xattr_next(&it, &x)) > 0) {
		u32 len = ub_xattr_name_len(&x, flags);

		if (ub_xattr_hidden(b, ino, &x, flags))
			continue;
		if (size) {
			if (size - used < (size_t)len + 1)
				return -ERANGE;
			err = ub_xattr_copy_name(b, &x, flags, buf + used, len);
			if (err < 0)
				return err;
			buf[used + len] = '\0';
		}
		used += (size_t)len + 1;
	}
	return err < 0 ? err : (long)used;
}

/*
 * What stored name does a presented name refer to?  Without escaping, the
 * same.  With it, "trusted.overlay.overlay.X" is the stored
 * "trusted.overlay.X" and any other "trusted.overlay.*" names nothing.
 * Returns false when nothing can match; else the stored name is the
 * overlay prefix (if *overlay) followed by (*rest, *rest_len).
 */
static bool ub_xattr_unescape(unsigned int flags, const char *name, size_t len,
			      bool *overlay, const char **rest, u32 *rest_len)
{
	*overlay = false;
	*rest = name;
	*rest_len = (u32)len;
	if (!(flags & UB_XATTR_ESCAPE_OVERLAY) ||
	    len < UB_XATTR_OVERLAY_PREFIX_LEN ||
	    memcmp(name, UB_XATTR_OVERLAY_PREFIX, UB_XATTR_OVERLAY_PREFIX_LEN))
		return true;
	if (len < UB_XATTR_OVERLAY_ESCAPED_LEN ||
	    memcmp(name, UB_XATTR_OVERLAY_ESCAPED, UB_XATTR_OVERLAY_ESCAPED_LEN))
		return false;
	*overlay = true;
	*rest = name + UB_XATTR_OVERLAY_ESCAPED_LEN;
	*rest_len = (u32)(len - UB_XATTR_OVERLAY_ESCAPED_LEN);
	return true;
}

int ub_getxattr(const struct ub_blob *b, const struct ub_inode_info *ino,
		unsigned int flags, const char *name, size_t name_len,
		void *buf, size_t size)
{
	struct ub_xattr_iter it;
	struct ub_xattr x, found;
	bool want_overlay, matchable, have = false;
	const char *rest;
	u32 rest_len;
	int err;

	if (name_len == 0 || name_len > UB_XATTR_NAME_MAX + 8)
		return -ENODATA;
	matchable = ub_xattr_unescape(flags, name, name_len, &want_overlay,
				      &rest, &rest_len);
	err = ub_xattr_iter_init(b, ino, &it);
	if (err)
		return err;
	while ((err = ub_xattr_next(&it, &x)) > 0) {
		/* an escaped name can only be an overlay xattr */
		if (have || !matchable || (want_overlay && !x.overlay))
			continue;
		err = ub_xattr_name_neq(b, &x, want_overlay ? UB_XATTR_OVERLAY_PREFIX_LEN : 0,
					rest, rest_len);
		if (err < 0)
			return err;
		if (!err) {
			found = x;
			have = true;
		}
	}
	if (err < 0)
		return err;
	if (!have)
		return -ENODATA;
	if (size == 0)
		return (int)found.value_len;
	return ub_xattr_copy_value(b, &found, buf, size);
}
