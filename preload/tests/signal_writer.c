/*
 * signal_writer.c: a SIGALRM handler that writes to an accelerated socket while the main thread streams through
 * the same socket, for the preload tests (tests/Onload.Tests/Preload/PreloadSignalTests.cs).
 *
 *   signal_writer ADDRESS PORT        (PORT: an echo server)
 *
 * The main thread sends 'x' bytes (at least 2 MB, until the handler has run 50 times) and reads the echo; every
 * 1 ms the handler sends "tick". The handler often lands
 * while the main thread is inside the stack: the shim must run it after, not inside (a deadlock or a corrupted
 * stack otherwise). At the end every byte must have come back: the x's and four letters per tick.
 * Prints "ticks N x M echoed T" and exits 0, or says what went wrong and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int fd;
static volatile sig_atomic_t ticks, tick_failures, tick_errno;

static void on_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	if (send(fd, "tick", 4, MSG_NOSIGNAL) == 4)
		ticks++;
	else {
		tick_failures++;
		tick_errno = errno;
	}
	errno = saved;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: signal_writer ADDRESS PORT\n"), 2;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1)
		return fprintf(stderr, "bad address\n"), 2;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
		return perror("connect"), 1;

	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { .it_interval = { .tv_usec = 1000 }, .it_value = { .tv_usec = 1000 } };
	setitimer(ITIMER_REAL, &it, NULL);

	static char block[1000], in[65536];
	memset(block, 'x', sizeof block);
	long x_sent = 0, x_back = 0, letters_back = 0, other = 0;
	/* At least 2 MB, and on until the handler has run 50 times (how long 2 MB takes depends on the machine), but
	 * no more than 200 MB: a handler that never runs shows in the count. */
	for (int i = 0; i < 200000 && (i < 2000 || ticks < 50); i++) {
		ssize_t n = send(fd, block, sizeof block, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return perror("send"), 1;
		}
		x_sent += n;
		n = recv(fd, in, sizeof in, MSG_DONTWAIT);
		for (ssize_t k = 0; k < n; k++)
			in[k] == 'x' ? x_back++ : strchr("tick", in[k]) != NULL ? letters_back++ : other++;
	}
	struct itimerval off = { 0 };
	setitimer(ITIMER_REAL, &off, NULL);
	sigset_t alarm;
	sigemptyset(&alarm);
	sigaddset(&alarm, SIGALRM);
	sigprocmask(SIG_BLOCK, &alarm, NULL); /* one generated before the timer stopped must not send after SHUT_WR */
	long expected = x_sent + 4L * ticks;
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = recv(fd, in, sizeof in, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t k = 0; k < n; k++)
			in[k] == 'x' ? x_back++ : strchr("tick", in[k]) != NULL ? letters_back++ : other++;
	}
	printf("ticks %d x %ld echoed %ld\n", (int)ticks, x_sent, x_back + letters_back + other);
	if (tick_failures || other || x_back != x_sent || letters_back != 4L * ticks || x_back + letters_back != expected)
		return printf("FAILED: %d failed ticks (errno %d), %ld x back of %ld, %ld tick letters for %d ticks, %ld other bytes\n",
			      (int)tick_failures, (int)tick_errno, x_back, x_sent, letters_back, (int)ticks, other), 1;
	return 0;
}
