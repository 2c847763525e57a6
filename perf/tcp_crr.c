/*
 * tcp_crr: connection set-up rate on kernel sockets, the kernel -> kernel baseline of perf/tcp.sh (netperf's
 * TCP_CRR, which Debian does not ship). The same protocol as `onload-pingpong --tcp --connect-rate`:
 *
 *   client: socket, TCP_NODELAY, connect, write SIZE bytes, read SIZE bytes, read until the server closes,
 *           close; again, one connection at a time, blocking calls, for SECONDS after WARMUP connections.
 *   server: accept, read SIZE bytes, write them back, close (the server closes first, as an HTTP/1.0 server
 *           does, so TIME_WAIT stays on its side); one connection at a time, blocking calls.
 *
 * Usage: tcp_crr server ADDR PORT SIZE
 *        tcp_crr client ADDR PORT SIZE SECONDS WARMUP [JSON]
 * The client prints connections per second and each connection's duration (median, p99, p99.9, max in us);
 * with JSON it also writes them there, one "key": value a line. Exits non-zero if no connection completed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int full(int fd, char *buf, size_t len, int writing)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = writing ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR && !stop)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static int server(struct sockaddr_in *addr, size_t size)
{
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || bind(l, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(l, 1024) < 0) {
        perror("tcp_crr server");
        return 1;
    }
    printf("tcp_crr: server ready\n");
    fflush(stdout);
    char *buf = malloc(size);
    unsigned long served = 0, failed = 0;
    while (!stop) {
        int c = accept(l, NULL, NULL);
        if (c < 0)
            continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (full(c, buf, size, 0) == 0 && full(c, buf, size, 1) == 0)
            served++;
        else
            failed++;
        close(c);
    }
    printf("tcp_crr: server served %lu failed %lu\n", served, failed);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One cycle; 0 or -1 (errno set). */
static int cycle(struct sockaddr_in *addr, char *buf, size_t size)
{
    int one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = -1;
    char extra;
    if (connect(s, (struct sockaddr *)addr, sizeof *addr) == 0 && full(s, buf, size, 1) == 0
        && full(s, buf, size, 0) == 0) {
        ssize_t n = read(s, &extra, 1);
        if (n == 0)
            rc = 0;
        else if (n > 0)
            errno = EPROTO;
    }
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

static double pct(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    return (double)v[i >= n ? n - 1 : i] / 1000.0;
}

static int client(struct sockaddr_in *addr, size_t size, double seconds, long warmup, const char *json)
{
    char *buf = malloc(size);
    memset(buf, 'a', size);
    unsigned long errors = 0;
    int last_errno = 0;
    for (long i = 0; i < warmup && !stop; i++)
        if (cycle(addr, buf, size) < 0) {
            errors++;
            last_errno = errno;
        }
    if (warmup > 0 && errors == (unsigned long)warmup) {
        fprintf(stderr, "tcp_crr: none of %ld warm-up connections completed: %s\n", warmup, strerror(last_errno));
        return 1;
    }
    errors = 0;
    size_t cap = 1 << 16, n = 0;
    uint64_t *samples = malloc(cap * sizeof *samples);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), t = start;
    while (!stop && t < end) {
        uint64_t t0 = t;
        int rc = cycle(addr, buf, size);
        t = now_ns();
        if (rc < 0) {
            errors++;
            last_errno = errno;
            continue;
        }
        if (n == cap)
            samples = realloc(samples, (cap *= 2) * sizeof *samples);
        samples[n++] = t - t0;
    }
    double took = (double)(t - start) / 1e9;
    qsort(samples, n, sizeof *samples, cmp_u64);
    double rate = took > 0 ? (double)n / took : 0;
    printf("tcp_crr: %zu connections in %.3f s = %.0f per second; errors %lu%s%s\n", n, took, rate, errors,
           errors ? ", last " : "", errors ? strerror(last_errno) : "");
    printf("one connection (us): median %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", pct(samples, n, 50), pct(samples, n, 99),
           pct(samples, n, 99.9), n ? (double)samples[n - 1] / 1000.0 : 0);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\n  \"tool\": \"tcp_crr\",\n  \"mode\": \"connect-rate\",\n  \"size\": %zu,\n  \"seconds\": %.3f,\n"
                   "  \"connections\": %zu,\n  \"per_second\": %.1f,\n  \"errors\": %lu,\n  \"unit\": \"us\",\n"
                   "  \"median\": %.3f,\n  \"p99\": %.3f,\n  \"p99_9\": %.3f,\n  \"max\": %.3f\n}\n",
                size, took, n, rate, errors, pct(samples, n, 50), pct(samples, n, 99), pct(samples, n, 99.9),
                n ? (double)samples[n - 1] / 1000.0 : 0);
        fclose(f);
    }
    return n > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int is_server = argc == 5 && strcmp(argv[1], "server") == 0;
    int is_client = (argc == 7 || argc == 8) && strcmp(argv[1], "client") == 0;
    struct sockaddr_in addr = { .sin_family = AF_INET };
    if ((!is_server && !is_client) || inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
        fprintf(stderr, "usage: tcp_crr server ADDR PORT SIZE\n       tcp_crr client ADDR PORT SIZE SECONDS WARMUP [JSON]\n");
        return 2;
    }
    addr.sin_port = htons((uint16_t)atoi(argv[3]));
    size_t size = (size_t)atol(argv[4]);
    if (size == 0 || size > (1 << 20)) {
        fprintf(stderr, "tcp_crr: SIZE must be 1..1048576\n");
        return 2;
    }
    /* No SA_RESTART: a blocked accept() or read() returns EINTR on SIGTERM, and the loops end. */
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (is_server)
        return server(&addr, size);
    return client(&addr, size, atof(argv[5]), atol(argv[6]), argc == 8 ? argv[7] : NULL);
}
