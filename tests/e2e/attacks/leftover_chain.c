/* A CGI that leaves a chain of processes behind: its child leaves the CGI's process group
 * (setpgid), and forks the next, which forks the next, `depth` in all (query `depth=N`, default
 * 4, at most 64), each holding the CGI's stdin, stdout and stderr while it sleeps. The main
 * process answers at once and exits. When it ends only the first of the chain is a child of
 * the worker (orphans go to the PID namespace's init); each of the others becomes one only
 * when the one before it dies. The response must still end at once, and none of the chain may
 * outlive the request. Prints `setpgid=ok` (or the errno name) from the first of the chain,
 * then `chain=N` once the whole chain runs, then `done`. */
#include "report.h"

#include <sys/wait.h>

int main(void) {
    cgi_header();
    long depth = query_long("depth", 4);
    if (depth < 1 || depth > 64) {
        depth = 4;
    }
    int ready[2];
    if (pipe(ready) == -1) {
        printf("pipe=%s\n", errno_name(errno));
        return 1;
    }
    pid_t first = fork();
    if (first == 0) {
        close(ready[0]);
        report("setpgid", setpgid(0, 0));
        /* Each link forks the next, then lets go of the pipe that tells the main process the
         * chain is whole; the last lets go without forking. */
        for (long link = 1; link < depth; link++) {
            pid_t next = fork();
            if (next == -1) {
                printf("fork=%s\n", errno_name(errno));
                break;
            }
            if (next != 0) {
                break;
            }
        }
        close(ready[1]);
        /* Holds fds 0, 1 and 2 for 100 s unless it is killed. */
        sleep(100);
        _exit(0);
    }
    close(ready[1]);
    /* EOF once every link has let go of its copy of the write end. */
    char byte;
    while (read(ready[0], &byte, 1) > 0) {
    }
    printf("chain=%ld\n", depth);
    puts("done");
    return 0;
}
