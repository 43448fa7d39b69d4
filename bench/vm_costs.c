/*
 * vm_costs: what a system call, a pipe and a wake-up cost on this machine, the unit prices
 * behind bench/MISSES.md's account of one request at c=1.
 *
 * Prints, in ns: one getppid() (a system call that does nothing); one pipe made the way the
 * front makes a CGI's (pipe2, fchmod, both ends closed); and one round trip between two
 * processes through two pipes (two sleeps, two wake-ups, four system calls). Run it as it is
 * (the scheduler places the two processes) and under `taskset -c 0` (one vCPU): the
 * difference is what waking a task on the other vCPU costs.
 *
 * usage: gcc -O2 -o vm_costs bench/vm_costs.c && ./vm_costs && taskset -c 0 ./vm_costs
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(void)
{
    enum { CALLS = 200000, PIPES = 20000, TRIPS = 50000 };
    double start = now_ns();
    for (int i = 0; i < CALLS; i++)
        syscall(SYS_getppid);
    double call = (now_ns() - start) / CALLS;

    start = now_ns();
    for (int i = 0; i < PIPES; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) == -1 || fchmod(p[1], 0222) == -1) {
            perror("pipe");
            return 1;
        }
        close(p[0]);
        close(p[1]);
    }
    double pipe_made = (now_ns() - start) / PIPES;

    int there[2], back[2];
    if (pipe(there) == -1 || pipe(back) == -1) {
        perror("pipe");
        return 1;
    }
    char byte = 0;
    pid_t child = fork();
    if (child == -1) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        for (int i = 0; i < TRIPS; i++)
            if (read(there[0], &byte, 1) != 1 || write(back[1], &byte, 1) != 1)
                _exit(1);
        _exit(0);
    }
    start = now_ns();
    for (int i = 0; i < TRIPS; i++)
        if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1) {
            perror("round trip");
            return 1;
        }
    double trip = (now_ns() - start) / TRIPS;
    waitpid(child, NULL, 0);

    printf("system call %.0f ns; pipe made and closed %.0f ns; round trip between two processes %.0f ns\n",
           call, pipe_made, trip);
    return 0;
}
