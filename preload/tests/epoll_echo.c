/*
 * epoll_echo.c: a TCP echo server driven by one epoll set that mixes sockets with kernel fds, for the
 * preload tests (tests/Onload.Tests/Preload/PreloadEpollTests.cs): under onload-run its listener and
 * connections are accelerated while a pipe, an eventfd and a timerfd stay on the kernel.
 *
 *   epoll_echo PORT lt|et|oneshot
 *
 * Serves one connection: echoes it, writes a byte to its own pipe per chunk read, and when the peer's
 * FIN comes, closes the connection and signals its eventfd. Then prints one line of counts and exits
 * 0 when every pipe byte came back through epoll.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			if (poll(&p, 1, 10000) <= 0)
				die("poll for room");
			continue;
		}
		if (n < 0)
			die("send");
		buf += n;
		len -= (size_t)n;
	}
}

static void add(int epfd, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl ADD");
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: epoll_echo PORT lt|et|oneshot\n"), 2;
	int port = atoi(argv[1]);
	int et = strcmp(argv[2], "et") == 0, oneshot = strcmp(argv[2], "oneshot") == 0;
	uint32_t conn_events = EPOLLIN | EPOLLRDHUP | (et ? EPOLLET : 0) | (oneshot ? EPOLLONESHOT : 0);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 8) < 0)
		die("listener");

	int pfd[2];
	if (pipe2(pfd, O_NONBLOCK) < 0)
		die("pipe2");
	int efd = eventfd(0, EFD_NONBLOCK);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec its = { .it_interval = { 0, 20000000 }, .it_value = { 0, 20000000 } };
	if (efd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0)
		die("eventfd/timerfd");

	int epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	add(epfd, lfd, EPOLLIN);
	add(epfd, pfd[0], EPOLLIN);
	add(epfd, efd, EPOLLIN);
	add(epfd, tfd, EPOLLIN);
	printf("ready\n");
	fflush(stdout);

	static char buf[65536];
	long bytes = 0, chunks = 0, pipe_bytes = 0, ticks = 0, rdhup = 0, eventfd_seen = 0;
	int cfd = -1, served = 0;
	while (!(served && eventfd_seen && pipe_bytes == chunks && ticks > 0)) {
		struct epoll_event evs[3]; /* fewer than the fds: the shim must share the room fairly */
		int n = epoll_wait(epfd, evs, 3, 10000);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die(n == 0 ? "epoll_wait: nothing for 10 s" : "epoll_wait");
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			uint32_t ev = evs[i].events;
			if (fd == lfd) {
				int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
				if (c < 0 && errno == EAGAIN)
					continue;
				if (c < 0 || cfd >= 0)
					die("accept4 (or a second connection)");
				cfd = c;
				add(epfd, cfd, conn_events);
			} else if (fd == cfd) {
				if (ev & EPOLLRDHUP)
					rdhup++;
				int eof = 0;
				for (;;) {
					ssize_t r = read(cfd, buf, sizeof buf);
					if (r < 0 && errno == EAGAIN)
						break;
					if (r < 0)
						die("read");
					if (r == 0) {
						eof = 1;
						break;
					}
					send_all(cfd, buf, (size_t)r);
					bytes += r;
					chunks++;
					if (write(pfd[1], "x", 1) != 1)
						die("write pipe");
					if (!et)
						break; /* level-triggered and one-shot: one read per event */
				}
				if (eof) {
					epoll_ctl(epfd, EPOLL_CTL_DEL, cfd, NULL);
					close(cfd);
					cfd = -1;
					served = 1;
					uint64_t v = 1;
					if (write(efd, &v, sizeof v) != sizeof v)
						die("write eventfd");
				} else if (oneshot) {
					struct epoll_event re = { .events = conn_events, .data.fd = cfd };
					if (epoll_ctl(epfd, EPOLL_CTL_MOD, cfd, &re) < 0)
						die("epoll_ctl MOD");
				}
			} else if (fd == pfd[0]) {
				ssize_t r;
				while ((r = read(pfd[0], buf, sizeof buf)) > 0)
					pipe_bytes += r;
			} else if (fd == efd) {
				uint64_t v;
				if (read(efd, &v, sizeof v) == sizeof v)
					eventfd_seen += (long)v;
			} else if (fd == tfd) {
				uint64_t v;
				if (read(tfd, &v, sizeof v) == sizeof v)
					ticks += (long)v;
			}
		}
	}
	printf("bytes=%ld chunks=%ld pipe=%ld rdhup=%ld eventfd=%ld ticks=%ld\n", bytes, chunks, pipe_bytes, rdhup,
	       eventfd_seen, ticks);
	close(epfd);
	close(lfd);
	return 0;
}
