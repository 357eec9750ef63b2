// SPDX-License-Identifier: GPL-2.0-only
/*
 * Extended attributes, as the blob stores them (SPEC §8): user., trusted.,
 * security. and the POSIX ACLs.  An image's trusted.overlay.X is shown as
 * trusted.overlay.overlay.X (overlayfs's own escaping), so an overlay stacked
 * on top never takes the image's xattrs for its whiteouts or opaque marks;
 * the reader does the renaming (UB_XATTR_ESCAPE_OVERLAY).
 */
#include <linux/xattr.h>
#include <linux/posix_acl_xattr.h>
#include <linux/slab.h>
#include "internal.h"

#define UBFS_XATTR_FLAGS	UB_XATTR_ESCAPE_OVERLAY
/* A presented name: the stored one plus the "overlay." of the escape. */
#define UBFS_XATTR_NAME_BUF	(UB_XATTR_NAME_MAX + UB_XATTR_OVERLAY_ESCAPED_LEN + 1)

static int ubfs_xattr_get(const struct xattr_handler *handler,
			  struct dentry *unused, struct inode *inode,
			  const char *suffix, void *buffer, size_t size)
{
	char name[UBFS_XATTR_NAME_BUF];
	int len, ret;

	len = snprintf(name, sizeof(name), "%s%s", handler->prefix, suffix);
	if (len >= sizeof(name))
		return -ENODATA;
	ret = ub_getxattr(UBFS_BLOB(inode), &UBFS_I(inode)->info, UBFS_XATTR_FLAGS,
			  name, len, buffer, size);
	if (ret == -ENODATA || ret == -ERANGE || ret >= 0)
		return ret;
	return ubfs_reader_error(inode->i_sb, ret, "getxattr", UBFS_I(inode)->info.index);
}

static const struct xattr_handler ubfs_xattr_user_handler = {
	.prefix	= XATTR_USER_PREFIX,
	.get	= ubfs_xattr_get,
};

static const struct xattr_handler ubfs_xattr_trusted_handler = {
	.prefix	= XATTR_TRUSTED_PREFIX,
	.get	= ubfs_xattr_get,
};

static const struct xattr_handler ubfs_xattr_security_handler = {
	.prefix	= XATTR_SECURITY_PREFIX,
	.get	= ubfs_xattr_get,
};

const struct xattr_handler *ubfs_xattr_handlers[] = {
	&ubfs_xattr_user_handler,
	&ubfs_xattr_trusted_handler,
	&ubfs_xattr_security_handler,
#if defined(CONFIG_FS_POSIX_ACL) && !defined(UBFS_HAVE_GET_INODE_ACL)
	/* 6.1 reaches ->get_acl through these; 6.2+ through the VFS itself. */
	&posix_acl_access_xattr_handler,
	&posix_acl_default_xattr_handler,
#endif
	NULL,
};

/*
 * Names we can also get: user. (regular files and directories only: the
 * VFS answers -ENODATA for others, and overlayfs's copy-up stops at the
 * first listed name it cannot read), security., trusted. (CAP_SYS_ADMIN
 * only, as on every other filesystem) and the ACLs (not on symlinks).  A
 * name in another namespace (a blob may store one with prefix id 0) is not
 * listed: no handler serves it.
 */
static bool ubfs_xattr_listable(const struct inode *inode, const char *name)
{
	if (!strncmp(name, XATTR_USER_PREFIX, XATTR_USER_PREFIX_LEN))
		return S_ISREG(inode->i_mode) || S_ISDIR(inode->i_mode);
	if (!strncmp(name, XATTR_SECURITY_PREFIX, XATTR_SECURITY_PREFIX_LEN))
		return true;
	if (!strncmp(name, XATTR_TRUSTED_PREFIX, XATTR_TRUSTED_PREFIX_LEN))
		return capable(CAP_SYS_ADMIN);
#ifdef CONFIG_FS_POSIX_ACL
	return !S_ISLNK(inode->i_mode) &&
	       (!strcmp(name, XATTR_NAME_POSIX_ACL_ACCESS) ||
		!strcmp(name, XATTR_NAME_POSIX_ACL_DEFAULT));
#else
	return false;
#endif
}

static int ubfs_list_one(const struct inode *inode, const struct ub_blob *b,
			 const struct ub_xattr *x, char *buffer, size_t size, size_t *used)
{
	char name[UBFS_XATTR_NAME_BUF];
	int len;

	len = ub_xattr_copy_name(b, x, UBFS_XATTR_FLAGS, name, sizeof(name) - 1);
	if (len < 0)
		return len == -ERANGE ? -EUCLEAN : len;
	name[len] = '\0';
	if (!ubfs_xattr_listable(inode, name))
		return 0;
	if (buffer) {
		if (*used + len + 1 > size)
			return -ERANGE;
		memcpy(buffer + *used, name, len + 1);
	}
	*used += len + 1;
	return 0;
}

ssize_t ubfs_listxattr(struct dentry *dentry, char *buffer, size_t size)
{
	struct inode *inode = d_inode(dentry);
	const struct ub_blob *b = UBFS_BLOB(inode);
	struct ub_xattr_iter it;
	struct ub_xattr x;
	size_t used = 0;
	int ret;

	ret = ub_xattr_iter_init(b, &UBFS_I(inode)->info, &it);
	while (!ret && (ret = ub_xattr_next(&it, &x)) == 1)
		ret = ubfs_list_one(inode, b, &x, size ? buffer : NULL, size, &used);
	if (ret == -ERANGE)
		return ret;
	if (ret < 0)
		return ubfs_reader_error(inode->i_sb, ret, "listxattr",
					 UBFS_I(inode)->info.index);
	return used;
}

#ifdef CONFIG_FS_POSIX_ACL
/* ACLs are stored as their xattr (system.posix_acl_*), decoded on demand. */
struct posix_acl *ubfs_get_acl(struct inode *inode, int type, bool rcu)
{
	const struct ub_blob *b = UBFS_BLOB(inode);
	const struct ub_inode_info *info = &UBFS_I(inode)->info;
	const char *name;
	struct posix_acl *acl;
	void *value;
	int len, got;

	if (rcu)
		return ERR_PTR(-ECHILD);
	if (!info->xattr_set)
		return NULL;
	name = type == ACL_TYPE_ACCESS ? XATTR_NAME_POSIX_ACL_ACCESS :
					 XATTR_NAME_POSIX_ACL_DEFAULT;
	len = ub_getxattr(b, info, UBFS_XATTR_FLAGS, name, strlen(name), NULL, 0);
	if (len == -ENODATA)
		return NULL;
	if (len < 0)
		return ERR_PTR(ubfs_reader_error(inode->i_sb, len, "acl", info->index));
	value = kvmalloc(len ?: 1, GFP_KERNEL);
	if (!value)
		return ERR_PTR(-ENOMEM);
	got = ub_getxattr(b, info, UBFS_XATTR_FLAGS, name, strlen(name), value, len);
	if (got == len)
		acl = posix_acl_from_xattr(&init_user_ns, value, len);
	else
		acl = ERR_PTR(ubfs_reader_error(inode->i_sb,
						got < 0 ? got : -EUCLEAN, "acl",
						info->index));
	kvfree(value);
	return acl;
}
#endif
