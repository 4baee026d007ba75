/* N idle processes: forks N children that pause() until killed; prints
 * "ready <n>" once all exist, then pauses.  Children die with the namespace
 * (or with this parent: PR_SET_PDEATHSIG). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    if (n < 0 || n > 20000) { fprintf(stderr, "crowd: 0..20000\n"); return 2; }
    long made = 0;
    for (; made < n; made++) {
        pid_t p = fork();
        if (p < 0) break;
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;) pause();
        }
    }
    printf("ready %ld\n", made);
    fflush(stdout);
    for (;;) pause();
}
