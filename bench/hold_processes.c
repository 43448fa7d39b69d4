/*
 * hold_processes: N idle processes, so that a benchmark meets a host with many of them (a
 * kill(-1) walks every process of the host; a kill by pid does not).
 *
 * usage: hold_processes N SECONDS
 * Forks N children that sleep; prints "held N" once all are forked. Each child ends by itself
 * after SECONDS (SIGALRM), so none outlives a benchmark that is killed; SIGTERM to this
 * process kills them all at once, by their pids, and reaps them before it exits.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    if (argc != 3 || atoi(argv[1]) < 1 || atoi(argv[2]) < 1) {
        fprintf(stderr, "usage: hold_processes N SECONDS\n");
        return 2;
    }
    int n = atoi(argv[1]), seconds = atoi(argv[2]);
    pid_t *children = calloc((size_t)n, sizeof *children);
    if (!children) {
        perror("calloc");
        return 1;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_term; /* no SA_RESTART: wait() returns on SIGTERM */
    sigaction(SIGTERM, &action, NULL);
    int held = 0;
    for (; held < n && !stop; held++) {
        pid_t pid = fork();
        if (pid == -1) {
            perror("fork");
            break;
        }
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            alarm((unsigned)seconds);
            for (;;)
                pause();
        }
        children[held] = pid;
    }
    printf("held %d\n", held);
    fflush(stdout);
    int left = held;
    while (left > 0 && !stop) {
        if (wait(NULL) > 0)
            left--;
    }
    for (int i = 0; i < held; i++)
        kill(children[i], SIGKILL);
    while (wait(NULL) > 0) {
    }
    return 0;
}
