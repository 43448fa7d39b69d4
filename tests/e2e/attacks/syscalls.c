/* Kernel interfaces no CGI needs, each a known road to kernel bugs or to other processes:
 * socket families other than local, IPv4 and IPv6 (netlink, packet, the crypto API, vsock,
 * PF_KEY, Bluetooth), userfaultfd, inotify and fanotify (one pool of instances for every
 * CGI), the x86 LDT, another process's page placement
 * (move_pages, migrate_pages on the worker), process_madvise, the keyring, the new mount
 * API, setns, new namespaces (unshare, clone with namespace flags, clone3, whose flags a
 * filter cannot read), mount, and personality(READ_IMPLIES_EXEC) (readable memory becomes
 * executable).
 * Controls that must keep working: AF_UNIX, AF_INET, AF_INET6 sockets and the personality
 * query. Reports `NAME=ok` or `NAME=ENAME` for each. */
#include "report.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/sched.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_KEY
#define AF_KEY 15
#endif
#ifndef AF_BLUETOOTH
#define AF_BLUETOOTH 31
#endif
#define PF_KEY_V2 2
/* FAN_CLASS_NOTIF | FAN_REPORT_FID: what an unprivileged process may ask for (Linux 5.13). */
#define FAN_CLASS_NOTIF_REPORT_FID 0x200
#define BTPROTO_L2CAP 0
#define NETLINK_ROUTE 0
#define MPOL_MF_MOVE (1 << 1)

static void try_socket(const char *what, int family, int type, int protocol) {
    int fd = (int)report(what, socket(family, type | SOCK_CLOEXEC, protocol));
    if (fd != -1) {
        close(fd);
    }
}

/* A process made by `rc` (a fork-like call) ends at once; the parent reaps it. */
static void try_child(const char *what, long rc) {
    if (rc == 0) {
        _exit(0);
    }
    if (report(what, rc) > 0) {
        waitpid((pid_t)rc, NULL, 0);
    }
}

static void try_fd(const char *what, long fd) {
    if (report(what, fd) != -1) {
        close((int)fd);
    }
}

int main(void) {
    cgi_header();
    try_socket("socket_netlink", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    try_socket("socket_packet", AF_PACKET, SOCK_DGRAM, 0);
    try_socket("socket_alg", AF_ALG, SOCK_SEQPACKET, 0);
    try_socket("socket_vsock", AF_VSOCK, SOCK_STREAM, 0);
    try_socket("socket_key", AF_KEY, SOCK_RAW, PF_KEY_V2);
    try_socket("socket_bluetooth", AF_BLUETOOTH, SOCK_SEQPACKET, BTPROTO_L2CAP);
    try_socket("socket_unix", AF_UNIX, SOCK_STREAM, 0);
    try_socket("socket_inet", AF_INET, SOCK_STREAM, 0);
    try_socket("socket_inet6", AF_INET6, SOCK_STREAM, 0);

    try_fd("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    /* One pool of instances for every CGI (counted for the workers' account). */
    try_fd("inotify_init1", syscall(SYS_inotify_init1, O_CLOEXEC));
    try_fd("fanotify_init", syscall(SYS_fanotify_init, FAN_CLASS_NOTIF_REPORT_FID, O_RDONLY));
#ifdef SYS_modify_ldt
    char ldt[16];
    report("modify_ldt", syscall(SYS_modify_ldt, 0, ldt, sizeof ldt));
#else
    printf("modify_ldt=ENOSYS\n");
#endif
    report("move_pages_worker", syscall(SYS_move_pages, 1, 0UL, NULL, NULL, NULL, 0));
    unsigned long nodes = 1;
    report("migrate_pages_worker",
           syscall(SYS_migrate_pages, 1, 8 * sizeof nodes, &nodes, &nodes));
    report("process_madvise", syscall(SYS_process_madvise, -1, NULL, 0UL, 0, 0U));
    /* Into the process keyring (-2), which dies with this process, should the call work. */
    report("add_key", syscall(SYS_add_key, "user", "jailgate", "x", 1UL, -2));
    try_fd("fsopen", syscall(SYS_fsopen, "tmpfs", 0U));
    try_fd("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0U));
    /* The worker may enter mount namespaces (each CGI's private /tmp); a CGI may not, not even
     * its own. */
    int own_namespace = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    report("setns_mnt", syscall(SYS_setns, own_namespace, CLONE_NEWNS));
    /* A user namespace would make its process root of it, with every capability there; the
     * calls after unshare_user try what that would allow (without the filters, each of them
     * succeeds for an unprivileged process: checked with setpriv on the host). */
    try_child("clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0L, NULL, NULL, 0L));
    struct clone_args args = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
    try_child("clone3_newuser", syscall(SYS_clone3, &args, sizeof args));
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("unshare_mnt", syscall(SYS_unshare, CLONE_NEWNS));
    report("mount_tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL));

    int before = personality(0xffffffff);
    if (report("personality_rie", personality(READ_IMPLIES_EXEC)) != -1) {
        personality((unsigned long)before);
    }
    report("personality_query", personality(0xffffffff));
    printf("done\n");
    return 0;
}
