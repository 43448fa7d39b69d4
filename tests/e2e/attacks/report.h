/* Shared by the attack CGIs: the CGI header, `key=value` result lines, errno names, and the
 * query string. Each attack prints its results unbuffered, so a test reading the response as
 * it streams sees `armed` the moment the attack is in full effect. */
#ifndef JAILGATE_ATTACK_REPORT_H
#define JAILGATE_ATTACK_REPORT_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((unused)) static void cgi_header(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    fputs("Content-Type: text/plain\r\n\r\n", stdout);
}

/* "EPERM", "ENOENT", ...: the symbolic name, which the tests assert on. */
__attribute__((unused)) static const char *errno_name(int error) {
    const char *name = strerrorname_np(error);
    return name ? name : "E?";
}

/* `what=ok` when rc is not -1, else `what=ENAME`. Returns rc. */
__attribute__((unused)) static long report(const char *what, long rc) {
    if (rc == -1) {
        printf("%s=%s\n", what, errno_name(errno));
    } else {
        printf("%s=ok\n", what);
    }
    return rc;
}

/* The number after `key=` in QUERY_STRING, or `fallback`. */
__attribute__((unused)) static long query_long(const char *key, long fallback) {
    const char *query = getenv("QUERY_STRING");
    size_t len = strlen(key);
    while (query && *query) {
        if (strncmp(query, key, len) == 0 && query[len] == '=') {
            return strtol(query + len + 1, NULL, 10);
        }
        query = strchr(query, '&');
        if (query) {
            query++;
        }
    }
    return fallback;
}

#endif
