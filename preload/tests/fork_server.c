/*
 * fork_server.c: a pre-forking server (listen, then fork workers that accept), for the preload tests
 * (tests/Onload.Tests/Preload/PreloadForkTests.cs).
 *
 *   fork_server PORT WORKERS CONNECTIONS [queued] [poll|epoll] [reuseport]
 *
 * Listens on 0.0.0.0:PORT, prints "listening" ("queued": then waits until a connection waits in the accept queue,
 * so that it is there at the fork), forks WORKERS workers that loop: (with "poll": wait in poll() until the listener
 * is readable, as event-driven servers do; "epoll": in an epoll set the worker makes after the fork, as nginx's)
 * accept, read a request line, reply
 * "worker PID", echo the rest until the client's end of stream, close. Each worker reports a served connection to
 * the parent through a pipe; once CONNECTIONS are served the parent stops the workers (SIGTERM), reaps them and exits
 * 0. A worker that fails exits 1, and the parent then fails too.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

struct served {
	pid_t worker;
	size_t bytes;
};

enum { WAIT_NONE, WAIT_POLL, WAIT_EPOLL };

static void worker(int listener, int report, int waits)
{
	/* "epoll": a set of the worker's own, made after the fork, as an nginx worker's. */
	int ep = -1;
	if (waits == WAIT_EPOLL) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener };
		ep = epoll_create1(0);
		CHECK(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev) == 0, "worker %d: epoll", getpid());
	}
	for (;;) {
		struct pollfd p = { .fd = listener, .events = POLLIN };
		if (waits == WAIT_POLL && poll(&p, 1, -1) < 0 && errno == EINTR)
			continue;
		CHECK(waits != WAIT_POLL || p.revents == POLLIN, "worker %d: poll on the listener gave 0x%x", getpid(), p.revents);
		struct epoll_event ev;
		int ready = waits == WAIT_EPOLL ? epoll_wait(ep, &ev, 1, -1) : 1;
		if (ready < 0 && errno == EINTR)
			continue;
		CHECK(ready == 1 && (waits != WAIT_EPOLL || (ev.data.fd == listener && ev.events == EPOLLIN)),
		      "worker %d: epoll_wait on the listener", getpid());
		int conn = accept(listener, NULL, NULL);
		if (conn < 0 && errno == EINTR)
			continue;
		CHECK(conn >= 0, "worker %d: accept", getpid());
		char c = 0;
		for (size_t len = 0; c != '\n'; len++) {
			CHECK(len < 64, "worker %d: the request line is too long", getpid());
			CHECK(recv(conn, &c, 1, 0) == 1, "worker %d: the request line", getpid());
		}
		char reply[32];
		int len = snprintf(reply, sizeof reply, "worker %d\n", getpid());
		CHECK(send(conn, reply, (size_t)len, MSG_NOSIGNAL) == len, "worker %d: the reply line", getpid());
		struct served served = { .worker = getpid() };
		char buf[65536];
		ssize_t n;
		while ((n = recv(conn, buf, sizeof buf, 0)) > 0) {
			CHECK(send(conn, buf, (size_t)n, MSG_NOSIGNAL) == n, "worker %d: echo", getpid());
			served.bytes += (size_t)n;
		}
		CHECK(n == 0, "worker %d: recv", getpid());
		CHECK(close(conn) == 0, "worker %d: close", getpid());
		CHECK(write(report, &served, sizeof served) == sizeof served, "worker %d: report", getpid());
	}
}

int main(int argc, char **argv)
{
	int queued = 0, waits = WAIT_NONE, reuseport = 0;
	for (int i = 4; i < argc; i++) {
		if (strcmp(argv[i], "queued") == 0)
			queued = 1;
		else if (strcmp(argv[i], "poll") == 0)
			waits = WAIT_POLL;
		else if (strcmp(argv[i], "epoll") == 0)
			waits = WAIT_EPOLL;
		else if (strcmp(argv[i], "reuseport") == 0)
			reuseport = 1;
		else
			return fprintf(stderr, "usage: fork_server PORT WORKERS CONNECTIONS [queued] [poll|epoll] [reuseport]\n"), 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	int workers = atoi(argv[2]), connections = atoi(argv[3]);
	CHECK(workers > 0 && workers <= 64 && connections > 0, "WORKERS 1..64 and CONNECTIONS > 0");
	/* "reuseport": a listener per worker on the one port (SO_REUSEPORT), as nginx's "listen ... reuseport" makes
	 * them in its master before it forks the workers; each worker accepts on its own. */
	int listeners[64], one = 1;
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
	for (int i = 0; i < (reuseport ? workers : 1); i++) {
		listeners[i] = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(listeners[i] >= 0 && setsockopt(listeners[i], SOL_SOCKET, reuseport ? SO_REUSEPORT : SO_REUSEADDR, &one,
						      sizeof one) == 0, "socket");
		CHECK(bind(listeners[i], (struct sockaddr *)&any, sizeof any) == 0 && listen(listeners[i], 128) == 0,
		      "bind and listen");
	}
	int listener = listeners[0];
	printf("listening\n");
	if (queued) {
		struct pollfd p = { .fd = listener, .events = POLLIN };
		CHECK(poll(&p, 1, 10000) == 1, "a connection in the accept queue before the fork");
		printf("a connection is queued\n");
	}

	int report[2];
	CHECK(pipe(report) == 0, "pipe");
	pid_t pids[64];
	for (int i = 0; i < workers; i++) {
		pids[i] = fork();
		CHECK(pids[i] >= 0, "fork");
		if (pids[i] == 0) {
			close(report[0]);
			worker(reuseport ? listeners[i] : listener, report[1], waits);
		}
	}
	close(report[1]); /* a read of end of stream: every worker died */
	printf("forked %d workers\n", workers);

	for (int served = 0; served < connections; served++) {
		struct served s;
		ssize_t n = read(report[0], &s, sizeof s);
		CHECK(n == sizeof s, "a worker's report after %d served (%s)", served, n == 0 ? "every worker died" : "error");
		printf("worker %d served a connection: %zu bytes\n", s.worker, s.bytes);
	}
	for (int i = 0; i < workers; i++)
		kill(pids[i], SIGTERM);
	for (int i = 0; i < workers; i++) {
		int status;
		CHECK(waitpid(pids[i], &status, 0) == pids[i], "waitpid");
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM, "worker %d ended by our SIGTERM (status 0x%x)", pids[i], status);
	}
	printf("ok %d connections served\n", connections);
	return 0;
}
