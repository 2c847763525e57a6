/*
 * exec_inherit.c: a connection inherited across exec, for the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   exec_inherit ADDRESS PORT        (PORT: an echo server that takes several connections)
 *   exec_inherit child FD            (exec'd by the first form: echoes 100 KB through FD, exits 0)
 *   exec_inherit stage2 FD GONE      (exec'd by the first form: GONE, made SOCK_CLOEXEC, must be closed; FD goes on)
 *   exec_inherit listen PORT         (listens on 0.0.0.0:PORT, prints "listening", waits until a connection is in
 *                                     the accept queue, and execl's itself as "accept FD")
 *   exec_inherit accept FD           (exec'd: accepts on the listener FD within 10 s, echoes until end of stream)
 *
 * Each step opens a connection of its own (the stack's: the parent's new sockets are accelerated again after a
 * hand-over), echoes through it, starts "child FD" by fork + execv, vfork + execvp and posix_spawn in turn, waits
 * for it, and echoes again. Last, with one connection open plainly and one SOCK_CLOEXEC, execl's itself without fork
 * as "stage2", which finds the first and not the second. Prints one line per step; exits 0 when all went as expected.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

static const char self[] = "/proc/self/exe";

static int connected(const struct sockaddr_in *server, int flags)
{
	int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
	CHECK(fd >= 0 && connect(fd, (const struct sockaddr *)server, sizeof *server) == 0, "connect");
	return fd;
}

static void wait_for(pid_t child, const char *how)
{
	int status = 0;
	CHECK(child > 0, "%s", how);
	CHECK(waitpid(child, &status, 0) == child, "%s: waitpid", how);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child exited 0 (status 0x%x)", how, status);
}

/* Starts "child FD" one way (fork, vfork or posix_spawn) and waits for it. The seeds keep the steps' bytes apart. */
static void step(const struct sockaddr_in *server, const char *how)
{
	char what[96], fd_text[16];
	int fd = connected(server, 0);
	snprintf(what, sizeof what, "before %s", how);
	echo_check(fd, 1000, 10, what);
	snprintf(fd_text, sizeof fd_text, "%d", fd);
	char *const args[] = { "exec_inherit", "child", fd_text, NULL };
	pid_t child = -1;
	if (strcmp(how, "fork + execv") == 0) {
		child = fork();
		if (child == 0) {
			execv(self, args);
			_exit(127);
		}
	} else if (strcmp(how, "vfork + execvp") == 0) {
		child = vfork();
		if (child == 0) {
			execvp(self, args);
			_exit(127);
		}
	} else {
		errno = posix_spawn(&child, self, NULL, NULL, args, environ);
		CHECK(errno == 0, "posix_spawn");
	}
	wait_for(child, how);
	snprintf(what, sizeof what, "the parent after %s", how);
	echo_check(fd, 100000, 11, what);
	CHECK(close(fd) == 0, "close");
}

/* A listener whose accept queue holds a connection at exec: the new program must find it there. */
static void listen_then_exec(int port)
{
	int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	CHECK(listener >= 0 && setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "socket");
	CHECK(bind(listener, (struct sockaddr *)&any, sizeof any) == 0 && listen(listener, 16) == 0, "bind and listen");
	printf("listening\n");
	struct pollfd p = { .fd = listener, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1, "a connection in the accept queue before exec");
	printf("ok a connection is queued at exec\n");
	char fd_text[16];
	snprintf(fd_text, sizeof fd_text, "%d", listener);
	execl(self, "exec_inherit", "accept", fd_text, (char *)NULL);
	CHECK(0, "execl");
}

static void accept_after_exec(int listener)
{
	struct pollfd p = { .fd = listener, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1, "the listener inherited across exec is readable");
	int conn = accept(listener, NULL, NULL);
	CHECK(conn >= 0, "accept on the listener inherited across exec");
	printf("ok the exec'd program accepted the connection queued at exec\n");
	char buf[65536];
	ssize_t n;
	while ((n = recv(conn, buf, sizeof buf, 0)) > 0)
		CHECK(send(conn, buf, (size_t)n, MSG_NOSIGNAL) == n, "echo");
	CHECK(n == 0 && close(conn) == 0, "the end of stream");
	printf("ok done\n");
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 3 && strcmp(argv[1], "child") == 0) {
		echo_check(atoi(argv[2]), 100000, 20, "the exec'd child on the inherited connection");
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "stage2") == 0) {
		int gone = atoi(argv[3]);
		CHECK(fcntl(gone, F_GETFD) == -1 && errno == EBADF, "the SOCK_CLOEXEC socket %d is closed after exec", gone);
		printf("ok the SOCK_CLOEXEC socket is gone after exec\n");
		int fd = atoi(argv[2]);
		echo_check(fd, 100000, 31, "the exec'd program on the inherited connection");
		CHECK(close(fd) == 0, "close");
		printf("ok done\n");
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "listen") == 0) {
		listen_then_exec(atoi(argv[2]));
		return 1;
	}
	if (argc == 3 && strcmp(argv[1], "accept") == 0) {
		accept_after_exec(atoi(argv[2]));
		return 0;
	}
	if (argc != 3)
		return fprintf(stderr, "usage: exec_inherit ADDRESS PORT | listen PORT\n"), 2;
	struct sockaddr_in server = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	CHECK(inet_pton(AF_INET, argv[1], &server.sin_addr) == 1, "address %s", argv[1]);

	step(&server, "fork + execv");
	step(&server, "vfork + execvp");
	step(&server, "posix_spawn");

	int kept = connected(&server, 0), gone = connected(&server, SOCK_CLOEXEC);
	echo_check(kept, 1000, 30, "before execl");
	echo_check(gone, 1000, 30, "the SOCK_CLOEXEC connection before execl");
	char kept_text[16], gone_text[16];
	snprintf(kept_text, sizeof kept_text, "%d", kept);
	snprintf(gone_text, sizeof gone_text, "%d", gone);
	execl(self, "exec_inherit", "stage2", kept_text, gone_text, (char *)NULL);
	CHECK(0, "execl");
}
