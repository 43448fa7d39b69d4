/* connect() to the abstract Unix socket `jailgate-e2e-N` (`?id=N`), one the host made. A
 * chroot does not hide abstract sockets (they live in the network namespace, not the file
 * tree), so only the worker's Landlock scope keeps a CGI from reaching those of the host.
 * The test also runs this program outside the jail, as its control. */
#include "report.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(void) {
    cgi_header();
    long id = query_long("id", 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    /* sun_path[0] stays '\0': an abstract name, not a file. */
    int len = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "jailgate-e2e-%ld", id);
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
    int fd = (int)report("socket", socket(AF_UNIX, SOCK_STREAM, 0));
    if (fd >= 0) {
        report("connect", connect(fd, (struct sockaddr *)&addr, size));
        close(fd);
    }
    printf("done\n");
    return 0;
}
