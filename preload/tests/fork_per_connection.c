/*
 * fork_per_connection.c: the classic forking server (accept, fork a child per connection, the parent closes its copy
 * at once), for the preload tests (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   fork_per_connection PORT CONNECTIONS
 *
 * Listens on 0.0.0.0:PORT, prints "listening", and for each of CONNECTIONS connections forks a child that echoes
 * until the client's end of stream, closes and exits 0. The parent closes its copy of each connection right after
 * the fork (which must neither close nor reset the child's), then reaps every child; exits 0 when all exited 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static void echo_until_end(int conn)
{
	char buf[65536];
	ssize_t n;
	while ((n = recv(conn, buf, sizeof buf, 0)) > 0)
		CHECK(send(conn, buf, (size_t)n, MSG_NOSIGNAL) == n, "child %d: echo", getpid());
	CHECK(n == 0, "child %d: recv", getpid());
	CHECK(close(conn) == 0, "child %d: close", getpid());
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return fprintf(stderr, "usage: fork_per_connection PORT CONNECTIONS\n"), 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	int connections = atoi(argv[2]), one = 1;
	CHECK(connections > 0, "CONNECTIONS > 0");
	int listener = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
	CHECK(listener >= 0 && setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "socket");
	CHECK(bind(listener, (struct sockaddr *)&any, sizeof any) == 0 && listen(listener, 128) == 0, "bind and listen");
	printf("listening\n");

	for (int i = 0; i < connections; i++) {
		int conn = accept(listener, NULL, NULL);
		CHECK(conn >= 0, "accept %d", i);
		pid_t child = fork();
		CHECK(child >= 0, "fork");
		if (child == 0) {
			close(listener);
			echo_until_end(conn);
			exit(0); /* exit(), not _exit(): the shim's exit handler runs in the child */
		}
		CHECK(close(conn) == 0, "the parent's close of connection %d", i);
		printf("connection %d: child %d\n", i, child);
	}
	for (int i = 0; i < connections; i++) {
		int status;
		pid_t child = wait(&status);
		CHECK(child > 0, "wait");
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d exited 0 (status 0x%x)", child, status);
	}
	printf("ok %d connections served\n", connections);
	return 0;
}
