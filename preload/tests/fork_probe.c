/*
 * fork_probe.c: fork() in a program whose socket is on the stack, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   fork_probe ADDRESS PORT        (PORT: an echo server)
 *
 * The parent connects and echoes a little; the child it forks tries the inherited socket (which a child cannot use
 * yet: it must fail, not take the parent's traffic), opens a socket of its own, echoes through it and exits with
 * exit() (atexit handlers run); then the parent's connection must still echo 100 KB intact.
 * Prints one line per step; exits 0 when every step went as expected.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in server;

static int echo(int fd, const char *what, size_t len)
{
	static char out[100000], in[100000];
	for (size_t i = 0; i < len; i++)
		out[i] = (char)('a' + (i * 7 + len) % 26);
	if (send(fd, out, len, MSG_NOSIGNAL) != (ssize_t)len)
		return printf("%s: send: %s\n", what, strerror(errno)), 0;
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, in + got, len - got, 0);
		if (n <= 0)
			return printf("%s: recv after %zu of %zu: %s\n", what, got, len, n == 0 ? "end of stream" : strerror(errno)), 0;
		got += (size_t)n;
	}
	if (memcmp(in, out, len) != 0)
		return printf("%s: the echo differs\n", what), 0;
	printf("%s: ok\n", what);
	return 1;
}

static int connected(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof server) != 0)
		return printf("connect: %s\n", strerror(errno)), -1;
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: fork_probe ADDRESS PORT\n"), 2;
	server.sin_family = AF_INET;
	server.sin_port = htons((uint16_t)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1)
		return fprintf(stderr, "bad address\n"), 2;
	setvbuf(stdout, NULL, _IONBF, 0);

	int fd = connected();
	if (fd < 0 || !echo(fd, "parent before fork", 100))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		ssize_t n = send(fd, "x", 1, MSG_NOSIGNAL);
		printf("child on the inherited socket: %zd %s\n", n, n < 0 ? strerror(errno) : "");
		int own = connected();
		int ok = own >= 0 && echo(own, "child on a socket of its own", 1000);
		close(own);
		close(fd);
		exit(ok ? 0 : 1); /* exit(), not _exit(): the stack's exit handlers run in the child */
	}
	int status = 0;
	waitpid(child, &status, 0);
	printf("child exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	if (!echo(fd, "parent after fork", 100000))
		return 1;
	close(fd);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
