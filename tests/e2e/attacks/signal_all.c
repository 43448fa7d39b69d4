/* Signals everything it can reach, for `?seconds=N` (default 3): every millisecond or so
 * kill(N, SIG) given `?pid=N` (a CGI of another request: its pid in this namespace),
 * kill(-1, SIG) (every process it may signal in its PID namespace but itself and the
 * namespace's init) and kill(1, SIG) (the worker, that init). SIG is `?sig=N` (default 9).
 *
 * Reports the first outcome of each (`kill_victim`, `kill_all`, `kill_worker`), how many
 * calls of each succeeded (`kill_all_ok`, ...), and, before the loop, how many pids of the
 * namespace answer kill(PID, 0), itself and pid 1 left out: `visible` (the process exists: ok
 * or EPERM) and `signalable` (ok; the first few in `signalable_pids`). kill(-1) alone cannot
 * tell: the kernel answers 0 once it found any process, even if every one refused (EPERM). */
#include "report.h"

#include <signal.h>
#include <time.h>

/* Pids of a fresh PID namespace start at 1 and are handed out in order: a gateway of a test
 * never gets near this many. */
#define SCAN_PIDS 65536

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void scan(void) {
    pid_t self = getpid();
    long visible = 0, signalable = 0;
    char pids[256] = "";
    for (pid_t pid = 2; pid < SCAN_PIDS; pid++) {
        if (pid == self) {
            continue;
        }
        if (kill(pid, 0) == 0) {
            visible++;
            signalable++;
            if (strlen(pids) < sizeof pids - 16) {
                snprintf(pids + strlen(pids), sizeof pids - strlen(pids), "%s%d",
                         pids[0] ? "," : "", (int)pid);
            }
        } else if (errno == EPERM) {
            visible++;
        }
    }
    printf("visible=%ld\nsignalable=%ld\nsignalable_pids=%s\n", visible, signalable, pids);
}

int main(void) {
    cgi_header();
    int sig = (int)query_long("sig", SIGKILL);
    long seconds = query_long("seconds", 3);
    pid_t victim = (pid_t)query_long("pid", 0);
    printf("self=%d\nsig=%d\n", (int)getpid(), sig);
    scan();

    long rounds = 0, all_ok = 0, worker_ok = 0, victim_ok = 0;
    const struct timespec pause = {0, 1000 * 1000};
    double end = now() + (double)seconds;
    while (now() < end) {
        /* The victim first: after a kill(-1, SIGKILL) that reached it, it would be gone. */
        long at_victim = victim > 0 ? kill(victim, sig) : 0;
        int victim_errno = errno;
        long all = kill(-1, sig);
        int all_errno = errno;
        long worker = kill(1, sig);
        int worker_errno = errno;
        if (rounds == 0) {
            errno = all_errno;
            report("kill_all", all);
            errno = worker_errno;
            report("kill_worker", worker);
            if (victim > 0) {
                errno = victim_errno;
                report("kill_victim", at_victim);
            }
        }
        rounds++;
        all_ok += all == 0;
        worker_ok += worker == 0;
        victim_ok += victim > 0 && at_victim == 0;
        nanosleep(&pause, NULL);
    }
    printf("rounds=%ld\nkill_all_ok=%ld\nkill_worker_ok=%ld\nkill_victim_ok=%ld\n", rounds,
           all_ok, worker_ok, victim_ok);
    printf("survived=yes\n");
    return 0;
}
