/* Installed in /cgi-bin owned by root with mode 4755: if the setuid bit were honoured, this
 * would start with euid 0 and could make itself fully root. */
#include "report.h"

#include <fcntl.h>

int main(void) {
    cgi_header();
    printf("start_uid=%d\nstart_euid=%d\n", (int)getuid(), (int)geteuid());
    report("setuid0", setuid(0));
    printf("uid=%d\neuid=%d\n", (int)getuid(), (int)geteuid());
    int fd = (int)report("open_rootonly", open("/etc/jailgate-rootonly", O_RDONLY));
    if (fd >= 0) {
        char buf[256];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = '\0';
        printf("rootonly_content=%s\n", buf);
        close(fd);
    }
    printf("done\n");
    return 0;
}
