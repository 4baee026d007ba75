/* Independent witness: samples MemAvailable every --period-us (pread of a
 * kept-open /proc/meminfo) until SIGTERM/SIGINT, then prints one JSON line:
 * the minimum, when it was seen, the first sample at or below --term-kib,
 * the last sample above it, and the sample count.  Times are CLOCK_MONOTONIC
 * ns, comparable with the other processes' clocks. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_stop(int s) { (void)s; stop = 1; }

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static long long avail(int fd)
{
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strstr(buf, "MemAvailable:");
    return p ? atoll(p + 13) : -1;
}

int main(int argc, char **argv)
{
    long long term = 0;
    long period_us = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--term-kib")) term = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--period-us")) period_us = atol(argv[i + 1]);
    }
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    int fd = open("/proc/meminfo", O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    long long minv = avail(fd), min_t = now_ns(), cross_t = 0, above_t = 0, n = 0;
    /* MemAvailable at the crossing sample and at the last sample above TERM;
     * before the crossing, the largest drop between two samples and how many
     * drops were >= 1 MiB (the kernel's counters move in batches: the page
     * allocator's per-CPU lists are refilled and drained in bulk). */
    long long cross_v = 0, above_v = 0, prev = minv, max_drop = 0, big_drops = 0;
    struct timespec step = {0, period_us * 1000};
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        long long t = now_ns(), a = avail(fd);
        n++;
        if (a >= 0 && a < minv) { minv = a; min_t = t; }
        if (a >= 0 && !cross_t && prev - a > max_drop) max_drop = prev - a;
        if (a >= 0 && !cross_t && prev - a >= 1024) big_drops++;
        if (a >= 0 && a <= term && !cross_t) { cross_t = t; cross_v = a; }
        if (a > term && !cross_t) { above_t = t; above_v = a; }
        if (a >= 0) prev = a;
        nanosleep(&step, NULL);
    }
    printf("{\"min_kib\": %lld, \"min_ns\": %lld, \"cross_ns\": %lld, \"last_above_ns\": %lld, \"samples\": %lld, "
           "\"cross_kib\": %lld, \"last_above_kib\": %lld, \"max_drop_kib\": %lld, \"big_drops\": %lld}\n",
           minv, min_t, cross_t, above_t, n, cross_v, above_v, max_drop, big_drops);
    return 0;
}
