/*
 * io_calls.c: the socket calls past read/write, one after another on one connection to an echo server,
 * for the preload tests (tests/Onload.Tests/Preload/PreloadIoCallTests.cs). Built with _FORTIFY_SOURCE,
 * so read, recv, recvfrom and poll reach the shim as glibc's __*_chk variants.
 *
 *   io_calls ADDRESS PORT
 *
 * Prints "ok WHAT" per step and exits 0; a failed step prints why and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "check.h"

static char out[40000], in[40000];

/* Reads exactly len bytes with recv (fortified: __recv_chk). */
static void recv_exactly(int fd, char *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		char chunk[4096];
		size_t want = len - got < sizeof chunk ? len - got : sizeof chunk;
		ssize_t n = recv(fd, chunk, V(want), 0);
		CHECK(n > 0, "recv %zd after %zu of %zu", n, got, len);
		memcpy(buf + got, chunk, (size_t)n);
		got += (size_t)n;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: io_calls ADDRESS PORT\n"), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof out; i++)
		out[i] = (char)(i * 7 + i / 251);

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	inet_pton(AF_INET, argv[1], &sin.sin_addr);
	CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0, "connect");

	/* writev, then readv: 30,000 bytes in uneven pieces. */
	struct iovec wv[3] = { { out, 3 }, { out + 3, 9997 }, { out + 10000, 20000 } };
	CHECK(writev(fd, wv, 3) == 30000, "writev");
	size_t got = 0;
	while (got < 30000) {
		size_t left = 30000 - got, first = left < 777 ? left : 777;
		struct iovec rv[2] = { { in + got, first }, { in + got + first, left - first } };
		ssize_t n = readv(fd, rv, 2);
		CHECK(n > 0, "readv after %zu", got);
		got += (size_t)n;
	}
	CHECK(memcmp(in, out, 30000) == 0, "readv bytes");
	printf("ok writev readv\n");

	/* sendmsg; FIONREAD once it is all back; MSG_PEEK; recvmsg. */
	struct iovec sv[2] = { { out, 40 }, { out + 40, 60 } };
	struct msghdr sm = { .msg_iov = sv, .msg_iovlen = 2 };
	CHECK(sendmsg(fd, &sm, MSG_NOSIGNAL) == 100, "sendmsg");
	int queued = 0;
	for (int tries = 0; tries < 500 && queued < 100; tries++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		CHECK(poll(&p, V(1), 5000) == 1, "poll");
		CHECK(ioctl(fd, FIONREAD, &queued) == 0, "FIONREAD");
		if (queued < 100)
			usleep(2000);
	}
	CHECK(queued == 100, "FIONREAD says %d", queued);
	printf("ok sendmsg FIONREAD=%d\n", queued);
	char peek[10];
	CHECK(recv(fd, peek, sizeof peek, MSG_PEEK) == 10 && memcmp(peek, out, 10) == 0, "MSG_PEEK");
	CHECK(ioctl(fd, FIONREAD, &queued) == 0 && queued == 100, "MSG_PEEK consumed: FIONREAD %d", queued);
	struct iovec mv[2] = { { in, 30 }, { in + 30, 70 } };
	struct msghdr rm = { .msg_iov = mv, .msg_iovlen = 2 };
	CHECK(recvmsg(fd, &rm, 0) == 100 && memcmp(in, out, 100) == 0, "recvmsg");
	CHECK(rm.msg_flags == 0 && rm.msg_controllen == 0, "recvmsg flags");
	printf("ok MSG_PEEK recvmsg\n");

	int outq = -1;
	CHECK(ioctl(fd, SIOCOUTQ, &outq) == 0 && outq >= 0 && outq <= 100, "SIOCOUTQ %d", outq);
	printf("ok SIOCOUTQ=%d\n", outq);

	/* FIONBIO: on, a read finds nothing with EAGAIN, and F_GETFL agrees; off again. */
	int on = 1, off = 0;
	CHECK(ioctl(fd, FIONBIO, &on) == 0, "FIONBIO on");
	CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "F_GETFL after FIONBIO");
	errno = 0;
	CHECK(read(fd, in, 16) == -1 && errno == EAGAIN, "non-blocking read");
	CHECK(ioctl(fd, FIONBIO, &off) == 0, "FIONBIO off");
	printf("ok FIONBIO\n");

	/* dup: the copy carries the connection after the original closes; dup2, F_DUPFD and dup3 likewise. */
	int d = dup(fd);
	CHECK(d >= 0, "dup");
	CHECK(close(fd) == 0, "close original");
	CHECK(write(d, "hello", 5) == 5, "write on dup");
	char five[5];
	CHECK(read(d, five, V(5)) == 5 && memcmp(five, "hello", 5) == 0, "read on dup");
	CHECK(dup2(d, 100) == 100, "dup2");
	CHECK(close(d) == 0, "close dup");
	int f = fcntl(100, F_DUPFD, 200);
	CHECK(f >= 200, "F_DUPFD");
	CHECK(dup3(f, 101, O_CLOEXEC) == 101, "dup3");
	CHECK(fcntl(101, F_GETFD) & FD_CLOEXEC, "dup3 O_CLOEXEC");
	CHECK(close(f) == 0, "close F_DUPFD");
	CHECK(send(101, out, 1000, 0) == 1000, "send on dup3");
	recv_exactly(100, in, 1000);
	CHECK(memcmp(in, out, 1000) == 0, "recv on dup2");
	printf("ok dup dup2 dup3 F_DUPFD\n");

	/* ppoll and pselect wake for the echo. */
	sigset_t mask;
	sigemptyset(&mask);
	struct timespec ts = { 5, 0 };
	CHECK(write(101, "p", 1) == 1, "write for ppoll");
	struct pollfd p = { .fd = 100, .events = POLLIN };
	CHECK(ppoll(&p, V(1), &ts, &mask) == 1 && (p.revents & POLLIN), "ppoll");
	CHECK(read(100, five, 1) == 1 && five[0] == 'p', "read after ppoll");
	CHECK(write(101, "s", 1) == 1, "write for pselect");
	fd_set rd;
	FD_ZERO(&rd);
	FD_SET(100, &rd);
	CHECK(pselect(101, &rd, NULL, NULL, &ts, &mask) == 1 && FD_ISSET(100, &rd), "pselect");
	CHECK(ts.tv_sec == 5, "pselect left the timeout alone");
	struct sockaddr_in from;
	socklen_t fromlen = sizeof from;
	CHECK(recvfrom(100, five, V(1), 0, (struct sockaddr *)&from, &fromlen) == 1 && five[0] == 's', "recvfrom after pselect");
	printf("ok ppoll pselect\n");

	/* sendfile from a file, with and without an offset; the echo must match the file. */
	char path[] = "/tmp/io_calls.XXXXXX";
	int file = mkstemp(path);
	CHECK(file >= 0, "mkstemp");
	unlink(path);
	for (size_t i = 0; i < sizeof out; i++)
		out[i] = (char)('A' + (i * 13) % 26);
	CHECK(write(file, out, sizeof out) == (ssize_t)sizeof out, "write the file");
	off_t offset = 1000;
	CHECK(sendfile(101, file, &offset, 30000) == 30000 && offset == 31000, "sendfile with an offset");
	recv_exactly(100, in, 30000);
	CHECK(memcmp(in, out + 1000, 30000) == 0, "the echo of sendfile with an offset");
	CHECK(lseek(file, 5, SEEK_SET) == 5, "lseek");
	CHECK(sendfile(101, file, NULL, 20000) == 20000, "sendfile from the file position");
	CHECK(lseek(file, 0, SEEK_CUR) == 20005, "sendfile moved the file position by what it sent");
	recv_exactly(100, in, 20000);
	CHECK(memcmp(in, out + 5, 20000) == 0, "the echo of sendfile from the file position");
	close(file);
	printf("ok sendfile\n");

	/* epoll_pwait2 with a timespec timeout wakes for the echo. */
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = 100 }, ready;
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, 100, &ev) == 0, "epoll_ctl");
	struct timespec none = { 0, 1000000 };
	CHECK(epoll_pwait2(ep, &ready, 1, &none, NULL) == 0, "epoll_pwait2 times out with nothing there");
	CHECK(write(101, "e", 1) == 1, "write for epoll_pwait2");
	CHECK(epoll_pwait2(ep, &ready, 1, &ts, NULL) == 1 && ready.data.fd == 100, "epoll_pwait2");
	CHECK(read(100, five, 1) == 1 && five[0] == 'e', "read after epoll_pwait2");
	close(ep);
	printf("ok epoll_pwait2\n");

	/* close_range lets go of accelerated sockets as close does (the stack's debug lines say so). */
	int s1 = socket(AF_INET, SOCK_STREAM, 0), s2 = socket(AF_INET, SOCK_STREAM, 0), a = 300, b = 301;
	CHECK(s1 >= 0 && s2 >= 0 && dup2(s1, a) == a && dup2(s2, b) == b, "two sockets moved to fds in a row");
	CHECK(close(s1) == 0 && close(s2) == 0, "close the originals");
	CHECK(close_range((unsigned)a, (unsigned)b, 0) == 0, "close_range");
	CHECK(fcntl(a, F_GETFD) < 0 && errno == EBADF && fcntl(b, F_GETFD) < 0, "close_range closed both");
	printf("ok close_range %d %d\n", a, b);

	/* The end: FIN after the last byte; the echo server answers with its own. */
	CHECK(shutdown(101, SHUT_WR) == 0, "shutdown");
	CHECK(read(100, in, sizeof in) == 0, "EOF");
	close(100);
	close(101);
	printf("ok done\n");
	return 0;
}
