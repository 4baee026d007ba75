/* The hot path of pyoomd: read /proc/meminfo and /proc/pressure/memory over
 * kept-open file descriptors and parse them in one pass, without sscanf.
 *
 * The grammar is the one documented at the top of parse.py, and the results
 * (including the MemAvailable estimate and the invariant checks) must be the
 * same as parse.py's: tests/test_readers.py and test_parse_fuzz.py compare
 * the two on fixtures and on random bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pyoomd_sample {
    long long mem_total, mem_available, swap_total, swap_free;
    long long mem_free, active_file, inactive_file, sreclaimable;
    int has_available; /* 0: mem_available is the pre-3.14 estimate */
    int has_psi;
    int has_full;
    double some10, some60, some300, full10, full60, full300;
    unsigned long long some_total, full_total;
};

struct pyoomd_reader {
    int meminfo_fd;
    int psi_fd; /* -1 when the kernel has no PSI */
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

/* Which meminfo keys were seen: bits of a mask. */
enum { SEEN_TOTAL = 1, SEEN_FREE = 2, SEEN_AVAIL = 4, SEEN_SWAP_TOTAL = 8, SEEN_SWAP_FREE = 16 };

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

#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, sizeof(lit) - 1) == 0)

/* The slot of a meminfo key we use, or NULL; sets the seen bit. */
static long long *meminfo_slot(const char *key, size_t klen, struct pyoomd_sample *s, int *seen)
{
    switch (key[0]) {
    case 'M':
        if (KEY_IS("MemTotal")) { *seen |= SEEN_TOTAL; return &s->mem_total; }
        if (KEY_IS("MemFree")) { *seen |= SEEN_FREE; return &s->mem_free; }
        if (KEY_IS("MemAvailable")) { *seen |= SEEN_AVAIL; return &s->mem_available; }
        break;
    case 'S':
        if (KEY_IS("SwapTotal")) { *seen |= SEEN_SWAP_TOTAL; return &s->swap_total; }
        if (KEY_IS("SwapFree")) { *seen |= SEEN_SWAP_FREE; return &s->swap_free; }
        if (KEY_IS("SReclaimable")) return &s->sreclaimable;
        break;
    case 'A':
        if (KEY_IS("Active(file)")) return &s->active_file;
        break;
    case 'I':
        if (KEY_IS("Inactive(file)")) return &s->inactive_file;
        break;
    }
    return NULL;
}

/* Estimate and invariants, as parse.py's parse_meminfo. */
static int meminfo_finish(struct pyoomd_sample *s, int seen)
{
    if (!(seen & SEEN_TOTAL))
        return -EINVAL;
    s->has_available = (seen & SEEN_AVAIL) != 0;
    if (!s->has_available) {
        /* Pre-3.14 kernels: upper-bound estimate, see estimate_available_kib(). */
        if (!(seen & SEEN_FREE))
            return -EINVAL;
        s->mem_available = s->mem_free + s->active_file + s->inactive_file + s->sreclaimable;
    }
    if (s->mem_available > s->mem_total || s->swap_free > s->swap_total)
        return -EINVAL;
    return 0;
}

int pyoomd_parse_meminfo(const char *buf, size_t len, struct pyoomd_sample *s)
{
    const char *p = buf, *end = buf + len;
    int seen = 0;

    s->mem_total = s->mem_available = s->swap_total = s->swap_free = 0;
    s->mem_free = s->active_file = s->inactive_file = s->sreclaimable = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *colon;
        long long *slot;
        if (!eol)
            eol = end;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon && colon > p) {
            slot = meminfo_slot(p, (size_t)(colon - p), s, &seen);
            if (slot && parse_kib(colon + 1, eol, slot) < 0)
                return -EINVAL;
        }
        p = eol + 1;
    }
    return meminfo_finish(s, seen);
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

/* Read one file and run parse on it. */
static int read_parse(int fd, int (*parse)(const char *, size_t, struct pyoomd_sample *),
                      struct pyoomd_sample *out)
{
    char stack[STACK_BUF];
    char *heap;
    long len = read_whole(fd, stack, &heap);
    int rc;
    if (len < 0)
        return (int)len;
    rc = parse(heap ? heap : stack, (size_t)len, out);
    free(heap);
    return rc;
}

struct pyoomd_reader *pyoomd_open(const char *meminfo_path, const char *psi_path, int *err)
{
    struct pyoomd_reader *r = malloc(sizeof(*r));
    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    r->meminfo_fd = open(meminfo_path, O_RDONLY | O_CLOEXEC);
    if (r->meminfo_fd < 0) {
        *err = -errno;
        free(r);
        return NULL;
    }
    /* No PSI (kernel < 4.20, CONFIG_PSI=n, psi=0) is normal: has_psi = 0. */
    r->psi_fd = psi_path ? open(psi_path, O_RDONLY | O_CLOEXEC) : -1;
    *err = 0;
    return r;
}

int pyoomd_has_psi(const struct pyoomd_reader *r)
{
    return r->psi_fd >= 0;
}

int pyoomd_read(struct pyoomd_reader *r, struct pyoomd_sample *out)
{
    int rc = read_parse(r->meminfo_fd, pyoomd_parse_meminfo, out);
    if (rc < 0)
        return rc;
    out->has_psi = r->psi_fd >= 0;
    out->has_full = 0;
    if (!out->has_psi)
        return 0;
    return read_parse(r->psi_fd, pyoomd_parse_psi, out);
}

void pyoomd_close(struct pyoomd_reader *r)
{
    if (!r)
        return;
    close(r->meminfo_fd);
    if (r->psi_fd >= 0)
        close(r->psi_fd);
    free(r);
}
