/*
 * inet6_calls.c: AF_INET6 stream sockets under the shim, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadInet6Tests.cs), against an echo server reachable on both
 * PEER4 and PEER6 at PORT; HOST4 is this side's IPv4 address.
 *
 *   inet6_calls PEER4 PEER6 PORT HOST4
 *
 * A dual-stack socket talks to PEER4 through ::ffff:PEER4 (the stack's, if accelerated) and sees
 * sockaddr_in6 names; an IPv6-only one cannot reach it; one to PEER6 or to ::ffff:127.0.0.1 works as
 * on the kernel. Prints "ok WHAT" per step and exits 0; a failed step prints why and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "inet6.h"

static char out[100000], in[100000];


static int get_v6only(int fd)
{
	int on = -1;
	socklen_t len = sizeof on;
	CHECK(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len) == 0 && len == sizeof on, "getsockopt IPV6_V6ONLY");
	return on;
}

static void set_v6only(int fd, int on)
{
	CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == 0, "setsockopt IPV6_V6ONLY %d", on);
}

/* Sends len bytes of `out` and reads them back from the echo server. */
static void echo(int fd, size_t len, const char *what)
{
	for (size_t sent = 0; sent < len;) {
		ssize_t n = send(fd, out + sent, len - sent, 0);
		CHECK(n > 0, "%s: send after %zu", what, sent);
		sent += (size_t)n;
	}
	for (size_t got = 0; got < len;) {
		ssize_t n = recv(fd, in + got, len - got, 0);
		CHECK(n > 0, "%s: recv %zd after %zu of %zu", what, n, got, len);
		got += (size_t)n;
	}
	CHECK(memcmp(in, out, len) == 0, "%s: the echo differs", what);
}

/* A name as sockaddr_in6, the full length reported. */
static struct sockaddr_in6 name_of(int fd, int peer)
{
	struct sockaddr_in6 a;
	memset(&a, 0xAA, sizeof a);
	socklen_t len = sizeof a;
	int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &len) : getsockname(fd, (struct sockaddr *)&a, &len);
	CHECK(rc == 0, "%s", peer ? "getpeername" : "getsockname");
	CHECK(len == sizeof a && a.sin6_family == AF_INET6, "%s: length %u family %d", peer ? "getpeername" : "getsockname",
	      (unsigned)len, a.sin6_family);
	CHECK(a.sin6_flowinfo == 0 && a.sin6_scope_id == 0, "%s: flow info and scope id zero", peer ? "getpeername" : "getsockname");
	return a;
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return fprintf(stderr, "usage: inet6_calls PEER4 PEER6 PORT HOST4\n"), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *peer4 = argv[1], *peer6 = argv[2], *host4 = argv[4];
	int port = atoi(argv[3]);
	for (size_t i = 0; i < sizeof out; i++)
		out[i] = (char)(i * 7 + i / 251);

	/* IPV6_V6ONLY starts as net.ipv6.bindv6only says and reads back what was set; other IPv6 options take. */
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	CHECK(fd >= 0, "socket");
	FILE *f = fopen("/proc/sys/net/ipv6/bindv6only", "r");
	int bindv6only = -1;
	CHECK(f != NULL && fscanf(f, "%d", &bindv6only) == 1, "read bindv6only");
	fclose(f);
	CHECK(get_v6only(fd) == bindv6only, "IPV6_V6ONLY starts as bindv6only (%d)", bindv6only);
	set_v6only(fd, 1);
	CHECK(get_v6only(fd) == 1, "IPV6_V6ONLY reads back 1");
	set_v6only(fd, 0);
	CHECK(get_v6only(fd) == 0, "IPV6_V6ONLY reads back 0");
	int tclass = 0x10;
	CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tclass, sizeof tclass) == 0, "setsockopt IPV6_TCLASS");
	printf("ok V6ONLY default=%d readback\n", bindv6only);

	/* Unbound, a dual-stack socket's name is [::]:0. */
	struct sockaddr_in6 me = name_of(fd, 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&me.sin6_addr) && me.sin6_port == 0, "unbound name %s", show(&me));
	printf("ok unbound name %s\n", show(&me));

	/* Connected through ::ffff:PEER4, its names are v4-mapped sockaddr_in6. */
	struct sockaddr_in6 to = mapped(peer4, port);
	CHECK(connect(fd, (struct sockaddr *)&to, sizeof to) == 0, "connect to %s", show(&to));
	me = name_of(fd, 0);
	struct sockaddr_in6 host = mapped(host4, 0);
	CHECK(memcmp(&me.sin6_addr, &host.sin6_addr, sizeof host.sin6_addr) == 0 && me.sin6_port != 0, "local name %s", show(&me));
	struct sockaddr_in6 them = name_of(fd, 1);
	CHECK(memcmp(&them.sin6_addr, &to.sin6_addr, sizeof to.sin6_addr) == 0 && them.sin6_port == to.sin6_port,
	      "peer name %s", show(&them));
	printf("ok mapped names local %s", show(&me));
	printf(" peer %s\n", show(&them));

	/* A short buffer gets the start of the address and the full length, as Linux. */
	unsigned char part[8];
	socklen_t len = sizeof part;
	CHECK(getpeername(fd, (struct sockaddr *)part, &len) == 0, "getpeername into 8 bytes");
	CHECK(len == sizeof(struct sockaddr_in6) && memcmp(part, &them, sizeof part) == 0, "truncated name, length %u", (unsigned)len);
	printf("ok truncated name\n");

	echo(fd, sizeof out, "mapped");
	close(fd);
	printf("ok mapped echo\n");

	/* An IPv6-only socket has no IPv4: Linux's tcp_v6_connect says ENETUNREACH. */
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	set_v6only(fd, 1);
	errno = 0;
	CHECK(connect(fd, (struct sockaddr *)&to, sizeof to) == -1 && errno == ENETUNREACH, "IPv6-only connect to %s", show(&to));
	close(fd);
	printf("ok v6only mapped ENETUNREACH\n");

	/* An IPv6-only socket bound to :: is the kernel's: its name is the kernel's [::]:PORT. */
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	set_v6only(fd, 1);
	struct sockaddr_in6 any = v6("::", 0);
	CHECK(bind(fd, (struct sockaddr *)&any, sizeof any) == 0, "IPv6-only bind to [::]:0");
	me = name_of(fd, 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&me.sin6_addr) && me.sin6_port != 0, "IPv6-only bound name %s", show(&me));
	close(fd);
	printf("ok v6only bind\n");

	/* IPv6 proper goes to the kernel, and works. */
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 to6 = v6(peer6, port);
	CHECK(connect(fd, (struct sockaddr *)&to6, sizeof to6) == 0, "connect to %s", show(&to6));
	them = name_of(fd, 1);
	CHECK(memcmp(&them.sin6_addr, &to6.sin6_addr, sizeof to6.sin6_addr) == 0, "IPv6 peer name %s", show(&them));
	echo(fd, 10000, "IPv6");
	close(fd);
	printf("ok ipv6 echo\n");

	/* ::ffff:127.0.0.1 is loopback: the kernel's, which refuses a port nobody listens on. */
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 lo = mapped("127.0.0.1", 1);
	errno = 0;
	CHECK(connect(fd, (struct sockaddr *)&lo, sizeof lo) == -1 && errno == ECONNREFUSED, "connect to %s", show(&lo));
	close(fd);
	printf("ok loopback ECONNREFUSED\n");

	printf("ok done\n");
	return 0;
}
