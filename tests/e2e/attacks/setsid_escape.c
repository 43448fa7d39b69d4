/* A CGI whose grandchild leaves the CGI's process group, for a session of its own (setsid) or,
 * where that is refused, a process group of its own (setpgid), and keeps the CGI's stdin,
 * stdout and stderr open while it sleeps. The CGI itself answers at once and exits: the
 * response must still end, and the grandchild must not outlive the request, although a kill
 * of the CGI's process group no longer reaches it. Reports `setsid=ok` (or the errno name),
 * then `setpgid=...` if setsid was refused, from the grandchild before the main process says
 * `done`. */
#include "report.h"

#include <sys/wait.h>

int main(void) {
    cgi_header();
    int ready[2];
    if (pipe(ready) == -1) {
        printf("pipe=%s\n", errno_name(errno));
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        long rc = setsid();
        int setsid_errno = errno;
        long group = rc == -1 ? setpgid(0, 0) : 0;
        int setpgid_errno = errno;
        if (fork() == 0) {
            errno = setsid_errno;
            report("setsid", rc);
            errno = setpgid_errno;
            if (rc == -1)
                report("setpgid", group);
            close(ready[1]);
            /* Holds fds 0, 1 and 2 for 100 s unless it is killed. */
            sleep(100);
            _exit(0);
        }
        _exit(0);
    }
    close(ready[1]);
    /* Wait for the grandchild's report (EOF on the pipe), so it is always printed first. */
    char byte;
    while (read(ready[0], &byte, 1) > 0) {
    }
    waitpid(child, NULL, 0);
    puts("done");
    return 0;
}
