/* Speaks as the front server: sends the bytes on stdin (an HTTP request with X-Forwarded-User,
 * or a FastCGI request with REMOTE_USER) to one of the gateway's listeners and prints what
 * comes back. As a CGI (`?port=N`, the request as the POST body) it is a CGI with
 * --cgi-network calling 127.0.0.1:N; on the host (`front_server unix:/PATH` or `front_server
 * PORT` with the request in FILE as a second argument, run as another user) it is a local user.
 * Prints `connect=`, `answer_bytes=`, then
 * `answer:` and the answer itself. */
#include "report.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MAX_REQUEST (64 * 1024)
#define MAX_ANSWER (256 * 1024)

static char request[MAX_REQUEST];
static char answer[MAX_ANSWER];

int main(int argc, char **argv) {
    cgi_header();
    size_t request_len = 0;
    ssize_t n;
    int input = argc > 2 ? open(argv[2], O_RDONLY) : 0;
    while (input >= 0 && request_len < sizeof request &&
           (n = read(input, request + request_len, sizeof request - request_len)) > 0) {
        request_len += (size_t)n;
    }
    const char *target = argc > 1 ? argv[1] : NULL;
    int fd;
    long rc;
    if (target && strncmp(target, "unix:", 5) == 0) {
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        strncpy(addr.sun_path, target + 5, sizeof addr.sun_path - 1);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        rc = report("connect", fd < 0 ? -1 : connect(fd, (struct sockaddr *)&addr, sizeof addr));
    } else {
        long port = target ? strtol(target, NULL, 10) : query_long("port", 0);
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((unsigned short)port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        rc = report("connect", fd < 0 ? -1 : connect(fd, (struct sockaddr *)&addr, sizeof addr));
    }
    if (rc == -1) {
        printf("done\n");
        return 0;
    }
    size_t sent = 0;
    /* The gateway may close before reading it all (a refused peer): no SIGPIPE, just stop. */
    while (sent < request_len &&
           (n = send(fd, request + sent, request_len - sent, MSG_NOSIGNAL)) > 0) {
        sent += (size_t)n;
    }
    size_t answer_len = 0;
    while (answer_len < sizeof answer &&
           (n = read(fd, answer + answer_len, sizeof answer - answer_len)) > 0) {
        answer_len += (size_t)n;
    }
    close(fd);
    printf("answer_bytes=%zu\nanswer:\n", answer_len);
    fwrite(answer, 1, answer_len, stdout);
    return 0;
}
