/* connect() to 127.0.0.1:PORT (`?port=N`): with --no-network the CGI's network namespace is
 * empty (its loopback is down), so this must fail; without it, it reaches the gateway. */
#include "report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(void) {
    cgi_header();
    long port = query_long("port", 0);
    int fd = (int)report("socket", socket(AF_INET, SOCK_STREAM, 0));
    if (fd >= 0) {
        struct sockaddr_in addr;
        memset(&addr, 0, sizeof addr);
        addr.sin_family = AF_INET;
        addr.sin_port = htons((unsigned short)port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        report("connect", connect(fd, (struct sockaddr *)&addr, sizeof addr));
        close(fd);
    }
    printf("done\n");
    return 0;
}
