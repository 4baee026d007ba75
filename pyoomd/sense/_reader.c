/* The hot path of pyoomd: read /proc/meminfo and /proc/pressure/memory over
 * kept-open file descriptors and parse them in one pass, without sscanf.
 *
 * The grammar is the one documented at the top of parse.py, and the results
 * (including the MemAvailable estimate and the invariant checks) must be the
 * same as parse.py's: tests/test_readers.py and test_parse_fuzz.py compare
 * the two on fixtures and on random bytes.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll (Python.h defines it when cffi includes this file) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

struct pyoomd_sample {
    long long mem_total, mem_available, swap_total, swap_free;
    long long mem_free, active_file, inactive_file, sreclaimable;
    int has_available; /* 0: mem_available is the pre-3.14 estimate */
    int has_psi;
    int has_full;
    int psi_same; /* the PSI file read the same bytes as this reader's last read */
    double some10, some60, some300, full10, full60, full300;
    unsigned long long some_total, full_total;
};

/* PSI files are ~110 bytes; one up to this size is kept to compare. */
#define PSI_KEEP 256

struct pyoomd_meminfo_hint;

struct pyoomd_reader {
    int meminfo_fd;
    int psi_fd; /* -1 when the kernel has no PSI */
    int hinted; /* meminfo is procfs's: use the fast path */
    struct pyoomd_meminfo_hint *hint;
    /* The last PSI file read and what it parsed to (psi_len -1: none). */
    long psi_len;
    char psi_bytes[PSI_KEEP];
    struct pyoomd_sample *psi_parsed;
};

/* /proc/meminfo is ~1.5 KiB on 6.x kernels; 8 KiB leaves room for new lines
 * and still fits the stack.  Larger files go to the heap, up to READ_MAX. */
#define STACK_BUF 8192
/* Far above any meminfo or PSI file: a file this big is not what we think. */
#define READ_MAX (1 << 20)
/* Same digit limits as parse.py (see the reasons there). */
#define MAX_KIB_DIGITS 18
#define MAX_TOTAL_DIGITS 19
#define MAX_AVG_DIGITS 15

/* The meminfo keys we use, by index; bit (1 << index) of a mask says one was
 * seen.  Listed in the kernel's order (fs/proc/meminfo.c). */
enum { K_TOTAL, K_FREE, K_AVAIL, K_ACTIVE_FILE, K_INACTIVE_FILE, K_SWAP_TOTAL, K_SWAP_FREE, K_SRECLAIMABLE, K_N };
static const char *const KEY_NAME[K_N] = {"MemTotal", "MemFree", "MemAvailable", "Active(file)",
                                          "Inactive(file)", "SwapTotal", "SwapFree", "SReclaimable"};
static const unsigned char KEY_LEN[K_N] = {8, 7, 12, 12, 14, 9, 8, 12};

/* Where each key's line started in the last full scan of this file (-1:
 * absent), for pyoomd_parse_meminfo_hinted. */
struct pyoomd_meminfo_hint {
    int valid;
    int off[K_N];
};

static int is_ws(char c)
{
    /* parse.py's _WS: newline is the line separator, not whitespace. */
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A meminfo value "<ws>digits[<ws>kB]<ws>" spanning [p, end). */
static int parse_kib(const char *p, const char *end, long long *out)
{
    long long v = 0;
    int n = 0;
    while (p < end && is_ws(*p))
        p++;
    for (; p < end && is_digit(*p); p++, n++) {
        if (n == MAX_KIB_DIGITS)
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (n == 0)
        return -EINVAL;
    while (p < end && is_ws(*p))
        p++;
    if (end - p >= 2 && p[0] == 'k' && p[1] == 'B')
        p += 2;
    while (p < end && is_ws(*p))
        p++;
    if (p != end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* The index of a meminfo key we use, or -1. */
static int meminfo_key(const char *key, size_t klen)
{
    int k;
    switch (key[0]) {
    case 'M': k = klen == 8 ? K_TOTAL : klen == 7 ? K_FREE : K_AVAIL; break;
    case 'A': k = K_ACTIVE_FILE; break;
    case 'I': k = K_INACTIVE_FILE; break;
    case 'S': k = klen == 9 ? K_SWAP_TOTAL : klen == 8 ? K_SWAP_FREE : K_SRECLAIMABLE; break;
    default: return -1;
    }
    return klen == KEY_LEN[k] && memcmp(key, KEY_NAME[k], klen) == 0 ? k : -1;
}

static long long *meminfo_slot(struct pyoomd_sample *s, int k)
{
    switch (k) {
    case K_TOTAL: return &s->mem_total;
    case K_FREE: return &s->mem_free;
    case K_AVAIL: return &s->mem_available;
    case K_ACTIVE_FILE: return &s->active_file;
    case K_INACTIVE_FILE: return &s->inactive_file;
    case K_SWAP_TOTAL: return &s->swap_total;
    case K_SWAP_FREE: return &s->swap_free;
    default: return &s->sreclaimable;
    }
}

/* Estimate and invariants, as parse.py's parse_meminfo. */
static int meminfo_finish(struct pyoomd_sample *s, int seen)
{
    if (!(seen & (1 << K_TOTAL)))
        return -EINVAL;
    s->has_available = (seen & (1 << K_AVAIL)) != 0;
    if (!s->has_available) {
        /* Pre-3.14 kernels: upper-bound estimate, see estimate_available_kib(). */
        if (!(seen & (1 << K_FREE)))
            return -EINVAL;
        s->mem_available = s->mem_free + s->active_file + s->inactive_file + s->sreclaimable;
    }
    if (s->mem_available > s->mem_total || s->swap_free > s->swap_total)
        return -EINVAL;
    return 0;
}

static void meminfo_zero(struct pyoomd_sample *s)
{
    s->mem_total = s->mem_available = s->swap_total = s->swap_free = 0;
    s->mem_free = s->active_file = s->inactive_file = s->sreclaimable = 0;
}

/* Every line; records where each key's (last) line starts when h is given. */
static int parse_meminfo_full(const char *buf, size_t len, struct pyoomd_sample *s,
                              struct pyoomd_meminfo_hint *h)
{
    const char *p = buf, *end = buf + len;
    int seen = 0, k, rc;

    meminfo_zero(s);
    if (h) {
        h->valid = 0;
        for (k = 0; k < K_N; k++)
            h->off[k] = -1;
    }
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon;
        if (!eol)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon && colon > p && (k = meminfo_key(p, (size_t)(colon - p))) >= 0) {
            if (parse_kib(colon + 1, eol, meminfo_slot(s, k)) < 0)
                return -EINVAL;
            seen |= 1 << k;
            if (h)
                h->off[k] = (int)(p - buf);
        }
        p = eol + 1;
    }
    rc = meminfo_finish(s, seen);
    if (h && rc == 0 && len < (size_t)1 << 30)
        h->valid = 1;
    return rc;
}

int pyoomd_parse_meminfo(const char *buf, size_t len, struct pyoomd_sample *s)
{
    return parse_meminfo_full(buf, len, s, NULL);
}

/* The fast path: the kernel writes meminfo's lines in a fixed order, each
 * key once, so the keys we use start where they started last time.  Check
 * each one there ("Key:" at a line start) and parse its value; anything
 * else (a key moved, a bad value, a failed invariant) falls back to the full
 * scan, which decides and records the new places.  Only for files known to
 * hold no duplicate key and no key that was absent before, that is procfs's
 * /proc/meminfo (see pyoomd_open): there it gives what the full scan gives,
 * in ~0.1 us instead of ~0.4 us. */
int pyoomd_parse_meminfo_hinted(const char *buf, size_t len, struct pyoomd_meminfo_hint *h,
                                struct pyoomd_sample *s)
{
    const char *end = buf + len;
    int seen = 0, k;

    if (!h->valid)
        return parse_meminfo_full(buf, len, s, h);
    meminfo_zero(s);
    for (k = 0; k < K_N; k++) {
        int off = h->off[k];
        const char *p, *v, *eol;
        if (off < 0)
            continue;
        p = buf + off;
        if ((size_t)off + KEY_LEN[k] + 1 > len || (off > 0 && p[-1] != '\n') ||
            memcmp(p, KEY_NAME[k], KEY_LEN[k]) != 0 || p[KEY_LEN[k]] != ':')
            return parse_meminfo_full(buf, len, s, h);
        v = p + KEY_LEN[k] + 1;
        eol = memchr(v, '\n', (size_t)(end - v));
        if (parse_kib(v, eol ? eol : end, meminfo_slot(s, k)) < 0)
            return parse_meminfo_full(buf, len, s, h);
        seen |= 1 << k;
    }
    if (meminfo_finish(s, seen) < 0)
        return parse_meminfo_full(buf, len, s, h);
    return 0;
}

/* A PSI average "digits[.digits]" in [p, end), at most MAX_AVG_DIGITS digits.
 * mantissa / 10^k is exact-then-correctly-rounded, like Python's float(). */
static int parse_avg(const char *p, const char *end, double *out)
{
    static const double pow10[MAX_AVG_DIGITS + 1] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    long long mant = 0;
    int n = 0, frac = 0;
    for (; p < end && is_digit(*p); p++, n++) {
        if (n == MAX_AVG_DIGITS)
            return -EINVAL;
        mant = mant * 10 + (*p - '0');
    }
    if (n == 0)
        return -EINVAL;
    if (p < end && *p == '.') {
        for (p++; p < end && is_digit(*p); p++, n++, frac++) {
            if (n == MAX_AVG_DIGITS)
                return -EINVAL;
            mant = mant * 10 + (*p - '0');
        }
        if (frac == 0)
            return -EINVAL;
    }
    if (p != end)
        return -EINVAL;
    *out = (double)mant / pow10[frac];
    return 0;
}

static int parse_total(const char *p, const char *end, unsigned long long *out)
{
    unsigned long long v = 0;
    int n = 0;
    for (; p < end && is_digit(*p); p++, n++) {
        if (n == MAX_TOTAL_DIGITS)
            return -EINVAL;
        v = v * 10 + (unsigned long long)(*p - '0');
    }
    if (n == 0 || p != end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Token [p, end) must start with key; returns the value start or NULL. */
static const char *after_key(const char *p, const char *end, const char *key)
{
    size_t klen = strlen(key);
    if ((size_t)(end - p) < klen || memcmp(p, key, klen) != 0)
        return NULL;
    return p + klen;
}

/* Split [p, eol) on whitespace runs into at most max tokens; returns the
 * count, or max + 1 when there are more. */
static int tokenize(const char *p, const char *eol, const char **tb, const char **te, int max)
{
    int n = 0;
    while (p < eol) {
        while (p < eol && is_ws(*p))
            p++;
        if (p == eol)
            break;
        if (n == max)
            return max + 1;
        tb[n] = p;
        while (p < eol && !is_ws(*p))
            p++;
        te[n++] = p;
    }
    return n;
}

/* One "some ..." or "full ..." line, already split into 5 tokens. */
static int psi_line(const char **tb, const char **te, double *avg, unsigned long long *total)
{
    static const char *keys[3] = {"avg10=", "avg60=", "avg300="};
    const char *v;
    int i;
    for (i = 0; i < 3; i++) {
        v = after_key(tb[i + 1], te[i + 1], keys[i]);
        if (!v || parse_avg(v, te[i + 1], &avg[i]) < 0)
            return -EINVAL;
    }
    v = after_key(tb[4], te[4], "total=");
    if (!v || parse_total(v, te[4], total) < 0)
        return -EINVAL;
    return 0;
}

#define TOKEN_IS(i, lit) (te[i] - tb[i] == 4 && memcmp(tb[i], lit, 4) == 0)

int pyoomd_parse_psi(const char *buf, size_t len, struct pyoomd_sample *s)
{
    const char *p = buf, *end = buf + len;
    const char *tb[5], *te[5];
    double some[3], full[3];
    int n, has_some = 0;

    s->has_full = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        n = tokenize(p, eol, tb, te, 5);
        if (n > 0 && (TOKEN_IS(0, "some") || TOKEN_IS(0, "full"))) {
            int is_some = TOKEN_IS(0, "some");
            if (n != 5)
                return -EINVAL;
            if (psi_line(tb, te, is_some ? some : full, is_some ? &s->some_total : &s->full_total) < 0)
                return -EINVAL;
            if (is_some)
                has_some = 1;
            else
                s->has_full = 1;
        }
        p = eol + 1;
    }
    if (!has_some)
        return -EINVAL;
    s->some10 = some[0], s->some60 = some[1], s->some300 = some[2];
    if (s->has_full)
        s->full10 = full[0], s->full60 = full[1], s->full300 = full[2];
    return 0;
}

/* Read the whole file from offset 0.  Returns the length, or -errno.  *heap
 * is set when the file outgrew the stack buffer; the caller frees it. */
static long read_whole(int fd, char *stack, char **heap)
{
    char *buf = stack;
    size_t cap = STACK_BUF, len = 0;
    *heap = NULL;
    for (;;) {
        ssize_t n = pread(fd, buf + len, cap - len, (off_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        len += (size_t)n;
        if (len < cap) /* a short read is the end, as in sample.py */
            return (long)len;
        if (cap * 2 > READ_MAX)
            return -EFBIG;
        char *grown = *heap ? realloc(*heap, cap * 2) : malloc(cap * 2);
        if (!grown)
            return -ENOMEM;
        if (!*heap)
            memcpy(grown, stack, len);
        *heap = buf = grown;
        cap *= 2;
    }
}

/* meminfo into out (the fast path where the file is procfs's). */
static int read_meminfo(struct pyoomd_reader *r, struct pyoomd_sample *out)
{
    char stack[STACK_BUF];
    char *heap;
    long len = read_whole(r->meminfo_fd, stack, &heap);
    int rc;
    if (len < 0)
        return (int)len;
    if (r->hinted)
        rc = pyoomd_parse_meminfo_hinted(heap ? heap : stack, (size_t)len, r->hint, out);
    else
        rc = pyoomd_parse_meminfo(heap ? heap : stack, (size_t)len, out);
    free(heap);
    return rc;
}

static void copy_psi(struct pyoomd_sample *to, const struct pyoomd_sample *from)
{
    to->has_full = from->has_full;
    to->some10 = from->some10, to->some60 = from->some60, to->some300 = from->some300;
    to->full10 = from->full10, to->full60 = from->full60, to->full300 = from->full300;
    to->some_total = from->some_total, to->full_total = from->full_total;
}

/* PSI into out.  PSI totals stand still while nothing stalls (the usual
 * case): the same bytes as last time are not parsed again, and psi_same
 * tells the caller it may reuse what it built from them. */
static int read_psi(struct pyoomd_reader *r, struct pyoomd_sample *out)
{
    char stack[STACK_BUF];
    char *heap;
    long len = read_whole(r->psi_fd, stack, &heap);
    const char *buf = heap ? heap : stack;
    int rc;
    if (len < 0) {
        r->psi_len = -1;
        return (int)len;
    }
    if (len == r->psi_len && memcmp(buf, r->psi_bytes, (size_t)len) == 0) {
        free(heap);
        copy_psi(out, r->psi_parsed);
        out->psi_same = 1;
        return 0;
    }
    rc = pyoomd_parse_psi(buf, (size_t)len, out);
    if (rc == 0 && len <= PSI_KEEP) {
        memcpy(r->psi_bytes, buf, (size_t)len);
        r->psi_len = len;
        copy_psi(r->psi_parsed, out);
    } else {
        r->psi_len = -1;
    }
    free(heap);
    return rc;
}

#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0 /* linux/magic.h */
#endif

struct pyoomd_reader *pyoomd_open(const char *meminfo_path, const char *psi_path, int *err)
{
    struct pyoomd_reader *r = calloc(1, sizeof(*r));
    struct statfs fs;
    if (r) {
        r->hint = calloc(1, sizeof(*r->hint));
        r->psi_parsed = calloc(1, sizeof(*r->psi_parsed));
    }
    if (!r || !r->hint || !r->psi_parsed) {
        if (r) {
            free(r->hint);
            free(r->psi_parsed);
        }
        free(r);
        *err = -ENOMEM;
        return NULL;
    }
    r->meminfo_fd = open(meminfo_path, O_RDONLY | O_CLOEXEC);
    if (r->meminfo_fd < 0) {
        *err = -errno;
        free(r->hint);
        free(r->psi_parsed);
        free(r);
        return NULL;
    }
    /* The fast path relies on the kernel's fixed line order: never for a
     * regular file (a test fixture), whatever it holds. */
    r->hinted = fstatfs(r->meminfo_fd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
    /* No PSI (kernel < 4.20, CONFIG_PSI=n, psi=0) is normal: has_psi = 0. */
    r->psi_fd = psi_path ? open(psi_path, O_RDONLY | O_CLOEXEC) : -1;
    r->psi_len = -1;
    *err = 0;
    return r;
}

int pyoomd_has_psi(const struct pyoomd_reader *r)
{
    return r->psi_fd >= 0;
}

int pyoomd_read(struct pyoomd_reader *r, struct pyoomd_sample *out)
{
    int rc = read_meminfo(r, out);
    if (rc < 0)
        return rc;
    out->has_psi = r->psi_fd >= 0;
    out->has_full = 0;
    out->psi_same = 0;
    if (!out->has_psi)
        return 0;
    return read_psi(r, out);
}

void pyoomd_close(struct pyoomd_reader *r)
{
    if (!r)
        return;
    close(r->meminfo_fd);
    if (r->psi_fd >= 0)
        close(r->psi_fd);
    free(r->hint);
    free(r->psi_parsed);
    free(r);
}

/* ---- The idle wait ---------------------------------------------------------
 *
 * While memory is plentiful the daemon has nothing to do but sample: above
 * the gate (the WARN level) no kill, no PSI rule and no growth following can
 * start.  A Python tick after a second asleep costs ~280 us of CPU (cold
 * caches), a read and parse here a few us, so this loop samples in C and
 * returns to Python only when there is something to judge:
 *
 *   GATE      MemAvailable <= gate (out holds that sample);
 *   DEADLINE  timeout_s passed (housekeeping: watchdog pings, STATUS, gauges);
 *   PSI       psi_fd reported POLLPRI (or POLLERR/POLLNVAL: see revents);
 *   WAKE      wake_fd is readable (Python's signal wakeup fd: a handler ran);
 *   SIGNAL    a signal interrupted the sleep (EINTR), so handlers run now.
 *
 * The sleep between samples is the daemon's rule with the gate in place of
 * the TERM level: (MemAvailable - gate) / rate, clamped to
 * [min_interval_s, max_interval_s], where rate = min(max(safety * measured,
 * min_rate), max_rate) and measured is the fastest decline seen between
 * samples at least rate_step_s apart within the last rate_window_s (seeded
 * with the caller's own measurement).  On every return but GATE the sample
 * is read afresh; out is always a whole sample, as pyoomd_read gives.
 */
enum { IDLE_GATE = 1, IDLE_DEADLINE = 2, IDLE_PSI = 3, IDLE_WAKE = 4, IDLE_SIGNAL = 5 };

struct pyoomd_idle {
    /* in */
    long long gate_kib;
    double first_sleep_s; /* before the first sample (the caller just took one) */
    double timeout_s;     /* return after this long at most */
    double min_interval_s, max_interval_s;
    double min_rate_kib_s, max_rate_kib_s;
    double rate_kib_s; /* the caller's measured decline, KiB/s (0: none) */
    double rate_safety, rate_step_s, rate_window_s;
    int psi_fd;  /* -1: none; polled for POLLPRI */
    int wake_fd; /* -1: none; polled for POLLIN */
    /* out */
    int reason;
    int revents;        /* psi_fd's revents when reason is PSI */
    int samples;        /* meminfo reads in here, the returned one included */
    double prev_age_s;  /* how much older the sample before the returned one is (< 0: none) */
    long long prev_available_kib;
    /* systemd's watchdog, pinged from here while we idle: a connected
     * datagram socket to $NOTIFY_SOCKET (-1: none), how often, when last
     * (CLOCK_MONOTONIC s, in/out), and how many pings this call sent. */
    int notify_fd;
    double notify_every_s;
    double notify_last_s;
    int pings;
};

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Sleep up to dur_s on the fds.  Returns 0 (timeout) or an IDLE_ reason. */
static int idle_sleep(struct pyoomd_idle *w, double dur_s)
{
    struct pollfd fds[2];
    nfds_t n = 0;
    int psi_i = -1, wake_i = -1;
    struct timespec ts;
    int rc;
    if (dur_s < 0)
        dur_s = 0;
    ts.tv_sec = (time_t)dur_s;
    ts.tv_nsec = (long)((dur_s - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec = 999999999L;
    if (w->psi_fd >= 0) {
        fds[n].fd = w->psi_fd, fds[n].events = POLLPRI, fds[n].revents = 0;
        psi_i = (int)n++;
    }
    if (w->wake_fd >= 0) {
        fds[n].fd = w->wake_fd, fds[n].events = POLLIN, fds[n].revents = 0;
        wake_i = (int)n++;
    }
    rc = ppoll(n ? fds : NULL, n, &ts, NULL);
    if (rc < 0)
        return errno == EINTR ? IDLE_SIGNAL : -errno;
    if (rc == 0)
        return 0;
    if (wake_i >= 0 && fds[wake_i].revents)
        return IDLE_WAKE;
    if (psi_i >= 0 && fds[psi_i].revents) {
        w->revents = fds[psi_i].revents;
        return IDLE_PSI;
    }
    return 0;
}

/* The sleep before the next idle sample: pyoomd/interval.py's
 * next_interval_s with the gate in place of TERM (tests/test_interval.py
 * holds the two to the same results). */
double pyoomd_idle_interval(const struct pyoomd_idle *w, long long avail_kib, double peak_kib_s)
{
    double rate = peak_kib_s * w->rate_safety, t;
    if (rate < w->min_rate_kib_s)
        rate = w->min_rate_kib_s;
    if (rate > w->max_rate_kib_s)
        rate = w->max_rate_kib_s;
    t = (double)(avail_kib - w->gate_kib) / rate;
    return t < w->min_interval_s ? w->min_interval_s : t > w->max_interval_s ? w->max_interval_s : t;
}

/* The measured rate: pyoomd/interval.py's PeakRate (anchor_t < 0: no
 * anchor yet).  Slopes over at least rate_step_s; the fastest within the
 * window. */
struct pyoomd_rate {
    double peak, peak_t, anchor_t;
    long long anchor_avail;
};

double pyoomd_idle_track(const struct pyoomd_idle *w, struct pyoomd_rate *s, double now, long long avail_kib)
{
    if (s->anchor_t < 0 || now - s->anchor_t > w->rate_window_s) {
        s->anchor_t = now, s->anchor_avail = avail_kib;
    } else if (now - s->anchor_t >= w->rate_step_s) {
        double slope = (double)(s->anchor_avail - avail_kib) / (now - s->anchor_t);
        if (slope >= s->peak || now - s->peak_t > w->rate_window_s)
            s->peak = slope > 0 ? slope : 0, s->peak_t = now;
        s->anchor_t = now, s->anchor_avail = avail_kib;
    }
    if (now - s->peak_t > w->rate_window_s)
        s->peak = 0;
    return s->peak;
}

int pyoomd_idle_wait(struct pyoomd_reader *r, struct pyoomd_idle *w, struct pyoomd_sample *out)
{
    double start = mono_s(), deadline = start + w->timeout_s, sleep_s = w->first_sleep_s;
    double prev_t = -1;
    struct pyoomd_rate rate = { w->rate_kib_s > 0 ? w->rate_kib_s : 0, start, -1, 0 };
    long long prev_avail = 0;
    int rc, reason = 0;

    w->reason = 0, w->revents = 0, w->samples = 0, w->pings = 0;
    w->prev_age_s = -1, w->prev_available_kib = 0;
    for (;;) {
        double now = mono_s(), left = deadline - now, peak;
        reason = idle_sleep(w, sleep_s < left ? sleep_s : left);
        if (reason < 0)
            return reason;
        if (reason)
            break;
        now = mono_s();
        rc = read_meminfo(r, out);
        if (rc < 0)
            return rc;
        w->samples++;
        /* A sample read is the loop alive: the watchdog may hear of it.  (At
         * most max_interval_s late: the longest sleep between samples.) */
        if (w->notify_fd >= 0 && now - w->notify_last_s >= w->notify_every_s
                && send(w->notify_fd, "WATCHDOG=1", 10, MSG_DONTWAIT | MSG_NOSIGNAL) == 10)
            w->notify_last_s = now, w->pings++;
        if (prev_t >= 0) {
            w->prev_age_s = now - prev_t;
            w->prev_available_kib = prev_avail;
        }
        if (out->mem_available <= w->gate_kib) {
            reason = IDLE_GATE;
            break;
        }
        peak = pyoomd_idle_track(w, &rate, now, out->mem_available);
        if (now >= deadline - 1e-4) {
            reason = IDLE_DEADLINE;
            break;
        }
        prev_t = now, prev_avail = out->mem_available;
        sleep_s = pyoomd_idle_interval(w, out->mem_available, peak);
    }
    w->reason = reason;
    if (reason == IDLE_GATE || reason == IDLE_DEADLINE) {
        /* out holds this moment's meminfo: add PSI, as pyoomd_read does. */
        out->has_psi = r->psi_fd >= 0;
        out->has_full = 0;
        out->psi_same = 0;
        return out->has_psi ? read_psi(r, out) : 0;
    }
    /* Woken: a fresh whole sample; the last one read in here is the one before. */
    if (prev_t >= 0) {
        double now = mono_s();
        w->prev_age_s = now - prev_t;
        w->prev_available_kib = prev_avail;
    }
    rc = pyoomd_read(r, out);
    if (rc == 0)
        w->samples++;
    return rc;
}
