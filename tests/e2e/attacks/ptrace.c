/* Attaches with ptrace to the worker (pid 1 of the CGI's PID namespace) and, given
 * `?pid=N`, to another CGI. Reports each outcome; detaches from anything it got. */
#include "report.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

static void attach(const char *what, pid_t pid) {
    if (report(what, ptrace(PTRACE_ATTACH, pid, NULL, NULL)) == 0) {
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
    }
}

int main(void) {
    cgi_header();
    printf("self=%d\n", (int)getpid());
    attach("attach_worker", 1);
    long sibling = query_long("pid", 0);
    if (sibling > 0) {
        attach("attach_sibling", (pid_t)sibling);
    }
    printf("done\n");
    return 0;
}
