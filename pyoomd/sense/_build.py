"""cffi build script for ``pyoomd.sense._reader`` (API mode).

Run by setuptools through ``cffi_modules`` in setup.py.  It imports cffi
only, never pyoomd: the package is not importable while it is being built.
"""

from __future__ import annotations

import os

from cffi import FFI

# The C source lives next to this file (cffi runs this script with __file__
# set).  Relative to the project root, where setuptools runs, as it requires.
_SOURCE_DIR = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))

# Must match _reader.c: cffi checks the layout when it compiles the module.
CDEF = """
struct pyoomd_sample {
    long long mem_total, mem_available, swap_total, swap_free;
    long long mem_free, active_file, inactive_file, sreclaimable;
    int has_available;
    int has_psi;
    int has_full;
    int psi_same;
    double some10, some60, some300, full10, full60, full300;
    unsigned long long some_total, full_total;
};
struct pyoomd_reader;

struct pyoomd_reader *pyoomd_open(const char *meminfo_path, const char *psi_path, int *err);
int pyoomd_has_psi(const struct pyoomd_reader *r);
int pyoomd_read(struct pyoomd_reader *r, struct pyoomd_sample *out);
void pyoomd_close(struct pyoomd_reader *r);
int pyoomd_parse_meminfo(const char *buf, size_t len, struct pyoomd_sample *out);
int pyoomd_parse_psi(const char *buf, size_t len, struct pyoomd_sample *out);
/* The fast path over a remembered layout (tests compare it with the full scan). */
struct pyoomd_meminfo_hint {
    int valid;
    int off[8];
};
int pyoomd_parse_meminfo_hinted(const char *buf, size_t len, struct pyoomd_meminfo_hint *h,
                                struct pyoomd_sample *out);

struct pyoomd_idle {
    long long gate_kib;
    double first_sleep_s;
    double timeout_s;
    double min_interval_s, max_interval_s;
    double min_rate_kib_s, max_rate_kib_s;
    double rate_kib_s;
    double rate_safety, rate_step_s, rate_window_s;
    int psi_fd;
    int wake_fd;
    int reason;
    int revents;
    int samples;
    double prev_age_s;
    long long prev_available_kib;
    int notify_fd;
    double notify_every_s;
    double notify_last_s;
    int pings;
};
/* Samples in C while MemAvailable > gate_kib; called with the GIL released
   (cffi's default in API mode), so other threads run meanwhile. */
int pyoomd_idle_wait(struct pyoomd_reader *r, struct pyoomd_idle *w, struct pyoomd_sample *out);
/* The idle wait's rule (pyoomd/interval.py's PeakRate and next_interval_s;
   tests/test_interval.py holds the two together). */
struct pyoomd_rate {
    double peak, peak_t, anchor_t;
    long long anchor_avail;
};
double pyoomd_idle_track(const struct pyoomd_idle *w, struct pyoomd_rate *s, double now, long long avail_kib);
double pyoomd_idle_interval(const struct pyoomd_idle *w, long long avail_kib, double peak_kib_s);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "pyoomd.sense._reader",
    # One translation unit: cffi checks CDEF against the real struct in _reader.c.
    '#include "_reader.c"',
    include_dirs=[_SOURCE_DIR],
    # Listed so that setuptools ships _reader.c in the sdist and rebuilds on change.
    depends=[os.path.join(_SOURCE_DIR, "_reader.c")],
    # -O2: the hot path; gnu99 for declarations after statements.
    extra_compile_args=["-O2", "-std=gnu99", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
