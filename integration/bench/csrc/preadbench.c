/* The floor for one sample: a bare pread of /proc/meminfo and
 * /proc/pressure/memory over kept-open descriptors, no parsing.  Prints the
 * median ns per sample over --rounds rounds of --iters samples. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000, rounds = argc > 2 ? atoi(argv[2]) : 7;
    const char *mi = argc > 3 ? argv[3] : "/proc/meminfo", *ps = argc > 4 ? argv[4] : "/proc/pressure/memory";
    int fd1 = open(mi, O_RDONLY), fd2 = open(ps, O_RDONLY);
    if (fd1 < 0) { perror(mi); return 1; }
    static char buf[8192];
    double res[64];
    if (rounds > 64) rounds = 64;
    for (int r = 0; r < rounds; r++) {
        long long t0 = now_ns();
        for (int i = 0; i < iters; i++) {
            if (pread(fd1, buf, sizeof buf, 0) < 0) return 1;
            if (fd2 >= 0 && pread(fd2, buf, sizeof buf, 0) < 0) return 1;
        }
        res[r] = (double)(now_ns() - t0) / iters;
    }
    qsort(res, (size_t)rounds, sizeof res[0], cmp);
    printf("{\"median_ns\": %.1f, \"min_ns\": %.1f, \"max_ns\": %.1f, \"psi\": %s}\n",
           res[rounds / 2], res[0], res[rounds - 1], fd2 >= 0 ? "true" : "false");
    return 0;
}
