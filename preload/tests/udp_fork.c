/*
 * udp_fork.c: a UDP server that forks, for the preload tests (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   udp_fork PORT
 *
 * Binds 0.0.0.0:PORT (on the stack under onload-run) and prints "bound"; answers one datagram as "parent: DATA",
 * forks; the child answers two as "child: DATA" through the inherited socket and exits; the parent waits for it and
 * answers one more as "parent after: DATA". Exits 0 when every step went as expected.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void answer(int fd, const char *who)
{
	char in[512], out[600];
	struct sockaddr_in from;
	socklen_t len = sizeof from;
	ssize_t n = recvfrom(fd, in, sizeof in - 1, 0, (struct sockaddr *)&from, &len);
	CHECK(n >= 0, "%s: recvfrom", who);
	in[n] = '\0';
	int m = snprintf(out, sizeof out, "%s: %s", who, in);
	CHECK(sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&from, len) == m, "%s: sendto", who);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return fprintf(stderr, "usage: udp_fork PORT\n"), 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&any, sizeof any) == 0, "socket and bind");
	printf("bound\n");
	answer(fd, "parent");
	pid_t child = fork();
	CHECK(child >= 0, "fork");
	if (child == 0) {
		answer(fd, "child");
		answer(fd, "child");
		exit(0);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exited 0");
	answer(fd, "parent after");
	printf("ok done\n");
	return 0;
}
