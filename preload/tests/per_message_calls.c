/*
 * per_message_calls.c: a ping-pong client that makes, around every message, the socket calls some programs make per
 * message: ioctl FIONREAD (and SIOCOUTQ on TCP), getsockopt SO_ERROR (and SO_RCVBUF on TCP), setsockopt TCP_NODELAY
 * (IP_MULTICAST_TTL on UDP). The preload tests (tests/Onload.Tests/Preload/StackdumpTests.cs) run it under onload-run
 * against a kernel echo server and check with onload-stackdump that the stack allocates nothing while it runs.
 *
 *   per_message_calls tcp|udp PEER PORT
 *
 * Prints "connected", then exchanges 64-byte messages until killed; a call that fails or an echo that differs prints
 * why and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

enum { MESSAGE = 64 };

/* The calls around one message that do not move data; each must report what Linux would on an idle socket. */
static void side_calls(int fd, int tcp)
{
	int queued = -1;
	CHECK(ioctl(fd, FIONREAD, &queued) == 0 && queued == 0, "ioctl FIONREAD: %d", queued);
	int err = -1;
	socklen_t len = sizeof err;
	CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0, "getsockopt SO_ERROR: %d", err);
	int one = 1;
	if (tcp) {
		CHECK(ioctl(fd, SIOCOUTQ, &queued) == 0 && queued >= 0, "ioctl SIOCOUTQ: %d", queued);
		int rcvbuf = 0;
		len = sizeof rcvbuf;
		CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len) == 0 && rcvbuf > 0, "getsockopt SO_RCVBUF: %d", rcvbuf);
		CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "setsockopt TCP_NODELAY");
	} else {
		CHECK(setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &one, sizeof one) == 0, "setsockopt IP_MULTICAST_TTL");
	}
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0))
		return fprintf(stderr, "usage: per_message_calls tcp|udp PEER PORT\n"), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	int tcp = strcmp(argv[1], "tcp") == 0;
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3])) };
	CHECK(inet_pton(AF_INET, argv[2], &peer.sin_addr) == 1, "address %s", argv[2]);

	int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	CHECK(fd >= 0, "socket");
	CHECK(connect(fd, (struct sockaddr *)&peer, sizeof peer) == 0, "connect");
	printf("connected\n");

	char out[MESSAGE], in[MESSAGE];
	for (unsigned long n = 0;; n++) {
		for (int i = 0; i < MESSAGE; i++)
			out[i] = (char)pattern_at(n * MESSAGE + (size_t)i, 7);
		CHECK(send(fd, out, MESSAGE, 0) == MESSAGE, "send %lu", n);
		/* TCP may return the echo in pieces; a UDP echo is one datagram. */
		size_t got = 0;
		while (got < MESSAGE) {
			ssize_t r = recv(fd, in + got, MESSAGE - got, 0);
			CHECK(r > 0 && (tcp || r == MESSAGE), "recv %lu: %zd", n, r);
			got += (size_t)r;
		}
		CHECK(memcmp(in, out, MESSAGE) == 0, "echo %lu differs", n);
		side_calls(fd, tcp);
	}
}
