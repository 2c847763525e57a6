/*
 * reuseport.c: a server with one SO_REUSEPORT socket per thread on one port, and its kernel clients, for the preload
 * tests (tests/Onload.Tests/Preload/PreloadReuseportTests.cs).
 *
 *   reuseport serve-tcp PORT THREADS CONNECTIONS     THREADS listeners on 0.0.0.0:PORT, each accepting and echoing
 *   reuseport serve-udp PORT THREADS DATAGRAMS       THREADS UDP sockets on 0.0.0.0:PORT, each echoing datagrams
 *   reuseport tcp-clients ADDRESS PORT CONNECTIONS   one connection after another, each from its own source port
 *   reuseport udp-clients ADDRESS PORT DATAGRAMS     one datagram from each of as many sockets, each awaiting its echo
 *
 * The servers print "listening" once every socket is bound, then serve until CONNECTIONS connections (or
 * DATAGRAMS datagrams) are done, print "socket I served N" for each and "ok served ..." and exit 0. Every byte is
 * checked: a TCP client streams a pattern seeded by its connection's number and checks the echo; a datagram carries
 * its number and a pattern seeded by it, checked by the server (which also fails on a number seen twice) and by the
 * client on the echo. A failed check prints FAILED and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

#define MAX_THREADS 16
#define TCP_BYTES 8192
#define DATAGRAM_BYTES 512
#define MAX_DATAGRAMS 4096

struct member {
	int index;
	int fd;
	atomic_int served;
};

static struct member members[MAX_THREADS];
static atomic_int total;
static atomic_uchar seen[MAX_DATAGRAMS];

static int reuseport_socket(int type, int port)
{
	int fd = socket(AF_INET, type, 0);
	CHECK(fd >= 0, "socket");
	CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &(int){ 1 }, sizeof(int)) == 0, "SO_REUSEPORT");
	struct sockaddr_in here = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	CHECK(bind(fd, (struct sockaddr *)&here, sizeof here) == 0, "bind port %d", port);
	return fd;
}

static void *serve_tcp(void *arg)
{
	struct member *m = arg;
	char buf[65536];
	for (;;) {
		int conn = accept(m->fd, NULL, NULL);
		CHECK(conn >= 0 || errno == EINTR, "listener %d: accept", m->index);
		if (conn < 0)
			continue;
		ssize_t n;
		while ((n = recv(conn, buf, sizeof buf, 0)) > 0)
			CHECK(send(conn, buf, (size_t)n, MSG_NOSIGNAL) == n, "listener %d: echo", m->index);
		CHECK(n == 0, "listener %d: recv", m->index);
		CHECK(close(conn) == 0, "listener %d: close", m->index);
		atomic_fetch_add(&m->served, 1);
		atomic_fetch_add(&total, 1);
	}
	return NULL;
}

/* A datagram: its number, then the pattern seeded by it. */
static void check_datagram(const unsigned char *d, ssize_t n, unsigned *number, const char *who)
{
	CHECK(n == DATAGRAM_BYTES, "%s: a datagram of %zd bytes", who, n);
	memcpy(number, d, sizeof *number);
	CHECK(*number < MAX_DATAGRAMS, "%s: datagram number %u", who, *number);
	for (size_t i = sizeof *number; i < DATAGRAM_BYTES; i++)
		CHECK(d[i] == pattern_at(i, *number), "%s: byte %zu of datagram %u differs", who, i, *number);
}

static void *serve_udp(void *arg)
{
	struct member *m = arg;
	unsigned char d[DATAGRAM_BYTES + 1];
	char who[32];
	snprintf(who, sizeof who, "socket %d", m->index);
	for (;;) {
		struct sockaddr_in from;
		socklen_t len = sizeof from;
		ssize_t n = recvfrom(m->fd, d, sizeof d, 0, (struct sockaddr *)&from, &len);
		CHECK(n >= 0 || errno == EINTR, "%s: recvfrom", who);
		if (n < 0)
			continue;
		unsigned number;
		check_datagram(d, n, &number, who);
		CHECK(atomic_exchange(&seen[number], 1) == 0, "%s: datagram %u received twice", who, number);
		CHECK(sendto(m->fd, d, (size_t)n, 0, (struct sockaddr *)&from, len) == n, "%s: echo", who);
		atomic_fetch_add(&m->served, 1);
		atomic_fetch_add(&total, 1);
	}
	return NULL;
}

static int serve(int type, int port, int threads, int count)
{
	CHECK(threads >= 1 && threads <= MAX_THREADS && count >= 1 && count <= MAX_DATAGRAMS, "1-%d threads, 1-%d to serve",
	      MAX_THREADS, MAX_DATAGRAMS);
	for (int i = 0; i < threads; i++) {
		members[i].index = i;
		members[i].fd = reuseport_socket(type, port);
		if (type == SOCK_STREAM)
			CHECK(listen(members[i].fd, 64) == 0, "listen %d", i);
	}
	printf("listening\n");
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		CHECK(pthread_create(&t, NULL, type == SOCK_STREAM ? serve_tcp : serve_udp, &members[i]) == 0, "thread %d", i);
	}
	/* The threads stay blocked in accept or recvfrom: exit ends them once everything is served. */
	for (int waited = 0; atomic_load(&total) < count; waited++) {
		CHECK(waited < 60 * 100, "served %d of %d in 60 s", atomic_load(&total), count);
		usleep(10000);
	}
	for (int i = 0; i < threads; i++)
		printf("socket %d served %d\n", i, atomic_load(&members[i].served));
	printf("ok served %d\n", count);
	exit(0);
}

static struct sockaddr_in server_of(const char *address, const char *port)
{
	struct sockaddr_in server = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	CHECK(inet_pton(AF_INET, address, &server.sin_addr) == 1, "address %s", address);
	return server;
}

static int tcp_clients(struct sockaddr_in server, int connections)
{
	for (int i = 0; i < connections; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof server) == 0, "connect %d", i);
		char what[32];
		snprintf(what, sizeof what, "connection %d", i);
		struct stream s = { .fd = fd, .seed = (unsigned)i };
		stream_until(&s, TCP_BYTES, TCP_BYTES, what);
		CHECK(shutdown(fd, SHUT_WR) == 0, "%s: shutdown", what);
		char c;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		CHECK(poll(&p, 1, 10000) == 1 && recv(fd, &c, 1, 0) == 0, "%s: the server's end of stream", what);
		close(fd);
	}
	printf("ok %d connections intact\n", connections);
	return 0;
}

static int udp_clients(struct sockaddr_in server, int datagrams)
{
	CHECK(datagrams >= 1 && datagrams <= MAX_DATAGRAMS, "1-%d datagrams", MAX_DATAGRAMS);
	for (unsigned i = 0; i < (unsigned)datagrams; i++) {
		int fd = socket(AF_INET, SOCK_DGRAM, 0); /* a socket each: a source port each */
		CHECK(fd >= 0, "socket");
		unsigned char d[DATAGRAM_BYTES + 1];
		memcpy(d, &i, sizeof i);
		for (size_t b = sizeof i; b < DATAGRAM_BYTES; b++)
			d[b] = pattern_at(b, i);
		CHECK(sendto(fd, d, DATAGRAM_BYTES, 0, (struct sockaddr *)&server, sizeof server) == DATAGRAM_BYTES, "send %u", i);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		CHECK(poll(&p, 1, 10000) == 1, "datagram %u: no echo within 10 s", i);
		unsigned number;
		check_datagram(d, recv(fd, d, sizeof d, 0), &number, "echo");
		CHECK(number == i, "datagram %u: the echo is of %u", i, number);
		close(fd);
	}
	printf("ok %d datagrams echoed intact\n", datagrams);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 5 && strcmp(argv[1], "serve-tcp") == 0)
		return serve(SOCK_STREAM, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "serve-udp") == 0)
		return serve(SOCK_DGRAM, atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "tcp-clients") == 0)
		return tcp_clients(server_of(argv[2], argv[3]), atoi(argv[4]));
	if (argc == 5 && strcmp(argv[1], "udp-clients") == 0)
		return udp_clients(server_of(argv[2], argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: reuseport serve-tcp|serve-udp PORT THREADS COUNT | reuseport tcp-clients|udp-clients ADDRESS PORT COUNT\n");
	return 2;
}
