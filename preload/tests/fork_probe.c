/*
 * fork_probe.c: fork() in a program whose connection is on the stack, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   fork_probe ADDRESS PORT exit|_exit|child-uses        (PORT: an echo server)
 *
 * The parent streams 20 MB of a pattern through the echo and checks every byte; it forks on the way.
 * exit, _exit: the fork comes mid-stream, with echoed bytes unread and sent bytes not echoed yet (16 KB sent just
 *   before); the child exits at once, by exit() (the shim's exit handler runs) or _exit().
 * child-uses: the fork comes with the stream drained; the child sends a marked line through the inherited connection,
 *   reads its echo, echoes through a connection of its own, closes both and exits 0 while the parent waits.
 * Then the parent finishes its stream, and echoes 100 KB through a new connection (the stack's again).
 * Prints one line per step; exits 0 when every step went as expected.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

enum { FORK_AT = 2 << 20, TOTAL = 20 << 20 };

static struct sockaddr_in server;

static int connected(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof server) == 0, "connect");
	return fd;
}

/* In the child: a marked line through the inherited connection comes back whole, then a connection of its own. */
static void child_uses(int inherited)
{
	char line[64], echoed[64];
	int len = snprintf(line, sizeof line, "child %d on the inherited connection\n", getpid());
	CHECK(send(inherited, line, (size_t)len, MSG_NOSIGNAL) == len, "child: send on the inherited connection");
	for (int got = 0; got < len;) {
		ssize_t n = recv(inherited, echoed + got, (size_t)(len - got), 0);
		CHECK(n > 0, "child: recv on the inherited connection after %d of %d bytes", got, len);
		got += (int)n;
	}
	CHECK(memcmp(line, echoed, (size_t)len) == 0, "child: the echo of its line: %.*s", len, echoed);
	printf("ok child on the inherited connection\n");
	int own = connected();
	echo_check(own, 1000, 3, "child on a connection of its own");
	CHECK(close(own) == 0 && close(inherited) == 0, "child: close");
}

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[3], "exit") != 0 && strcmp(argv[3], "_exit") != 0 && strcmp(argv[3], "child-uses") != 0))
		return fprintf(stderr, "usage: fork_probe ADDRESS PORT exit|_exit|child-uses\n"), 2;
	const char *mode = argv[3];
	setvbuf(stdout, NULL, _IONBF, 0);
	server.sin_family = AF_INET;
	server.sin_port = htons((uint16_t)atoi(argv[2]));
	CHECK(inet_pton(AF_INET, argv[1], &server.sin_addr) == 1, "address %s", argv[1]);

	struct stream s = { .fd = connected(), .seed = 1 };
	int unread = 0;
	if (strcmp(mode, "child-uses") == 0) {
		stream_until(&s, FORK_AT, FORK_AT, "the stream before fork");
	} else {
		/* Reading stops 128 KB short (little enough for the buffers on the way to hold), and the last send has no
		 * time to be echoed: bytes are unread and in flight at the fork. */
		stream_until(&s, FORK_AT, FORK_AT - (128 << 10), "the stream before fork");
		struct pollfd p = { .fd = s.fd, .events = POLLIN };
		CHECK(poll(&p, 1, 10000) == 1 && ioctl(s.fd, FIONREAD, &unread) == 0 && unread > 0, "echoed bytes waiting unread");
		stream_until(&s, s.sent + 16384, 0, "the last send before fork");
	}
	size_t in_flight = s.sent - s.received;

	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		if (strcmp(mode, "exit") == 0)
			exit(0); /* the shim's exit handler runs in the child */
		if (strcmp(mode, "_exit") == 0)
			_exit(0);
		child_uses(s.fd);
		exit(0);
	}
	printf("forked with %zu bytes sent and not echoed back to the program, %d of them unread\n", in_flight, unread);
	int status = 0;
	CHECK(waitpid(child, &status, 0) == child, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exited 0 (status 0x%x)", status);
	printf("ok child exited 0\n");

	stream_until(&s, TOTAL, TOTAL, "the parent's stream after fork");
	printf("ok parent's stream after fork: %zu bytes intact\n", s.received);
	int fresh = connected();
	echo_check(fresh, 100000, 2, "parent's new connection after fork");
	CHECK(close(fresh) == 0 && close(s.fd) == 0, "close");
	printf("ok done\n");
	return 0;
}
