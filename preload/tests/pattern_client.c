/*
 * pattern_client.c: a kernel client for the forking servers of the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs), run in the peer namespace without the shim.
 *
 *   pattern_client ADDRESS PORT BYTES echo|served
 *
 * Streams BYTES of a pattern seeded by its pid (so that concurrent clients differ) and checks the echo byte by byte,
 * then shuts its side down and expects the server's end of stream. "served": first sends a request line and reads the
 * reply line "worker PID" (fork_server's protocol). Prints "ok BYTES bytes intact" (and who served); exits 0 then.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

int main(int argc, char **argv)
{
	if (argc != 5 || (strcmp(argv[4], "echo") != 0 && strcmp(argv[4], "served") != 0))
		return fprintf(stderr, "usage: pattern_client ADDRESS PORT BYTES echo|served\n"), 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	struct sockaddr_in server = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	CHECK(inet_pton(AF_INET, argv[1], &server.sin_addr) == 1, "address %s", argv[1]);
	size_t bytes = strtoul(argv[3], NULL, 10);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&server, sizeof server) == 0, "connect");

	char served_by[64] = "";
	if (strcmp(argv[4], "served") == 0) {
		CHECK(send(fd, "request\n", 8, MSG_NOSIGNAL) == 8, "send the request line");
		size_t len = 0;
		while (len == 0 || served_by[len - 1] != '\n') {
			CHECK(len < sizeof served_by - 1, "the reply line is too long: %.*s", (int)len, served_by);
			ssize_t n = recv(fd, served_by + len, 1, 0);
			CHECK(n == 1, "the reply line after %zu bytes (%s)", len, n == 0 ? "end of stream" : "error");
			len++;
		}
		served_by[len - 1] = '\0';
		CHECK(strncmp(served_by, "worker ", 7) == 0, "the reply line: %s", served_by);
	}
	echo_check(fd, bytes, (unsigned)getpid(), "the echo");
	CHECK(shutdown(fd, SHUT_WR) == 0, "shutdown");
	char c;
	ssize_t n = recv(fd, &c, 1, 0);
	CHECK(n == 0, "the server's end of stream after the echo (recv gave %zd)", n);
	close(fd);
	printf("ok %zu bytes intact%s%s\n", bytes, served_by[0] ? ", served by " : "", served_by);
	return 0;
}
