// create-files DIR N SIZE: the kernel's cost of creating N object files the way the store writer
// does (open O_CREAT|O_EXCL a temp name in DIR/objects, write SIZE bytes, close, rename into
// DIR/objects/XX/), on its own. Prints wall, user and sys seconds as JSON.
//   cc -O2 -o /tmp/create-files bench/build/create-files.c && /tmp/create-files DIR 5117 40960
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  const char *dir = argv[1]; long n = atol(argv[2]); long size = atol(argv[3]);
  char *buf = malloc(size ? size : 1); memset(buf, 'x', size);
  char p[4096], q[4096];
  double t0 = now();
  snprintf(p, sizeof p, "%s/objects", dir); mkdir(dir, 0755); mkdir(p, 0755);
  for (int i = 0; i < 256; i++) { snprintf(p, sizeof p, "%s/objects/%02x", dir, i); mkdir(p, 0755); }
  for (long i = 0; i < n; i++) {
    snprintf(p, sizeof p, "%s/objects/.tmp-%ld", dir, i);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0444);
    if (fd < 0) { perror(p); return 1; }
    memcpy(buf, &i, sizeof i);
    for (long done = 0; done < size; ) { ssize_t w = write(fd, buf + done, size - done); if (w <= 0) { perror("write"); return 1; } done += w; }
    close(fd);
    snprintf(q, sizeof q, "%s/objects/%02lx/%062lx", dir, (i * 2654435761u) & 255, i);
    if (rename(p, q)) { perror(q); return 1; }
  }
  double t1 = now();
  struct rusage ru; getrusage(RUSAGE_SELF, &ru);
  printf("{\"files\":%ld,\"size\":%ld,\"wall\":%.3f,\"user\":%.3f,\"sys\":%.3f,\"usPerFile\":%.1f}\n", n, size, t1 - t0,
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, (t1 - t0) / n * 1e6);
  return 0;
}
