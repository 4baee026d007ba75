/* Benchmark hog: grows anonymous memory at --rate MiB/s (0: as fast as the
 * kernel faults pages in), bounded by --max MiB, holds --hold s, exits.
 *
 * --prewarm: before "ready", map the whole --max region once, fault every
 * page in, then madvise(MADV_DONTNEED) it.  The VMA and its page tables stay,
 * page cache the kernel had to reclaim for it is already reclaimed, and the
 * freed pages sit on the allocator's (cache-hot) free lists: the measured
 * growth is then the fault rate of the pages themselves, not mmap/page-table
 * set-up or reclaim.  Growth is one write per 4 KiB page.
 *
 * --wait-go: after "ready", wait for one byte on stdin before growing (the
 * bench starts the daemon and the witness in between).
 *
 * On SIGTERM it prints "term <CLOCK_MONOTONIC ns>" and exits, unless
 * --ignore-term, then it prints the line and carries on (SIGKILL ends it).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_term;
static struct timespec term_ts;
static int ignore_term;

static void on_term(int sig)
{
    (void)sig;
    clock_gettime(CLOCK_MONOTONIC, &term_ts);
    got_term = 1;
    if (!ignore_term) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "term %lld\n",
                         (long long)term_ts.tv_sec * 1000000000LL + term_ts.tv_nsec);
        if (write(1, buf, (size_t)n) < 0) {}
        _exit(143);
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void report_term(void)
{
    static int done;
    if (got_term && !done) {
        printf("term %lld\n", (long long)term_ts.tv_sec * 1000000000LL + term_ts.tv_nsec);
        fflush(stdout);
        done = 1;
    }
}

static void sleep_s(double s)
{
    struct timespec t;
    if (s <= 0) return;
    t.tv_sec = (time_t)s;
    t.tv_nsec = (long)((s - (double)t.tv_sec) * 1e9);
    nanosleep(&t, NULL); /* a signal cuts it short: fine */
}

int main(int argc, char **argv)
{
    double rate = 256, hold = 30, delay = 0;
    long max_mib = 512, start_mib = 0;
    int prewarm = 0, wait_go = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--max") && i + 1 < argc) max_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--start") && i + 1 < argc) start_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--hold") && i + 1 < argc) hold = atof(argv[++i]);
        else if (!strcmp(argv[i], "--delay") && i + 1 < argc) delay = atof(argv[++i]);
        else if (!strcmp(argv[i], "--ignore-term")) ignore_term = 1;
        else if (!strcmp(argv[i], "--prewarm")) prewarm = 1;
        else if (!strcmp(argv[i], "--wait-go")) wait_go = 1;
        else { fprintf(stderr, "bhog: bad argument %s\n", argv[i]); return 2; }
    }
    if (max_mib <= 0 || max_mib > 8192 || start_mib > max_mib) {
        fprintf(stderr, "bhog: --max must be in 1..8192 MiB and >= --start\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    size_t len = (size_t)max_mib << 20, page = 4096;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    if (prewarm) {
        for (size_t o = 0; o < len; o += page) mem[o] = 1;
        madvise(mem, len, MADV_DONTNEED);
    }
    size_t have = (size_t)start_mib << 20;
    for (size_t o = 0; o < have; o += page) mem[o] = 1;
    printf("ready\n");
    fflush(stdout);
    if (wait_go) {
        char c;
        while (read(0, &c, 1) < 0 && !got_term) {}
    }
    sleep_s(delay);
    double t0 = now_s();
    size_t step = (size_t)1 << 20; /* 1 MiB between rate checks */
    while (have < len) {
        size_t end = have + step;
        for (size_t o = have; o < end; o += page) mem[o] = 1;
        have = end;
        if (rate > 0) {
            double due = t0 + (double)(have - ((size_t)start_mib << 20)) / (1 << 20) / rate;
            sleep_s(due - now_s());
        }
        report_term();
    }
    double until = now_s() + hold;
    while (now_s() < until) {
        sleep_s(until - now_s() < 0.05 ? until - now_s() : 0.05);
        report_term();
    }
    return 0;
}
