/* Runs code from memory: reads its own program (SCRIPT_FILENAME) into a memfd and executes
 * that, past every noexec mount. Run as `PROGRAM child VIA`, it is the executed copy: it
 * prints `executed=yes` and `via=VIA` and exits 0.
 *
 * Each exec is tried in a child of its own, so one that works does not end the attack: the
 * child reports the error when the exec fails (`fexecve=EACCES`), the parent `NAME=ok` when
 * the child exited 0 (the executed copy ran). Reports `memfd_create`, `memfd_write`,
 * `fexecve` (glibc: execveat(fd, "", AT_EMPTY_PATH)), `execveat_empty` (the same by hand), and
 * `memfd_exec_flag` (a memfd asked for executable, MFD_EXEC). */
#include "report.h"

#include <fcntl.h>

#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

extern char **environ;

static int copy_into(int fd, const char *path) {
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in == -1) {
        return -1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(fd, buf + done, (size_t)(n - done));
            if (w == -1) {
                int saved = errno;
                close(in);
                errno = saved;
                return -1;
            }
            done += w;
        }
    }
    int saved = errno;
    close(in);
    errno = saved;
    return n == -1 ? -1 : 0;
}

/* Runs `how` in a child; `what=ok` if the executed copy exited 0. */
static void try_exec(const char *what, int fd, int how) {
    char *argv[] = {(char *)"memfd", (char *)"child", (char *)what, NULL};
    pid_t pid = fork();
    if (pid == -1) {
        report(what, -1);
        return;
    }
    if (pid == 0) {
        if (how == 0) {
            fexecve(fd, argv, environ);
        } else {
            syscall(SYS_execveat, fd, "", argv, environ, AT_EMPTY_PATH);
        }
        report(what, -1);
        _exit(1);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("%s=ok\n", what);
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "child") == 0) {
        setvbuf(stdout, NULL, _IONBF, 0);
        printf("executed=yes\nvia=%s\n", argv[2]);
        return 0;
    }
    cgi_header();
    const char *self = getenv("SCRIPT_FILENAME");
    printf("program=%s\n", self ? self : "(none)");

    int fd = (int)report("memfd_create", memfd_create("x", MFD_CLOEXEC));
    if (fd != -1) {
        /* vm.memfd_noexec: a memfd made without MFD_EXEC comes sealed non-executable. */
        int seals = fcntl(fd, F_GET_SEALS);
        printf("memfd_seal_exec=%s\n", seals != -1 && (seals & F_SEAL_EXEC) ? "yes" : "no");
        report("memfd_write", self ? copy_into(fd, self) : (errno = ENOENT, -1));
        try_exec("fexecve", fd, 0);
        try_exec("execveat_empty", fd, 1);
        close(fd);
    } else {
        printf("memfd_write=skipped\nfexecve=skipped\nexecveat_empty=skipped\n");
    }

    int exec_fd = (int)report("memfd_exec_flag", memfd_create("y", MFD_EXEC | MFD_CLOEXEC));
    if (exec_fd != -1) {
        close(exec_fd);
    }
    printf("done\n");
    return 0;
}
