/* A lock and file flags on stdin, which is /dev/null for a request without a body.
 *
 *   ?lock=1    takes an exclusive lock (`flock`, which belongs to the open file) on stdin,
 *              sets O_NONBLOCK and O_APPEND on it, and exits
 *   (no query) reports stdin's file flags (`stdin_flags=0x...`) and whether it can take the
 *              same lock on /dev/null opened anew (`flock_dev_null=ok|ENAME`)
 *
 * Were that open file the worker's, shared by every CGI without a body, the locks and flags
 * of one request would outlive it and meet every later one. */
#include "report.h"

#include <fcntl.h>
#include <sys/file.h>

int main(void) {
    cgi_header();
    int lock = query_long("lock", 0) != 0;
    if (lock) {
        report("flock_stdin", flock(0, LOCK_EX | LOCK_NB));
        report("set_flags", fcntl(0, F_SETFL, O_NONBLOCK | O_APPEND));
    } else {
        printf("stdin_flags=0x%x\n", fcntl(0, F_GETFL) & (O_NONBLOCK | O_APPEND));
        int null = open("/dev/null", O_RDONLY);
        report("flock_dev_null", null == -1 ? -1 : flock(null, LOCK_EX | LOCK_NB));
    }
    printf("done\n");
    return 0;
}
