/*
 * onload-ext-echo: a TCP echo server that links the stack's C API (onload.h, libonload_ext.so) instead of running
 * under onload-run. It chooses per socket: PORT is served on the stack (onload_socket) and, with --kernel-port,
 * KPORT on the kernel (socket()), both through one onload_epoll set. Each accelerated connection is echoed by its
 * own thread through zero-copy receive (the stack's receive ring, lent and released) into zero-copy send (room in
 * the send ring): one copy, ring to ring. Each accepted connection is reported with onload_fd_stat.
 *
 *   onload-ext-echo [--kernel-port KPORT] [--spin] [--stack-name NAME] PORT
 *
 * Settings are onload-run's (ONLOAD_INTERFACE, ONLOAD_DRIVERD, ONLOAD_SPIN_US...); see the README.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <onload.h>

static int spin;

static void die(const char *what)
{
	fprintf(stderr, "onload-ext-echo: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int listen_on(int accelerated, int port)
{
	int fd = accelerated ? onload_socket(AF_INET, SOCK_STREAM, 0) : socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	onload_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (onload_bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
		die("bind");
	if (onload_listen(fd, 128) < 0)
		die("listen");
	return fd;
}

/* Echoes what the stack lends, piece by piece, into room the stack gives in its send ring. */
static int echo_zero_copy(int fd)
{
	struct onload_zc_iovec pieces[16];
	for (;;) {
		int n = onload_zc_recv(fd, pieces, 16, 0);
		if (n <= 0)
			return n;
		for (int i = 0; i < n; i++) {
			size_t done = 0;
			while (done < pieces[i].iov_len) {
				struct iovec room;
				if (onload_zc_send_alloc(fd, &room, MSG_NOSIGNAL) < 0)
					return -1;
				size_t k = pieces[i].iov_len - done < room.iov_len ? pieces[i].iov_len - done : room.iov_len;
				memcpy(room.iov_base, (const char *)pieces[i].iov_base + done, k);
				if (onload_zc_send(fd, k, NULL) < 0)
					return -1;
				done += k;
			}
			if (onload_zc_release(fd, &pieces[i].buf, 1) < 0)
				return -1;
		}
	}
}

/* A kernel connection: plain copies (onload_recv passes a kernel fd to libc). */
static int echo_copy(int fd)
{
	char buf[65536];
	for (;;) {
		ssize_t n = onload_recv(fd, buf, sizeof buf, 0);
		if (n <= 0)
			return (int)n;
		for (ssize_t done = 0; done < n;) {
			ssize_t k = onload_send(fd, buf + done, (size_t)(n - done), MSG_NOSIGNAL);
			if (k < 0)
				return -1;
			done += k;
		}
	}
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	if (spin)
		onload_thread_set_spin(ONLOAD_SPIN_ALL, 1);
	struct onload_stat s;
	int on_stack = onload_fd_stat(fd, &s);
	int rc = on_stack == 1 ? echo_zero_copy(fd) : echo_copy(fd);
	if (rc < 0)
		fprintf(stderr, "onload-ext-echo: fd %d: %s\n", fd, strerror(errno));
	onload_shutdown(fd, SHUT_WR);
	onload_close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	int kernel_port = 0, port = 0;
	const char *stack_name = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--kernel-port") == 0 && i + 1 < argc)
			kernel_port = atoi(argv[++i]);
		else if (strcmp(argv[i], "--spin") == 0)
			spin = 1;
		else if (strcmp(argv[i], "--stack-name") == 0 && i + 1 < argc)
			stack_name = argv[++i];
		else if (argv[i][0] != '-' && port == 0)
			port = atoi(argv[i]);
		else {
			fprintf(stderr, "usage: onload-ext-echo [--kernel-port KPORT] [--spin] [--stack-name NAME] PORT\n");
			return 2;
		}
	}
	if (port <= 0) {
		fprintf(stderr, "usage: onload-ext-echo [--kernel-port KPORT] [--spin] [--stack-name NAME] PORT\n");
		return 2;
	}
	if (stack_name != NULL && onload_set_stackname(ONLOAD_ALL_THREADS, ONLOAD_SCOPE_PROCESS, stack_name) < 0)
		die("onload_set_stackname");
	if (!onload_is_present())
		fprintf(stderr, "onload-ext-echo: the stack is not available: port %d is served by the kernel\n", port);
	int listeners[2] = { listen_on(1, port), kernel_port > 0 ? listen_on(0, kernel_port) : -1 };
	int ep = onload_epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = listeners[i] };
		if (listeners[i] >= 0 && onload_epoll_ctl(ep, EPOLL_CTL_ADD, listeners[i], &ev) < 0)
			die("epoll_ctl");
	}
	printf("listening on %d (%s)", port, onload_fd_stat(listeners[0], &(struct onload_stat){ 0 }) == 1 ? "stack" : "kernel");
	if (kernel_port > 0)
		printf(" and %d (kernel)", kernel_port);
	printf("\n");
	fflush(stdout);
	for (;;) {
		struct epoll_event ready[2];
		int n = onload_epoll_wait(ep, ready, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			int fd = onload_accept(ready[i].data.fd, NULL, NULL);
			if (fd < 0)
				continue;
			struct onload_stat s;
			if (onload_fd_stat(fd, &s) == 1)
				printf("accepted fd %d: stack %d '%s' endpoint %d state %d\n", fd, s.stack_id, s.stack_name,
				       s.endpoint_id, s.endpoint_state);
			else
				printf("accepted fd %d: kernel\n", fd);
			fflush(stdout);
			pthread_t t;
			if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0)
				die("pthread_create");
			pthread_detach(t);
		}
	}
}
