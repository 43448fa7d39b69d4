/* One request's files and processes as another request's CGI sees them (the same worker, so
 * the same PID namespace; a uid of its own each).
 *
 *   ?op=plant&hold=S  writes /tmp/secret (0600) and /tmp/open (0644), the same in /var/tmp
 *                     where it exists, prints `armed`, then sleeps S seconds before it exits
 *   ?plant=2&hold=S   leaves no file, only an extended attribute on /tmp and its mode 0777,
 *                     then sleeps S seconds too
 *   ?plant=3&hold=S   the same with the mode only
 *   ?op=steal         tries to read those files, counts the processes /proc shows besides its
 *                     own, and tries the worker's /proc/1/environ; reads /tmp's attribute
 *                     (`tmp_xattr`) and mode (`tmp_mode`)
 *
 * Prints `uid=`, and for steal `read_tmp_secret=ok|ENAME`, ..., `others_in_proc=N`,
 * `worker_environ=ok|ENAME`, then `done`. */
#include "report.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

static const char *const FILES[] = {"/tmp/secret", "/tmp/open", "/var/tmp/secret",
                                    "/var/tmp/open"};

static void plant(long how, long hold) {
    if (how == 2 || how == 3) {
        if (how == 2)
            report("plant_xattr", setxattr("/tmp", "user.secret", "x", 1, 0));
        report("plant_mode", chmod("/tmp", 0777));
        printf("armed\n");
        fflush(stdout);
        sleep((unsigned)hold);
        return;
    }
    for (unsigned i = 0; i < sizeof FILES / sizeof *FILES; i++) {
        mode_t mode = strstr(FILES[i], "secret") ? 0600 : 0644;
        int fd = open(FILES[i], O_WRONLY | O_CREAT | O_TRUNC, mode);
        if (fd != -1) {
            dprintf(fd, "SECRET of %d\n", (int)getpid());
            fchmod(fd, mode);
            close(fd);
        }
    }
    printf("armed\n");
    sleep((unsigned)hold);
}

static void steal(void) {
    static const char *const names[] = {"read_tmp_secret", "read_tmp_open", "read_var_tmp_secret",
                                        "read_var_tmp_open"};
    for (unsigned i = 0; i < sizeof FILES / sizeof *FILES; i++) {
        char buffer[64];
        int fd = open(FILES[i], O_RDONLY);
        if (fd != -1 && read(fd, buffer, sizeof buffer) > 0) {
            printf("%s=ok\n", names[i]);
        } else {
            printf("%s=%s\n", names[i], errno_name(errno));
        }
        if (fd != -1) {
            close(fd);
        }
    }
    /* Every pid /proc lists that is not one of ours. */
    int others = 0;
    DIR *proc = opendir("/proc");
    if (!proc) {
        printf("proc=%s\n", errno_name(errno));
    } else {
        struct dirent *entry;
        while ((entry = readdir(proc))) {
            long pid = strtol(entry->d_name, NULL, 10);
            if (pid > 0 && pid != getpid()) {
                others++;
                printf("seen_pid=%ld\n", pid);
            }
        }
        closedir(proc);
    }
    printf("others_in_proc=%d\n", others);
    char value[16];
    report("tmp_xattr", getxattr("/tmp", "user.secret", value, sizeof value));
    struct stat st;
    if (stat("/tmp", &st) == 0) {
        printf("tmp_mode=%o\n", (unsigned)(st.st_mode & 07777));
    }
    int fd = open("/proc/1/environ", O_RDONLY);
    report("worker_environ", fd);
    if (fd != -1) {
        close(fd);
    }
}

int main(void) {
    cgi_header();
    printf("uid=%d\n", (int)getuid());
    if (query_long("plant", 0)) {
        plant(query_long("plant", 1), query_long("hold", 3));
    } else {
        steal();
    }
    printf("done\n");
    return 0;
}
