/* A memory bomb: allocates and touches 16 MiB at a time until malloc fails, which the
 * address-space limit (RLIMIT_AS, --limit-memory) must make happen. Stops by itself at
 * 2 GiB so that a missing limit fails the test instead of the machine. Then says `armed`,
 * holds the memory for `?hold=SECS` (default 3), and exits. */
#include "report.h"

#define STEP (16L * 1024 * 1024)
#define SELF_CAP (2048L * 1024 * 1024)

int main(void) {
    cgi_header();
    long hold = query_long("hold", 3);
    long total = 0;
    const char *outcome = "capped";
    while (total < SELF_CAP) {
        char *block = malloc(STEP);
        if (block == NULL) {
            outcome = errno_name(errno);
            break;
        }
        memset(block, 0x5a, STEP);
        total += STEP;
    }
    printf("malloc=%s\ntouched_mib=%ld\narmed\n", outcome, total / (1024 * 1024));
    sleep((unsigned)hold);
    printf("done\n");
    return 0;
}
