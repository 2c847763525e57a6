/*
 * udp6_calls.c: AF_INET6 UDP sockets under the shim, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadInet6Tests.cs), against a UDP echo server reachable on both PEER4 and PEER6
 * at ECHO_PORT; nothing listens on CLOSED_PORT; HOST4 is this side's IPv4 address.
 *
 *   udp6_calls PEER4 PEER6 ECHO_PORT CLOSED_PORT HOST4 SERVE_PORT
 *
 * A dual-stack socket talks to PEER4 through ::ffff:PEER4 and sees every address as a v4-mapped sockaddr_in6 of 28
 * bytes, cut to a shorter buffer; an IPv6-only socket cannot reach it; one to PEER6 works as on the kernel. Last, it
 * serves: echoes each datagram to [::]:SERVE_PORT back to its sender until one says "end". Prints "ok WHAT" per
 * step ("serving" when it waits for datagrams) and exits 0; a failed step prints why and exits 1. The one step whose
 * result differs on purpose from the kernel's (an IPv6 destination on a socket bound on the stack) prints it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "check.h"
#include "inet6.h"

static char out[2048], in[2048];


static int same(const struct sockaddr_in6 *a, const struct sockaddr_in6 *b)
{
	return a->sin6_family == AF_INET6 && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0 &&
	       a->sin6_port == b->sin6_port && a->sin6_flowinfo == 0 && a->sin6_scope_id == 0;
}

/* A name as sockaddr_in6, the full length reported. */
static struct sockaddr_in6 name_of(int fd, int peer)
{
	struct sockaddr_in6 a;
	memset(&a, 0xAA, sizeof a);
	socklen_t len = sizeof a;
	int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &len) : getsockname(fd, (struct sockaddr *)&a, &len);
	CHECK(rc == 0, "%s", peer ? "getpeername" : "getsockname");
	CHECK(len == sizeof a && a.sin6_family == AF_INET6 && a.sin6_flowinfo == 0 && a.sin6_scope_id == 0,
	      "%s: length %u family %d", peer ? "getpeername" : "getsockname", (unsigned)len, a.sin6_family);
	return a;
}

static void fill(size_t len, int seed)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (char)(i * 31 + (size_t)seed * 7 + i / 253);
}

static void wait_readable(int fd, const char *what)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 5000) == 1, "%s: no datagram within 5 s", what);
}

/* The echo of the `len` bytes of `out` just sent, checked, and where it came from (full length checked too). */
static struct sockaddr_in6 echo_back(int fd, size_t len, const char *what)
{
	struct sockaddr_in6 from;
	memset(&from, 0xAA, sizeof from);
	socklen_t flen = sizeof from;
	wait_readable(fd, what);
	ssize_t n = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&from, &flen);
	CHECK(n == (ssize_t)len && memcmp(in, out, len) == 0, "%s: echo of %zd bytes, %zu sent", what, n, len);
	CHECK(flen == sizeof from, "%s: sender's length %u", what, (unsigned)flen);
	return from;
}

static void set_v6only(int fd, int on)
{
	CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == 0, "setsockopt IPV6_V6ONLY %d", on);
}

int main(int argc, char **argv)
{
	if (argc != 7)
		return fprintf(stderr, "usage: udp6_calls PEER4 PEER6 ECHO_PORT CLOSED_PORT HOST4 SERVE_PORT\n"), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *peer4 = argv[1], *peer6 = argv[2], *host4 = argv[5];
	int echo_port = atoi(argv[3]), closed_port = atoi(argv[4]), serve_port = atoi(argv[6]);
	struct sockaddr_in6 echo = mapped(peer4, echo_port);

	/* Unbound, a dual-stack socket's name is [::]:0; the first sendto binds a port, and the name stays [::]. */
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	CHECK(fd >= 0, "socket");
	struct sockaddr_in6 me = name_of(fd, 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&me.sin6_addr) && me.sin6_port == 0, "unbound name %s", show(&me));
	printf("ok unbound name %s\n", show(&me));
	fill(1472, 1);
	CHECK(sendto(fd, out, 1472, 0, (struct sockaddr *)&echo, sizeof echo) == 1472, "sendto %s", show(&echo));
	struct sockaddr_in6 from = echo_back(fd, 1472, "sendto");
	CHECK(same(&from, &echo), "recvfrom: sender %s", show(&from));
	me = name_of(fd, 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&me.sin6_addr) && me.sin6_port != 0, "name after sendto %s", show(&me));
	printf("ok sendto recvfrom from %s", show(&from));
	printf(" local %s\n", show(&me));

	/* A short address buffer gets the start of the address and the full length, as Linux. */
	fill(100, 2);
	CHECK(sendto(fd, out, 100, 0, (struct sockaddr *)&echo, sizeof echo) == 100, "sendto");
	wait_readable(fd, "short address");
	unsigned char part[8];
	socklen_t plen = sizeof part;
	CHECK(recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)part, &plen) == 100 && memcmp(in, out, 100) == 0, "recvfrom");
	CHECK(plen == sizeof(struct sockaddr_in6) && memcmp(part, &echo, sizeof part) == 0, "truncated address, length %u", (unsigned)plen);
	printf("ok truncated address\n");

	/* sendmsg gathers two buffers; recvmsg scatters the echo and names its sender in msg_name. */
	fill(300, 3);
	struct iovec sv[2] = { { out, 100 }, { out + 100, 200 } };
	struct msghdr sm = { .msg_name = &echo, .msg_namelen = sizeof echo, .msg_iov = sv, .msg_iovlen = 2 };
	CHECK(sendmsg(fd, &sm, 0) == 300, "sendmsg");
	wait_readable(fd, "recvmsg");
	struct iovec rv[2] = { { in, 50 }, { in + 50, sizeof in - 50 } };
	struct sockaddr_in6 named;
	memset(&named, 0xAA, sizeof named);
	struct msghdr rm = { .msg_name = &named, .msg_namelen = sizeof named, .msg_iov = rv, .msg_iovlen = 2 };
	CHECK(recvmsg(fd, &rm, 0) == 300 && memcmp(in, out, 300) == 0, "recvmsg");
	CHECK(rm.msg_namelen == sizeof named && same(&named, &echo), "recvmsg: msg_name %s length %u", show(&named), (unsigned)rm.msg_namelen);
	printf("ok sendmsg recvmsg\n");

	/* A plain sockaddr_in destination: Linux's udpv6_sendmsg sends it as IPv4 from a dual-stack socket. */
	struct sockaddr_in echo4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)echo_port) };
	inet_pton(AF_INET, peer4, &echo4.sin_addr);
	fill(200, 4);
	CHECK(sendto(fd, out, 200, 0, (struct sockaddr *)&echo4, sizeof echo4) == 200, "sendto a sockaddr_in");
	from = echo_back(fd, 200, "sockaddr_in destination");
	CHECK(same(&from, &echo), "sockaddr_in destination: sender %s", show(&from));
	printf("ok sockaddr_in destination\n");

	/* sendmmsg eight datagrams, recvmmsg their echoes: each with its bytes and a 28-byte sender. */
	enum { BATCH = 8 };
	struct mmsghdr mm[BATCH];
	struct iovec mv[BATCH];
	struct sockaddr_in6 senders[BATCH];
	memset(mm, 0, sizeof mm);
	fill(BATCH * 64, 5);
	for (int i = 0; i < BATCH; i++) {
		mv[i] = (struct iovec){ out + i * 64, (size_t)(16 + i * 6) };
		mm[i].msg_hdr = (struct msghdr){ .msg_name = &echo, .msg_namelen = sizeof echo, .msg_iov = &mv[i], .msg_iovlen = 1 };
	}
	CHECK(sendmmsg(fd, mm, BATCH, 0) == BATCH, "sendmmsg");
	static char landing[BATCH][64];
	int got = 0;
	while (got < BATCH) {
		wait_readable(fd, "recvmmsg");
		for (int i = got; i < BATCH; i++) {
			mv[i] = (struct iovec){ landing[i], sizeof landing[i] };
			memset(&senders[i], 0xAA, sizeof senders[i]);
			mm[i].msg_hdr = (struct msghdr){ .msg_name = &senders[i], .msg_namelen = sizeof senders[i], .msg_iov = &mv[i], .msg_iovlen = 1 };
		}
		int r = recvmmsg(fd, mm + got, BATCH - got, MSG_WAITFORONE, NULL);
		CHECK(r > 0, "recvmmsg");
		for (int i = got; i < got + r; i++) {
			CHECK(mm[i].msg_len == (unsigned)(16 + i * 6) && memcmp(landing[i], out + i * 64, mm[i].msg_len) == 0,
			      "recvmmsg datagram %d: %u bytes", i, mm[i].msg_len);
			CHECK(mm[i].msg_hdr.msg_namelen == sizeof senders[i] && same(&senders[i], &echo), "recvmmsg datagram %d from %s", i,
			      show(&senders[i]));
		}
		got += r;
	}
	printf("ok sendmmsg recvmmsg\n");

	/* IPV6_V6ONLY cannot change once the socket has a port (Linux: EINVAL). */
	int on = 1;
	errno = 0;
	CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == -1 && errno == EINVAL, "IPV6_V6ONLY after the port");
	printf("ok V6ONLY after bind EINVAL\n");

	/* The same socket, already bound, given an IPv6 destination: the kernel sends it; the stack cannot. */
	struct sockaddr_in6 echo6 = v6(peer6, echo_port);
	errno = 0;
	ssize_t sent = sendto(fd, out, 10, 0, (struct sockaddr *)&echo6, sizeof echo6);
	printf("ok ipv6 destination on a bound socket: %s\n", sent == 10 ? "sent" : strerrorname_np(errno));
	close(fd);

	/* Connected through ::ffff:PEER4: its names are v4-mapped, the local one this host's address. */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	CHECK(connect(fd, (struct sockaddr *)&echo, sizeof echo) == 0, "connect to %s", show(&echo));
	me = name_of(fd, 0);
	struct sockaddr_in6 host = mapped(host4, ntohs(me.sin6_port));
	CHECK(same(&me, &host) && me.sin6_port != 0, "connected local name %s", show(&me));
	struct sockaddr_in6 them = name_of(fd, 1);
	CHECK(same(&them, &echo), "peer name %s", show(&them));
	fill(1000, 6);
	CHECK(send(fd, out, 1000, 0) == 1000, "send");
	wait_readable(fd, "connected");
	CHECK(recv(fd, in, sizeof in, 0) == 1000 && memcmp(in, out, 1000) == 0, "recv");
	printf("ok connected names local %s", show(&me));
	printf(" peer %s echo\n", show(&them));
	close(fd);

	/* A connected socket hears of the peer's closed port: ECONNREFUSED, as Linux. */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	struct sockaddr_in6 closed = mapped(peer4, closed_port);
	CHECK(connect(fd, (struct sockaddr *)&closed, sizeof closed) == 0, "connect to %s", show(&closed));
	CHECK(send(fd, out, 10, 0) == 10, "send to the closed port");
	struct pollfd p = { .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLERR), "POLLERR after the port unreachable");
	errno = 0;
	CHECK(recv(fd, in, sizeof in, MSG_DONTWAIT) == -1 && errno == ECONNREFUSED, "recv after the port unreachable");
	close(fd);
	printf("ok ECONNREFUSED\n");

	/* IPv4 multicast options on a dual-stack socket work as on an AF_INET one (Linux passes them to IPv4). */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	struct ip_mreq mreq = { .imr_interface.s_addr = htonl(INADDR_ANY) };
	inet_pton(AF_INET, "239.1.2.4", &mreq.imr_multiaddr);
	CHECK(setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) == 0, "IP_ADD_MEMBERSHIP");
	CHECK(setsockopt(fd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mreq, sizeof mreq) == 0, "IP_DROP_MEMBERSHIP");
	errno = 0;
	CHECK(setsockopt(fd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mreq, sizeof mreq) == -1 && errno == EADDRNOTAVAIL, "a second drop");
	close(fd);
	printf("ok IP_ADD_MEMBERSHIP\n");

	/* An IPv6-only socket has no IPv4 (Linux's udpv6_sendmsg: ENETUNREACH); bound to ::, its name is the kernel's. */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	set_v6only(fd, 1);
	errno = 0;
	CHECK(sendto(fd, out, 10, 0, (struct sockaddr *)&echo, sizeof echo) == -1 && errno == ENETUNREACH, "IPv6-only sendto %s", show(&echo));
	close(fd);
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	set_v6only(fd, 1);
	struct sockaddr_in6 any = v6("::", 0);
	CHECK(bind(fd, (struct sockaddr *)&any, sizeof any) == 0, "IPv6-only bind to [::]:0");
	me = name_of(fd, 0);
	CHECK(IN6_IS_ADDR_UNSPECIFIED(&me.sin6_addr) && me.sin6_port != 0, "IPv6-only bound name %s", show(&me));
	close(fd);
	printf("ok v6only ENETUNREACH bind\n");

	/* IPv6 proper, from a socket not bound yet: the kernel's, and it works. */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	fill(500, 7);
	CHECK(sendto(fd, out, 500, 0, (struct sockaddr *)&echo6, sizeof echo6) == 500, "sendto %s", show(&echo6));
	from = echo_back(fd, 500, "IPv6");
	CHECK(same(&from, &echo6), "IPv6 sender %s", show(&from));
	close(fd);
	printf("ok ipv6 echo\n");

	/* An IPv6 group's datagrams are the kernel's: a socket not bound yet joins there (and binds there after), one
	 * bound on the stack cannot join (the kernel would: the result is printed). */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	struct ipv6_mreq group = { .ipv6mr_interface = 0 };
	inet_pton(AF_INET6, "ff02::1:3", &group.ipv6mr_multiaddr);
	CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &group, sizeof group) == 0, "IPV6_JOIN_GROUP before bind");
	CHECK(bind(fd, (struct sockaddr *)&any, sizeof any) == 0, "bind after IPV6_JOIN_GROUP");
	close(fd);
	printf("ok IPV6_JOIN_GROUP before bind\n");
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	CHECK(bind(fd, (struct sockaddr *)&any, sizeof any) == 0, "bind to [::]:0");
	errno = 0;
	int joined = setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &group, sizeof group) == 0;
	printf("ok IPV6_JOIN_GROUP on a bound socket: %s\n", joined ? "joined" : strerrorname_np(errno));
	close(fd);

	/* A server on [::]:SERVE_PORT: each datagram back to where it came from, until "end". */
	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	struct sockaddr_in6 serve = v6("::", serve_port);
	CHECK(bind(fd, (struct sockaddr *)&serve, sizeof serve) == 0, "bind to %s", show(&serve));
	printf("serving\n");
	int served = 0;
	struct sockaddr_in6 client;
	for (;;) {
		socklen_t clen = sizeof client;
		memset(&client, 0xAA, sizeof client);
		ssize_t n = recvfrom(fd, in, sizeof in, 0, (struct sockaddr *)&client, &clen);
		CHECK(n >= 0 && clen == sizeof client && client.sin6_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&client.sin6_addr),
		      "serving: recvfrom %zd from %s, length %u", n, show(&client), (unsigned)clen);
		if (n == 3 && memcmp(in, "end", 3) == 0)
			break;
		CHECK(sendto(fd, in, (size_t)n, 0, (struct sockaddr *)&client, clen) == n, "serving: sendto %s", show(&client));
		served++;
	}
	close(fd);
	printf("ok served %d from %s\n", served, show(&client));
	printf("ok done\n");
	return 0;
}
