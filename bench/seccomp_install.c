/*
 * seccomp_install: what installing one seccomp program costs, by its length. Until fef96fa
 * every CGI's process installed a filter of its own between clone and exec (refusing setsid
 * and setpgid, to keep it in the process group the worker killed); the kernel checks,
 * converts and JITs each program and emulates it once for each system call number (its action
 * cache). This measured the hand-assembled program that replaced seccompiler's, and then why
 * no program at all (a kill by the CGI's id instead, worker/src/kill.rs) was worth more: a
 * lone "allow" still costs most of it (bench/MISSES.md).
 *
 * After one filter of its own (as the worker's filters come first), it forks 2,000 children a
 * round, each timing one seccomp(SET_MODE_FILTER) of: seccompiler's program for the CGIs' five
 * denied calls (30 instructions), the same assembled by hand (11), and a lone "allow" (1).
 *
 * usage: gcc -O2 -o seccomp_install bench/seccomp_install.c && ./seccomp_install
 * prints per round: the mean µs of each install
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ARCH {0x20, 0, 0, 4}, {0x15, 1, 0, 0xc000003e}, {0x6, 0, 0, 0x80000000}
#define LOAD_NR {0x20, 0, 0, 0}
#define ALLOW {0x6, 0, 0, 0x7fff0000}
#define EPERM_ {0x6, 0, 0, 0x50001}
/* seccompiler's: each call is a comparison, two jumps and two returns. */
#define SECCOMPILER_CALL(nr) {0x15, 0, 1, nr}, {0x5, 0, 0, 1}, {0x5, 0, 0, 2}, EPERM_, ALLOW

static struct sock_filter seccompiler_program[] = {
    ARCH, LOAD_NR, SECCOMPILER_CALL(109), SECCOMPILER_CALL(112), SECCOMPILER_CALL(165),
    SECCOMPILER_CALL(272), SECCOMPILER_CALL(308), ALLOW};
static struct sock_filter assembled_program[] = {
    ARCH, LOAD_NR, {0x15, 5, 0, 109}, {0x15, 4, 0, 112}, {0x15, 3, 0, 165}, {0x15, 2, 0, 272},
    {0x15, 1, 0, 308}, ALLOW, EPERM_};
static struct sock_filter allow_program[] = {ALLOW};

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* Mean µs of one install of `program` in a fresh child, over `children` children. */
static double install_cost(struct sock_filter *program, unsigned short length, int children) {
    struct sock_fprog fprog = {.len = length, .filter = program};
    int times[2];
    if (pipe(times) == -1) return -1;
    double total = 0;
    for (int i = 0; i < children; i++) {
        pid_t child = fork();
        if (child == 0) {
            double start = now_us();
            if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) _exit(1);
            double took = now_us() - start;
            if (write(times[1], &took, sizeof took) != sizeof took) _exit(1);
            _exit(0);
        }
        double took = 0;
        if (child == -1 || read(times[0], &took, sizeof took) != sizeof took) return -1;
        total += took;
        waitpid(child, NULL, 0);
    }
    close(times[0]);
    close(times[1]);
    return total / children;
}

int main(void) {
    struct sock_filter first[] = {ARCH, ALLOW};
    struct sock_fprog first_program = {.len = 4, .filter = first};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &first_program) != 0) {
        perror("seccomp");
        return 1;
    }
    for (int round = 1; round <= 5; round++)
        printf("round %d: seccompiler's 30 instructions %.1f us, assembled 11: %.1f us, "
               "1: %.1f us\n",
               round, install_cost(seccompiler_program, 30, 2000),
               install_cost(assembled_program, 11, 2000), install_cost(allow_program, 1, 2000));
    return 0;
}
