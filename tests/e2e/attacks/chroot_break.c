/* The classic chroot break-out: chroot into a subfolder (so the working directory is outside
 * the new root), climb with chdir(".."), chroot(".") at the top, then look around. Needs
 * CAP_SYS_CHROOT: a CGI, not root, must fail at the first chroot with EPERM. */
#include "report.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

int main(void) {
    cgi_header();
    report("chdir_tmp", chdir("/tmp"));
    report("mkdir", mkdir("jailgate-breakout", 0755));
    report("chroot", chroot("jailgate-breakout"));
    for (int i = 0; i < 64; i++) {
        chdir("..");
    }
    report("chroot_dot", chroot("."));
    int fd = (int)report("open_shadow", open("/etc/shadow", O_RDONLY));
    if (fd >= 0) {
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        printf("shadow_bytes=%zd\n", n);
        close(fd);
    }
    DIR *root = opendir("/");
    if (root) {
        struct dirent *entry;
        while ((entry = readdir(root)) != NULL) {
            printf("root_entry=%s\n", entry->d_name);
        }
        closedir(root);
    } else {
        printf("opendir_root=%s\n", errno_name(errno));
    }
    rmdir("/tmp/jailgate-breakout");
    printf("done\n");
    return 0;
}
