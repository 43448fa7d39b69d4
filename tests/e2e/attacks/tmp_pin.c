/* Two requests that can pass descriptors (through a Unix socket in the shared data folder)
 * try to reach past the end of the first into the `/tmp` that a later request gets: the
 * worker hands a request's `/tmp` (its tmpfs) to a later one once it looks empty.
 *
 *   ?keep=S   listens on /data/pin.sock, takes the descriptor another request sends, keeps
 *             it S seconds; prints `listening` first, then `kept=ok|ENAME`
 *   ?pin=1    fills /tmp/fill with 256 KiB, unlinks it and sends its descriptor (and one of
 *             /tmp itself) to the keeper: the file is in no folder, but its blocks stay used
 *             while the keeper holds it; prints `sent=ok|ENAME`
 *   ?look=1   what this request's /tmp holds: `tmp_blocks_used=N`, `tmp_inodes_used=N`
 *             (statvfs: an empty tmpfs has 0 and 1)
 *
 * Each prints `uid=` and `done` too. */
#include "report.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>

static const char SOCKET_PATH[] = "/data/pin.sock";

static struct sockaddr_un address(void) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, SOCKET_PATH, sizeof SOCKET_PATH);
    return addr;
}

static void keep(long seconds) {
    struct sockaddr_un addr = address();
    int listener = socket(AF_UNIX, SOCK_STREAM, 0);
    unlink(SOCKET_PATH);
    if (report("bind", bind(listener, (struct sockaddr *)&addr, sizeof addr)) == -1)
        return;
    chmod(SOCKET_PATH, 0660);
    listen(listener, 1);
    printf("listening\n");
    int peer = accept(listener, NULL, NULL);
    char byte;
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    long got = recvmsg(peer, &msg, 0);
    report("kept", got > 0 && CMSG_FIRSTHDR(&msg) ? 0 : -1);
    unlink(SOCKET_PATH);
    sleep((unsigned)seconds);
}

static void pin(void) {
    int fill = open("/tmp/fill", O_RDWR | O_CREAT | O_TRUNC, 0600);
    static char block[4096];
    memset(block, 'p', sizeof block);
    for (int i = 0; i < 64 && fill != -1; i++)
        if (write(fill, block, sizeof block) != sizeof block)
            break;
    unlink("/tmp/fill");
    int tmp = open("/tmp", O_RDONLY | O_DIRECTORY);
    struct sockaddr_un addr = address();
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    if (report("connect", connect(sock, (struct sockaddr *)&addr, sizeof addr)) == -1)
        return;
    int fds[2] = {fill, tmp};
    char byte = 'x';
    char control[CMSG_SPACE(sizeof fds)] = {0};
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof fds);
    report("sent", sendmsg(sock, &msg, 0));
}

static void look(void) {
    struct statvfs fs;
    if (report("statvfs", statvfs("/tmp", &fs)) == -1)
        return;
    printf("tmp_blocks_used=%lu\n", (unsigned long)(fs.f_blocks - fs.f_bfree));
    printf("tmp_inodes_used=%lu\n", (unsigned long)(fs.f_files - fs.f_ffree));
}

int main(void) {
    cgi_header();
    printf("uid=%d\n", (int)getuid());
    long seconds = query_long("keep", -1);
    if (seconds >= 0)
        keep(seconds);
    else if (query_long("pin", 0))
        pin();
    else
        look();
    printf("done\n");
    return 0;
}
