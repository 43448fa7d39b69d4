/* A CGI that leaves behind a chain of processes that renews itself. Its child leaves the CGI's
 * process group (setpgid) and lets go of the CGI's stdin, stdout and stderr; from there each
 * process forks the next and waits, and the newest keeps forking, so the chain grows until the
 * CGI's RLIMIT_NPROC stops it, and whenever one link dies (and is reaped) one more grows at the
 * far end. A kill of only the processes that are the worker's children (the first link, then
 * the next once the one before is reaped) would chase it for ever: the whole chain must still be
 * gone a moment after the request. Prints `setpgid=ok` (or the errno name), then `chain=N` once
 * N links run (query `depth=N`, default 8, 2 to 32), then `done`. */
#include "report.h"

#include <fcntl.h>

static long depth;
static long link_number = 1;
/* The write end of the pipe the main process waits on; -1 once this link has let go of it. */
static int ready = -1;

static void let_go(void) {
    if (ready != -1) {
        close(ready);
        ready = -1;
    }
}

/* Forks the next link, again and again while the process limit refuses. Returns in the child,
 * the new far end; the parent waits to be killed. */
static void fork_next(void) {
    for (;;) {
        pid_t next = fork();
        if (next == 0) {
            link_number++;
            /* The `depth`th link lets go at once, the others once they have forked. */
            if (link_number == depth) {
                let_go();
            }
            return;
        }
        if (next > 0) {
            let_go();
            for (;;) {
                pause();
            }
        }
        usleep(1000);
    }
}


int main(void) {
    cgi_header();
    depth = query_long("depth", 8);
    if (depth < 2 || depth > 32) {
        depth = 8;
    }
    int pipe_ends[2];
    if (pipe(pipe_ends) == -1) {
        printf("pipe=%s\n", errno_name(errno));
        return 1;
    }
    pid_t first = fork();
    if (first == 0) {
        close(pipe_ends[0]);
        ready = pipe_ends[1];
        report("setpgid", setpgid(0, 0));
        int null = open("/dev/null", O_RDWR);
        if (null == -1 || dup2(null, 0) == -1 || dup2(null, 1) == -1 || dup2(null, 2) == -1) {
            _exit(1);
        }
        /* Each link forks the next; the new one goes on from here. */
        for (;;) {
            fork_next();
        }
    }
    close(pipe_ends[1]);
    /* EOF once the first `depth` links have let go of their copies of the write end. */
    char byte;
    while (read(pipe_ends[0], &byte, 1) > 0) {
    }
    printf("chain=%ld\n", depth);
    puts("done");
    return 0;
}
