/* SPDX-License-Identifier: Apache-2.0 */
/* verity-digest FILE...: print fs-verity digests as the FUSE server computes them (tests). */
#include "verity.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

int main(int argc, char *argv[])
{
	uint8_t d[SHA256_SIZE];
	int i, j, fd, err, status = 0;

	for (i = 1; i < argc; i++) {
		fd = open(argv[i], O_RDONLY);
		err = fd < 0 ? -errno : verity_digest_fd(fd, d);
		if (fd >= 0)
			close(fd);
		if (err) {
			fprintf(stderr, "verity-digest: %s: %s\n", argv[i], strerror(-err));
			status = 1;
			continue;
		}
		for (j = 0; j < SHA256_SIZE; j++)
			printf("%02x", d[j]);
		printf("  %s\n", argv[i]);
	}
	return status;
}
