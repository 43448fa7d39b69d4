/* Makes a character device node for /dev/null's numbers (1, 3) in /tmp, and one for
 * /dev/mem (1, 1): needs CAP_MKNOD, which a CGI does not have (EPERM). Should one be made
 * anyway, /tmp is nodev, so opening it must fail too. */
#include "report.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static void try_node(const char *name, const char *path, unsigned major, unsigned minor) {
    char key[64];
    snprintf(key, sizeof key, "mknod_%s", name);
    if (report(key, mknod(path, S_IFCHR | 0666, makedev(major, minor))) == 0) {
        snprintf(key, sizeof key, "open_%s", name);
        int fd = (int)report(key, open(path, O_RDWR));
        if (fd >= 0) {
            close(fd);
        }
        unlink(path);
    }
}

int main(void) {
    cgi_header();
    try_node("null", "/tmp/jailgate-null", 1, 3);
    try_node("mem", "/tmp/jailgate-mem", 1, 1);
    printf("done\n");
    return 0;
}
