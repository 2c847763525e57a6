/*
 * vfork_probe.c: vfork() in a program whose socket is on the stack, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   vfork_probe ADDRESS PORT        (PORT: an echo server)
 *
 * The parent connects and echoes; its vforked child closes the inherited socket (as a shell closes fds before exec)
 * and execs /bin/true; the parent then echoes again through the same connection, which must still be there.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void echo(int fd, const char *what)
{
	char in[6];
	size_t got = 0;
	CHECK(send(fd, "hello!", 6, MSG_NOSIGNAL) == 6, "%s: send", what);
	while (got < sizeof in) {
		ssize_t n = recv(fd, in + got, sizeof in - got, 0);
		CHECK(n > 0, "%s: recv", what);
		got += (size_t)n;
	}
	CHECK(memcmp(in, "hello!", 6) == 0, "%s: the echo", what);
	printf("ok %s\n", what);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: vfork_probe ADDRESS PORT\n"), 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	struct sockaddr_in server = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	CHECK(inet_pton(AF_INET, argv[1], &server.sin_addr) == 1, "address");
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof server) == 0, "connect");
	echo(fd, "before vfork");
	pid_t child = vfork();
	if (child == 0) {
		close(fd);
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	CHECK(child > 0, "vfork");
	int status = 0;
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exec'd true");
	echo(fd, "after the child closed its copy and exec'd");
	close(fd);
	printf("ok done\n");
	return 0;
}
