/*
 * epoll_rearm: a thread asleep in epoll_wait wakes when another thread re-arms an EPOLLONESHOT member that is
 * already readable (EPOLL_CTL_MOD), as on Linux, where a worker re-arming a connection must not leave the event loop
 * asleep. Under onload-run the sleeper is registered with the stack for the armed members only, so the shim's
 * epoll_ctl has to wake it.
 *
 * Usage: epoll_rearm ADDRESS PORT, with an echo server there. Prints "woke after N ms" and exits 0, or "FAIL: ..."
 * and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 5000

static int ep;
static volatile pid_t sleeper_tid;
static int woken_n = -1;
static uint32_t woken_events;
static long woken_ms;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(const char *what)
{
	printf("FAIL: %s (%s)\n", what, strerror(errno));
	exit(1);
}

static void *sleeper(void *arg)
{
	(void)arg;
	struct epoll_event out;
	sleeper_tid = (pid_t)syscall(SYS_gettid);
	long start = now_ms();
	woken_n = epoll_wait(ep, &out, 1, WAIT_MS);
	woken_ms = now_ms() - start;
	woken_events = woken_n == 1 ? out.events : 0;
	return NULL;
}

/* Whether the thread is asleep (state S in /proc): in epoll_wait's sleep, past its spin. */
static int asleep(pid_t tid)
{
	char path[64], stat[512];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	size_t n = fread(stat, 1, sizeof stat - 1, f);
	fclose(f);
	stat[n] = '\0';
	const char *close_paren = strrchr(stat, ')');
	return close_paren != NULL && close_paren[1] == ' ' && close_paren[2] == 'S';
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: epoll_rearm ADDRESS PORT\n");
		return 2;
	}
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1)
		fail("bad address");
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0)
		fail("connect");
	if ((ep = epoll_create1(0)) < 0)
		fail("epoll_create1");
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.fd = fd };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		fail("EPOLL_CTL_ADD");

	/* The echo of "a" reports once, and disarms the member. */
	char c;
	struct epoll_event out;
	if (send(fd, "a", 1, 0) != 1 || epoll_wait(ep, &out, 1, WAIT_MS) != 1 || !(out.events & EPOLLIN))
		fail("the first echo was not reported");
	if (recv(fd, &c, 1, 0) != 1 || c != 'a')
		fail("recv of the first echo");

	/* The echo of "b" arrives on the disarmed member: poll sees it, epoll_wait must not. */
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (send(fd, "b", 1, 0) != 1 || poll(&p, 1, WAIT_MS) != 1)
		fail("the second echo did not arrive");

	pthread_t t;
	if (pthread_create(&t, NULL, sleeper, NULL) != 0)
		fail("pthread_create");
	long deadline = now_ms() + WAIT_MS;
	while (sleeper_tid == 0 || !asleep(sleeper_tid))
		if (now_ms() > deadline)
			fail("the sleeper never slept");
	ev.events = EPOLLIN | EPOLLONESHOT;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0)
		fail("EPOLL_CTL_MOD");
	pthread_join(t, NULL);

	if (woken_n != 1 || !(woken_events & EPOLLIN)) {
		printf("FAIL: epoll_wait returned %d (events 0x%x) after %ld ms\n", woken_n, woken_events, woken_ms);
		return 1;
	}
	printf("woke after %ld ms\n", woken_ms);
	return 0;
}
