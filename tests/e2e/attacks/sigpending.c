/* The kernel's count of queued signals, which it keeps for a CGI's id and again for the owner
 * of the worker's user namespace (the workers' account, shared by every CGI of every worker).
 *
 *   ?hold=S    blocks SIGRTMIN and queues it to itself until the kernel refuses
 *              (`queued=N`, `stop=ENAME`), prints `armed`, then holds them S seconds
 *   (no query) queues one signal (`sigqueue=ok|ENAME`) and makes a timer that signals
 *              (`timer_create=ok|ENAME`): what a request beside the first may still do
 *
 * Were the owner's count a limit, one CGI holding every signal it may queue would leave none
 * to the others. */
#include "report.h"

#include <signal.h>
#include <time.h>

int main(void) {
    cgi_header();
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &rt, NULL);
    union sigval value = {0};
    long hold = query_long("hold", 0);
    if (hold > 0) {
        long queued = 0;
        while (queued < 10000000 && sigqueue(getpid(), SIGRTMIN, value) == 0)
            queued++;
        printf("queued=%ld\nstop=%s\narmed\n", queued, errno_name(errno));
        sleep((unsigned)hold);
    } else {
        report("sigqueue", sigqueue(getpid(), SIGRTMIN, value));
        struct sigevent event = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN};
        timer_t timer;
        report("timer_create", timer_create(CLOCK_MONOTONIC, &event, &timer));
    }
    printf("done\n");
    return 0;
}
