/*
 * udp_calls.c: the UDP socket calls, one after another, against a kernel UDP echo server, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadUdpTests.cs). Built with _FORTIFY_SOURCE, so recv, recvfrom and poll reach
 * the shim as glibc's __*_chk variants.
 *
 *   udp_calls PEER ECHO_PORT CLOSED_PORT GROUP GROUP_PORT
 *
 * ECHO_PORT on PEER echoes each datagram to its sender; nothing listens on CLOSED_PORT; the test sends datagrams to
 * GROUP:GROUP_PORT from PEER once this prints "joined". Prints "ok WHAT" per step and exits 0; a failed step prints
 * why and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char out[65536], in[65536];

static struct sockaddr_in endpoint(const char *address, int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, address, &sin.sin_addr);
	return sin;
}

static void fill(char *buf, size_t len, int seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(i * 31 + (size_t)seed * 7 + i / 253);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* Waits (poll, fortified) until fd reports one of `events` or an error; returns revents. */
static short wait_events(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n = poll(&p, V(1), timeout_ms);
	CHECK(n >= 0, "poll");
	return n == 0 ? 0 : p.revents;
}

int main(int argc, char **argv)
{
	if (argc != 6)
		return fprintf(stderr, "usage: udp_calls PEER ECHO_PORT CLOSED_PORT GROUP GROUP_PORT\n"), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *peer = argv[1], *group = argv[4];
	int echo_port = atoi(argv[2]), closed_port = atoi(argv[3]), group_port = atoi(argv[5]);
	struct sockaddr_in echo = endpoint(peer, echo_port);

	/* Unbound: getsockname says 0.0.0.0:0; the first sendto binds an ephemeral port. */
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(fd >= 0, "socket");
	struct sockaddr_in name;
	socklen_t nlen = sizeof name;
	CHECK(getsockname(fd, (struct sockaddr *)&name, &nlen) == 0 && name.sin_port == 0 && name.sin_addr.s_addr == 0,
	      "getsockname before bind: port %d", ntohs(name.sin_port));
	CHECK(wait_events(fd, POLLIN | POLLOUT, 0) == POLLOUT, "an empty socket is writable, not readable");
	fill(out, 100, 1);
	CHECK(sendto(fd, out, 100, 0, (struct sockaddr *)&echo, sizeof echo) == 100, "sendto");
	nlen = sizeof name;
	CHECK(getsockname(fd, (struct sockaddr *)&name, &nlen) == 0 && name.sin_port != 0, "getsockname after sendto");
	printf("ok implicit bind port=%d\n", ntohs(name.sin_port));

	/* The echo: POLLIN, FIONREAD is the datagram's length. */
	CHECK(wait_events(fd, POLLIN, 5000) & POLLIN, "the echo arrived");
	int queued = -1;
	CHECK(ioctl(fd, FIONREAD, &queued) == 0 && queued == 100, "FIONREAD %d", queued);
	printf("ok poll FIONREAD=%d\n", queued);

	/* MSG_PEEK with MSG_TRUNC: the datagram's real length, the first bytes copied, the datagram kept. */
	ssize_t n = recv(fd, in, V(10), MSG_PEEK | MSG_TRUNC);
	CHECK(n == 100 && memcmp(in, out, 10) == 0, "recv(MSG_PEEK|MSG_TRUNC) %zd", n);
	/* recvmsg into 50 bytes: 50 returned, MSG_TRUNC in msg_flags, the sender in msg_name. */
	struct sockaddr_in from;
	struct iovec iv[2] = { { in, 20 }, { in + 20, 30 } };
	struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = iv, .msg_iovlen = 2 };
	n = recvmsg(fd, &m, 0);
	CHECK(n == 50 && (m.msg_flags & MSG_TRUNC) && memcmp(in, out, 50) == 0, "recvmsg %zd flags %#x", n, m.msg_flags);
	CHECK(m.msg_namelen == sizeof from && from.sin_addr.s_addr == echo.sin_addr.s_addr && from.sin_port == echo.sin_port,
	      "msg_name is the echo server");
	CHECK(ioctl(fd, FIONREAD, &queued) == 0 && queued == 0, "FIONREAD after: %d", queued);
	CHECK(recv(fd, in, V(sizeof in), MSG_DONTWAIT) == -1 && errno == EAGAIN, "nothing left: EAGAIN");
	printf("ok MSG_PEEK MSG_TRUNC recvmsg\n");

	/* sendmmsg eight datagrams, recvmmsg their echoes (MSG_WAITFORONE), each checked. */
	enum { BATCH = 8 };
	static char bufs[BATCH][2000], back[BATCH][2000];
	struct iovec sv[BATCH], rv[BATCH];
	struct mmsghdr sm[BATCH], rm[BATCH];
	for (int i = 0; i < BATCH; i++) {
		fill(bufs[i], sizeof bufs[i], i + 10);
		sv[i] = (struct iovec){ bufs[i], (size_t)(i * 200 + 1) };
		sm[i] = (struct mmsghdr){ .msg_hdr = { .msg_name = &echo, .msg_namelen = sizeof echo, .msg_iov = &sv[i], .msg_iovlen = 1 } };
	}
	CHECK(sendmmsg(fd, sm, BATCH, 0) == BATCH, "sendmmsg");
	for (int i = 0; i < BATCH; i++)
		CHECK(sm[i].msg_len == sv[i].iov_len, "sendmmsg msg_len %d", i);
	int got = 0;
	long deadline = now_ms() + 10000;
	while (got < BATCH) {
		CHECK(now_ms() < deadline, "recvmmsg: %d of %d echoes", got, BATCH);
		for (int i = got; i < BATCH; i++) {
			rv[i] = (struct iovec){ back[i], sizeof back[i] };
			rm[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &rv[i], .msg_iovlen = 1 } };
		}
		struct timespec t = { 5, 0 };
		int r = recvmmsg(fd, rm + got, BATCH - got, MSG_WAITFORONE, &t);
		CHECK(r > 0, "recvmmsg");
		got += r;
	}
	for (int i = 0; i < BATCH; i++)
		CHECK(rm[i].msg_len == sv[i].iov_len && memcmp(back[i], bufs[i], sv[i].iov_len) == 0, "echo %d: %u bytes", i, rm[i].msg_len);
	printf("ok sendmmsg recvmmsg\n");

	/* recvmmsg's timeout bounds the wait for more than what came. */
	CHECK(send(fd, out, 10, 0) == -1 && errno == EDESTADDRREQ, "send on an unconnected socket");
	CHECK(sendto(fd, out, 10, 0, (struct sockaddr *)&echo, sizeof echo) == 10, "sendto");
	rv[0] = (struct iovec){ back[0], sizeof back[0] };
	rv[1] = (struct iovec){ back[1], sizeof back[1] };
	rm[0] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &rv[0], .msg_iovlen = 1 } };
	rm[1] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &rv[1], .msg_iovlen = 1 } };
	struct timespec t = { 0, 300 * 1000000L };
	long start = now_ms();
	CHECK(recvmmsg(fd, rm, 2, 0, &t) == 1 && rm[0].msg_len == 10, "recvmmsg with a timeout");
	CHECK(now_ms() - start >= 250, "recvmmsg waited for the timeout");
	printf("ok EDESTADDRREQ recvmmsg timeout\n");

	/* EMSGSIZE above the largest IPv4 datagram; the largest one goes (fragmented) and comes back. */
	fill(out, sizeof out, 3);
	CHECK(sendto(fd, out, 65508, 0, (struct sockaddr *)&echo, sizeof echo) == -1 && errno == EMSGSIZE, "EMSGSIZE");
	CHECK(sendto(fd, out, 8000, 0, (struct sockaddr *)&echo, sizeof echo) == 8000, "8000 bytes");
	CHECK(wait_events(fd, POLLIN, 5000) & POLLIN, "the 8000-byte echo");
	CHECK(recv(fd, in, V(sizeof in), 0) == 8000 && memcmp(in, out, 8000) == 0, "8000 bytes back");
	printf("ok EMSGSIZE\n");

	/* epoll: nothing, then EPOLLIN once the echo is queued. */
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl");
	struct epoll_event got_ev[2];
	CHECK(epoll_wait(ep, got_ev, 2, 0) == 0, "epoll: nothing queued");
	CHECK(sendto(fd, out, 33, 0, (struct sockaddr *)&echo, sizeof echo) == 33, "sendto");
	CHECK(epoll_wait(ep, got_ev, 2, 5000) == 1 && got_ev[0].data.fd == fd && (got_ev[0].events & EPOLLIN), "epoll: EPOLLIN");
	CHECK(read(fd, in, V(sizeof in)) == 33, "read");
	close(ep);
	printf("ok epoll\n");

	/* Options the stack keeps. */
	int one = 1, rcvbuf = 65536;
	CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0, "SO_RCVBUF");
	CHECK(setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) == 0, "SO_BROADCAST");
	printf("ok SO_RCVBUF SO_BROADCAST\n");

	/* connect, write and read, getpeername; AF_UNSPEC forgets the peer. */
	CHECK(connect(fd, (struct sockaddr *)&echo, sizeof echo) == 0, "connect");
	nlen = sizeof name;
	CHECK(getpeername(fd, (struct sockaddr *)&name, &nlen) == 0 && name.sin_port == echo.sin_port, "getpeername");
	struct sockaddr_in local;
	nlen = sizeof local;
	CHECK(getsockname(fd, (struct sockaddr *)&local, &nlen) == 0 && local.sin_addr.s_addr != 0, "getsockname once connected");
	CHECK(write(fd, out, 1472) == 1472, "write");
	struct iovec r1[2] = { { in, 1000 }, { in + 1000, 1000 } };
	CHECK(wait_events(fd, POLLIN, 5000) & POLLIN, "the echo");
	CHECK(readv(fd, r1, 2) == 1472 && memcmp(in, out, 1472) == 0, "readv");
	struct sockaddr unspec = { .sa_family = AF_UNSPEC };
	CHECK(connect(fd, &unspec, sizeof unspec) == 0, "connect(AF_UNSPEC)");
	nlen = sizeof name;
	CHECK(getpeername(fd, (struct sockaddr *)&name, &nlen) == -1 && errno == ENOTCONN, "getpeername after AF_UNSPEC");
	printf("ok connect AF_UNSPEC\n");

	/* An unbound socket sending to 127.0.0.1 goes to the kernel, and its datagram arrives. */
	int lo = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in lo_addr = endpoint("127.0.0.1", 0);
	CHECK(bind(lo, (struct sockaddr *)&lo_addr, sizeof lo_addr) == 0, "bind 127.0.0.1");
	nlen = sizeof lo_addr;
	CHECK(getsockname(lo, (struct sockaddr *)&lo_addr, &nlen) == 0, "getsockname");
	int to_lo = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(sendto(to_lo, "loop", 4, 0, (struct sockaddr *)&lo_addr, sizeof lo_addr) == 4, "sendto 127.0.0.1");
	CHECK(wait_events(lo, POLLIN, 5000) & POLLIN, "the loopback datagram");
	CHECK(recv(lo, in, V(sizeof in), 0) == 4 && memcmp(in, "loop", 4) == 0, "loopback datagram");
	/* A socket already on the stack reaches 127.0.0.1 through its port's kernel socket, and hears the answer. */
	CHECK(sendto(fd, "x", 1, 0, (struct sockaddr *)&lo_addr, sizeof lo_addr) == 1, "a bound accelerated socket sending to 127.0.0.1");
	CHECK(wait_events(lo, POLLIN, 5000) & POLLIN, "its datagram at the loopback socket");
	nlen = sizeof from;
	CHECK(recvfrom(lo, in, V(sizeof in), 0, (struct sockaddr *)&from, &nlen) == 1 && from.sin_port == local.sin_port,
	      "from the accelerated socket's port");
	CHECK(sendto(lo, "answer", 6, 0, (struct sockaddr *)&from, nlen) == 6, "the answer");
	CHECK(wait_events(fd, POLLIN, 5000) & POLLIN, "the answer at the accelerated socket");
	nlen = sizeof from;
	CHECK(recvfrom(fd, in, V(sizeof in), 0, (struct sockaddr *)&from, &nlen) == 6 && memcmp(in, "answer", 6) == 0 &&
	      from.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && from.sin_port == lo_addr.sin_port, "the answer, from 127.0.0.1");
	close(lo);
	close(to_lo);
	printf("ok loopback\n");

	/* connect to a closed port: the peer's ICMP port unreachable becomes ECONNREFUSED, as Linux. */
	int cfd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in closed = endpoint(peer, closed_port);
	CHECK(connect(cfd, (struct sockaddr *)&closed, sizeof closed) == 0, "connect to the closed port");
	CHECK(send(cfd, "a", 1, 0) == 1, "send");
	CHECK(wait_events(cfd, POLLIN, 5000) & POLLERR, "POLLERR after the ICMP error");
	int err = 0;
	socklen_t elen = sizeof err;
	CHECK(getsockopt(cfd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == ECONNREFUSED, "SO_ERROR %d", err);
	CHECK(send(cfd, "b", 1, 0) == 1, "send again");
	CHECK(wait_events(cfd, POLLIN, 5000) & POLLERR, "POLLERR again");
	CHECK(recv(cfd, in, V(sizeof in), 0) == -1 && errno == ECONNREFUSED, "recv: ECONNREFUSED");
	close(cfd);
	printf("ok ECONNREFUSED\n");

	/* Multicast: join (ip_mreqn), receive from a kernel sender; drop twice (EADDRNOTAVAIL the second time). */
	int mfd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in any = endpoint("0.0.0.0", group_port);
	CHECK(bind(mfd, (struct sockaddr *)&any, sizeof any) == 0, "bind the group's port");
	struct ip_mreqn mreqn = { .imr_ifindex = 0 };
	inet_pton(AF_INET, group, &mreqn.imr_multiaddr);
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreqn, sizeof mreqn) == 0, "IP_ADD_MEMBERSHIP ip_mreqn");
	struct ip_mreq mreq = { .imr_interface.s_addr = INADDR_ANY };
	inet_pton(AF_INET, "239.9.9.9", &mreq.imr_multiaddr);
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) == 0, "IP_ADD_MEMBERSHIP ip_mreq");
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mreq, sizeof mreq) == 0, "IP_DROP_MEMBERSHIP ip_mreq");
	unsigned char ttl = 4, loop = 0;
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) == 0, "IP_MULTICAST_TTL");
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) == 0, "IP_MULTICAST_LOOP");
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_MULTICAST_IF, &local.sin_addr, sizeof local.sin_addr) == 0,
	      "IP_MULTICAST_IF the stack's address");
	printf("joined\n");
	CHECK(wait_events(mfd, POLLIN, 20000) & POLLIN, "a datagram to the group");
	nlen = sizeof from;
	n = recvfrom(mfd, in, V(sizeof in), 0, (struct sockaddr *)&from, &nlen);
	CHECK(n == 15 && memcmp(in, "multicast hello", 15) == 0, "the group's datagram: %zd bytes", n);
	CHECK(from.sin_addr.s_addr == echo.sin_addr.s_addr, "sent by the peer");
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mreqn, sizeof mreqn) == 0, "IP_DROP_MEMBERSHIP");
	CHECK(setsockopt(mfd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mreqn, sizeof mreqn) == -1 && errno == EADDRNOTAVAIL,
	      "a second IP_DROP_MEMBERSHIP");
	close(mfd);
	printf("ok multicast\n");

	close(fd);
	printf("ok done\n");
	return 0;
}
