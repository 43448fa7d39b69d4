/* A fork bomb: every process forks for as long as fork succeeds, then sleeps. The process
 * count of the CGI user (RLIMIT_NPROC) must stop it with EAGAIN. The first process reports,
 * says `armed`, keeps trying to fork for `?hold=SECS` (default 3) while the bomb stands, then
 * exits: the worker then kills the whole process group. A shared counter stops the bomb at
 * 4096 processes, reported as `fork=capped`, so that a missing limit fails the test instead
 * of the machine. */
#include "report.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

int main(void) {
    cgi_header();
    pid_t leader = getpid();
    long hold = query_long("hold", 3);
    long forked = 0;
    int error = 0;
    long *processes = mmap(NULL, sizeof *processes, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (processes == MAP_FAILED) {
        printf("mmap=%s\n", errno_name(errno));
        return 1;
    }
    for (;;) {
        if (__atomic_add_fetch(processes, 1, __ATOMIC_SEQ_CST) > 4096) {
            error = -1;
            break;
        }
        pid_t pid = fork();
        if (pid < 0) {
            error = errno;
            break;
        }
        if (pid > 0 && getpid() == leader) {
            forked++;
        }
        /* The child goes round the loop too: each process forks until it cannot. */
    }
    if (getpid() != leader) {
        for (;;) {
            pause();
        }
    }
    printf("fork=%s\nforked=%ld\narmed\n", error == -1 ? "capped" : errno_name(error), forked);
    long later_ok = 0, later_tries = 0;
    struct timespec tick = {0, 200 * 1000 * 1000};
    for (long i = 0; i < hold * 5; i++) {
        pid_t pid = fork();
        later_tries++;
        if (pid == 0) {
            _exit(0);
        }
        if (pid > 0) {
            later_ok++;
            waitpid(pid, NULL, 0);
        }
        nanosleep(&tick, NULL);
    }
    printf("later_forks_ok=%ld/%ld\ndone\n", later_ok, later_tries);
    return 0;
}
