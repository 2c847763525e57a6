/*
 * epoll_late_member.c: a thread asleep in epoll_wait on a set with no member yet, and another thread adding an
 * accelerated socket to it (what the .NET runtime's socket engine does), for the preload tests
 * (tests/Onload.Tests/Preload/PreloadEpollTests.cs).
 *
 *   epoll_late_member ADDRESS PORT
 *
 * The waiter thread sleeps in epoll_wait(-1) on an empty set. Once it is asleep (its /proc syscall entry names
 * epoll_wait or epoll_pwait), the main thread starts a non-blocking connect to ADDRESS:PORT, adds the socket for
 * EPOLLOUT and waits without touching it. Prints "woke EPOLLOUT" and exits 0 when the waiter reports the
 * connection; exits 1 if it has not within 10 s, 2 on a failing call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int ep;
static pid_t waiter_tid;
static struct epoll_event got;

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void *waiter(void *arg)
{
	(void)arg;
	__atomic_store_n(&waiter_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	if (epoll_wait(ep, &got, 1, -1) != 1)
		die("epoll_wait");
	return NULL;
}

/* Whether thread `tid` is blocked in epoll_wait or epoll_pwait (the first field of /proc/self/task/TID/syscall). */
static int asleep_in_epoll(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	FILE *f = fopen(path, "r");
	long nr = -1;
	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld", &nr) != 1)
		nr = -1;
	fclose(f);
	return nr == SYS_epoll_wait || nr == SYS_epoll_pwait;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: epoll_late_member ADDRESS PORT\n");
		return 2;
	}
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &peer.sin_addr) != 1) {
		fprintf(stderr, "epoll_late_member: bad address %s\n", argv[1]);
		return 2;
	}
	if ((ep = epoll_create1(0)) < 0)
		die("epoll_create1");
	pthread_t t;
	if (pthread_create(&t, NULL, waiter, NULL) != 0)
		die("pthread_create");

	const struct timespec ms = { 0, 1000000 };
	int waited_ms = 0;
	pid_t tid;
	while ((tid = __atomic_load_n(&waiter_tid, __ATOMIC_ACQUIRE)) == 0 || !asleep_in_epoll(tid)) {
		if (++waited_ms > 10000) {
			fprintf(stderr, "epoll_late_member: the waiter never slept in epoll_wait\n");
			return 2;
		}
		nanosleep(&ms, NULL);
	}

	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (s < 0)
		die("socket");
	if (connect(s, (struct sockaddr *)&peer, sizeof peer) == 0 || errno != EINPROGRESS)
		die("connect (expected EINPROGRESS)");
	struct epoll_event ev = { .events = EPOLLOUT, .data.fd = s };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0)
		die("epoll_ctl");

	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	int rc = pthread_timedjoin_np(t, NULL, &deadline);
	if (rc == ETIMEDOUT) {
		printf("the waiter still sleeps 10 s after the socket was added\n");
		return 1;
	}
	if (rc != 0 || got.data.fd != s || !(got.events & EPOLLOUT)) {
		printf("the waiter reported fd %d events 0x%x\n", got.data.fd, got.events);
		return 1;
	}
	printf("woke EPOLLOUT\n");
	return 0;
}
