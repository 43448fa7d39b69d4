/*
 * spawn_ceiling: the most a machine can do for one CGI script with no HTTP at all.
 *
 * Keeps N copies of SCRIPT running at once, each posix_spawn'ed (glibc: clone(CLONE_VM |
 * CLONE_VFORK), the cheapest way to start a program) with a CGI environment, its own process
 * group (as a gateway gives each CGI), the script's folder as working directory, stdout on a
 * pipe that is read to EOF and stderr on /dev/null. (A process group, not a session: with the
 * scheduler's autogroups, on by default in Debian's kernels, a new session is a new scheduling
 * group, and on a busy machine the vfork'ed child waits in it for a CPU while the spawner,
 * blocked until the exec, can start nothing else: that halved this ceiling under load.) With -b FILE the
 * file is the request body: written to the CGI's stdin while its output is read, and the
 * response body must equal it. A request is done when its stdout reached EOF and the process
 * was reaped; it counts as an error if it exited non-zero, printed no header block, or (with
 * -e or -b) printed a body of the wrong length or content.
 *
 * usage: spawn_ceiling -c N (-d SECONDS | -n REQUESTS) [-b BODYFILE] [-e BODYBYTES] SCRIPT
 * prints: requests=R errors=E seconds=S rps=X p50_ms=A p99_ms=B body_bytes=T
 * (like wrk, requests still running when the time is up are waited for but not counted)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Most CGIs a run keeps in flight; the 1,000-connection test is HTTP-only. */
#define MAX_INFLIGHT 1024
/* Longest header block accepted before the body starts (as a gateway would cap it). */
#define MAX_HEADER 8192
#define READ_CHUNK 65536

struct slot {
    pid_t pid;        /* 0: free */
    int out;          /* read end of the CGI's stdout, -1 once at EOF */
    int in;           /* write end of the CGI's stdin, -1 once the body is written */
    size_t in_off;    /* body bytes written */
    char head[MAX_HEADER];
    size_t head_len;  /* header bytes seen; the body starts once in_body */
    int in_body;
    size_t body_len;  /* response body bytes read */
    int bad;          /* content mismatch or oversized header */
    double started;
};

static char *const *cgi_env;
static const char *body;
static size_t body_size;
static long expect_body = -1;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Feeds response bytes to the slot: finds the end of the header block, then checks the body. */
static void take_output(struct slot *s, const char *buf, size_t n)
{
    size_t i = 0;
    while (!s->in_body && i < n) {
        if (s->head_len == MAX_HEADER) {
            s->bad = 1;
            return;
        }
        s->head[s->head_len++] = buf[i++];
        size_t h = s->head_len;
        if ((h >= 2 && memcmp(s->head + h - 2, "\n\n", 2) == 0) ||
            (h >= 4 && memcmp(s->head + h - 4, "\r\n\r\n", 4) == 0))
            s->in_body = 1;
    }
    size_t rest = n - i;
    if (body) {
        if (s->body_len + rest > body_size || memcmp(body + s->body_len, buf + i, rest) != 0)
            s->bad = 1;
    }
    s->body_len += rest;
}

static void start(struct slot *s, const char *script, const char *dir, int devnull)
{
    int out[2], in[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) < 0)
        die("pipe2");
    if (body && pipe2(in, O_CLOEXEC) < 0)
        die("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, body ? in[0] : devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, devnull, 2);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_USEVFORK);
    char *argv[] = {(char *)script, NULL};
    s->started = now();
    int err = posix_spawn(&s->pid, script, &fa, &at, argv, cgi_env);
    if (err) {
        errno = err;
        die("posix_spawn");
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(out[1]);
    s->out = out[0];
    s->in = -1;
    if (body) {
        close(in[0]);
        fcntl(in[1], F_SETFL, O_NONBLOCK);
        s->in = in[1];
    }
    s->in_off = 0;
    s->head_len = 0;
    s->in_body = 0;
    s->body_len = 0;
    s->bad = 0;
}

int main(int argc, char **argv)
{
    long inflight = 1, max_requests = 0;
    double duration = 0;
    const char *body_file = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "c:d:n:b:e:")) != -1) {
        switch (opt) {
        case 'c': inflight = atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': max_requests = atol(optarg); break;
        case 'b': body_file = optarg; break;
        case 'e': expect_body = atol(optarg); break;
        default: goto usage;
        }
    }
    if (optind != argc - 1 || inflight < 1 || inflight > MAX_INFLIGHT ||
        (duration <= 0) == (max_requests <= 0)) {
usage:
        fprintf(stderr, "usage: spawn_ceiling -c N (-d SECONDS | -n REQUESTS) [-b BODYFILE] "
                        "[-e BODYBYTES] SCRIPT\n");
        return 2;
    }
    char script[PATH_MAX], dir[PATH_MAX];
    if (!realpath(argv[optind], script))
        die(argv[optind]);
    strcpy(dir, script);
    *strrchr(dir, '/') = '\0';
    if (!dir[0])
        strcpy(dir, "/");

    char content_length[64] = "CONTENT_LENGTH=";
    if (body_file) {
        int fd = open(body_file, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
            die(body_file);
        body_size = (size_t)st.st_size;
        body = mmap(NULL, body_size ? body_size : 1, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (body == MAP_FAILED)
            die("mmap");
        close(fd);
        snprintf(content_length, sizeof content_length, "CONTENT_LENGTH=%zu", body_size);
    }
    char script_filename[PATH_MAX + 32], script_name[PATH_MAX + 32], request_uri[PATH_MAX + 32],
        document_root[PATH_MAX + 32];
    const char *base = strrchr(script, '/') + 1;
    snprintf(script_filename, sizeof script_filename, "SCRIPT_FILENAME=%s", script);
    snprintf(script_name, sizeof script_name, "SCRIPT_NAME=/cgi-bin/%s", base);
    snprintf(request_uri, sizeof request_uri, "REQUEST_URI=/cgi-bin/%s", base);
    snprintf(document_root, sizeof document_root, "DOCUMENT_ROOT=%s", dir);
    /* What a gateway passes for `GET /cgi-bin/NAME` from wrk (RFC 3875 §4.1 plus the usual). */
    char *env[] = {
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "SERVER_SOFTWARE=spawn_ceiling",
        "SERVER_NAME=127.0.0.1",
        "SERVER_ADDR=127.0.0.1",
        "SERVER_PORT=8080",
        "REMOTE_ADDR=127.0.0.1",
        "REMOTE_PORT=40000",
        "REQUEST_SCHEME=http",
        body ? "REQUEST_METHOD=POST" : "REQUEST_METHOD=GET",
        "QUERY_STRING=",
        "PATH_INFO=",
        "HTTP_HOST=127.0.0.1:8080",
        "HTTP_USER_AGENT=wrk",
        body ? "CONTENT_TYPE=application/octet-stream" : "CONTENT_TYPE=",
        content_length,
        script_filename,
        script_name,
        request_uri,
        document_root,
        NULL,
    };
    cgi_env = env;

    signal(SIGPIPE, SIG_IGN);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        die("/dev/null");
    struct slot *slots = calloc((size_t)inflight, sizeof *slots);
    struct pollfd *pfd = calloc((size_t)inflight * 2, sizeof *pfd);
    size_t lat_cap = 1 << 16, lat_n = 0;
    double *lat = malloc(lat_cap * sizeof *lat);
    char *buf = malloc(READ_CHUNK);
    if (!slots || !pfd || !lat || !buf)
        die("malloc");

    long started = 0, errors = 0, running = 0;
    unsigned long long body_bytes = 0;
    double t0 = now(), end = duration > 0 ? t0 + duration : 0, t_last = t0;
    int stopping = 0;
    for (;;) {
        /* Fill the free slots while there is time (or requests) left. */
        stopping = duration > 0 ? now() >= end : started >= max_requests;
        for (long i = 0; i < inflight && !stopping; i++) {
            if (slots[i].pid == 0) {
                start(&slots[i], script, dir, devnull);
                started++;
                running++;
                if (max_requests > 0 && started >= max_requests)
                    stopping = 1;
            }
        }
        if (running == 0)
            break;
        nfds_t n = 0;
        long map[MAX_INFLIGHT * 2];
        for (long i = 0; i < inflight; i++) {
            struct slot *s = &slots[i];
            if (s->pid == 0)
                continue;
            if (s->out >= 0) {
                pfd[n] = (struct pollfd){.fd = s->out, .events = POLLIN};
                map[n++] = i;
            }
            if (s->in >= 0) {
                pfd[n] = (struct pollfd){.fd = s->in, .events = POLLOUT};
                map[n++] = i;
            }
        }
        if (poll(pfd, n, 100) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        for (nfds_t k = 0; k < n; k++) {
            struct slot *s = &slots[map[k]];
            if (!pfd[k].revents)
                continue;
            if (pfd[k].fd == s->in) {
                ssize_t w = write(s->in, body + s->in_off, body_size - s->in_off);
                if (w > 0)
                    s->in_off += (size_t)w;
                if ((w < 0 && errno != EAGAIN) || s->in_off == body_size) {
                    if (w < 0)
                        s->bad = 1; /* the CGI closed its stdin before reading the body */
                    close(s->in);
                    s->in = -1;
                }
                continue;
            }
            ssize_t r = read(s->out, buf, READ_CHUNK);
            if (r > 0) {
                take_output(s, buf, (size_t)r);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            /* EOF (or a read error): the response is complete; reap the CGI. */
            close(s->out);
            s->out = -1;
            if (s->in >= 0) {
                close(s->in);
                s->in = -1;
                s->bad = 1;
            }
            int status;
            while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
                ;
            double t = now();
            int bad = s->bad || !s->in_body || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
                      (expect_body >= 0 && s->body_len != (size_t)expect_body) ||
                      (body && s->body_len != body_size);
            s->pid = 0;
            running--;
            if (duration > 0 && t > end)
                continue; /* finished after the time was up: not counted, as in wrk */
            t_last = t;
            if (bad) {
                errors++;
                continue;
            }
            body_bytes += s->body_len;
            if (lat_n == lat_cap) {
                lat_cap *= 2;
                lat = realloc(lat, lat_cap * sizeof *lat);
                if (!lat)
                    die("realloc");
            }
            lat[lat_n++] = (t - s->started) * 1000.0;
        }
    }
    double secs = duration > 0 ? duration : t_last - t0;
    qsort(lat, lat_n, sizeof *lat, cmp_double);
    double p50 = lat_n ? lat[(lat_n - 1) / 2] : 0;
    double p99 = lat_n ? lat[(size_t)((double)(lat_n - 1) * 0.99)] : 0;
    printf("requests=%zu errors=%ld seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f body_bytes=%llu\n",
           lat_n, errors, secs, secs > 0 ? (double)lat_n / secs : 0, p50, p99, body_bytes);
    return 0;
}
