/*
 * errno_probe.c: socket calls that fail, one line per outcome, so that a run on the kernel's TCP and a run under
 * onload-run can be compared line for line (tests/Onload.Tests/Preload/PreloadErrnoTests.cs).
 *
 *   errno_probe serve PORT            the peer: a kernel server whose connections obey their first byte
 *   errno_probe probe ADDRESS PORT    the calls, against "serve" on ADDRESS:PORT; CLOSED_PORT is PORT + 1
 *
 * Each line is "CASE: OUTCOME" where OUTCOME names a result or an errno (never a number that differs between
 * runs, such as an ephemeral port). A case that cannot even be set up prints "CASE: SETUP <errno>".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server, closed_port;

static const char *name_of(int e)
{
	static char other[32];
	switch (e) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EINPROGRESS: return "EINPROGRESS";
	case EALREADY: return "EALREADY";
	case EISCONN: return "EISCONN";
	case ENOTCONN: return "ENOTCONN";
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNRESET: return "ECONNRESET";
	case EPIPE: return "EPIPE";
	case EADDRINUSE: return "EADDRINUSE";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EINVAL: return "EINVAL";
	case EBADF: return "EBADF";
	case EFAULT: return "EFAULT";
	case EINTR: return "EINTR";
	case ENOPROTOOPT: return "ENOPROTOOPT";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EDESTADDRREQ: return "EDESTADDRREQ";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENOENT: return "ENOENT";
	default: snprintf(other, sizeof other, "errno%d", e); return other;
	}
}

/* "-1 ENAME" for a failed call, "ok" (or the count) otherwise. */
static void report(const char *what, long r)
{
	if (r < 0)
		printf("%s: -1 %s\n", what, name_of(errno));
	else
		printf("%s: %ld\n", what, r);
	fflush(stdout);
}

static int tcp_socket(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		printf("socket: -1 %s\n", name_of(errno));
		exit(1);
	}
	return fd;
}

static int connected(char command)
{
	int fd = tcp_socket();
	if (connect(fd, (struct sockaddr *)&server, sizeof server) != 0 || write(fd, &command, 1) != 1) {
		printf("SETUP connect/command %c: %s\n", command, name_of(errno));
		exit(1);
	}
	return fd;
}

/* Waits for any of events, at most ms; returns revents (0 on timeout). */
static short wait_for(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	return poll(&p, 1, ms) == 1 ? p.revents : 0;
}

static int so_error(int fd)
{
	int e = -1;
	socklen_t len = sizeof e;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
		return -errno;
	return e;
}

static void set_nonblocking(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static volatile sig_atomic_t sigpipes, alarms;
static void on_sigpipe(int sig) { (void)sig; sigpipes++; }
static void on_alarm(int sig) { (void)sig; alarms++; }

static void probe_connect(void)
{
	int fd = tcp_socket();
	report("connect to a closed port", connect(fd, (struct sockaddr *)&closed_port, sizeof closed_port));
	close(fd);

	fd = tcp_socket();
	set_nonblocking(fd);
	report("non-blocking connect to a closed port", connect(fd, (struct sockaddr *)&closed_port, sizeof closed_port));
	short ev = wait_for(fd, POLLOUT, 5000);
	printf("its poll: %s%s%s\n", ev & POLLOUT ? "POLLOUT " : "", ev & POLLERR ? "POLLERR " : "", ev & POLLHUP ? "POLLHUP" : "");
	printf("its SO_ERROR: %s\n", name_of(so_error(fd)));
	printf("its SO_ERROR again: %s\n", name_of(so_error(fd)));
	close(fd);

	fd = tcp_socket();
	set_nonblocking(fd);
	report("non-blocking connect to a listener", connect(fd, (struct sockaddr *)&server, sizeof server));
	ev = wait_for(fd, POLLOUT, 5000);
	printf("its poll: %s%s\n", ev & POLLOUT ? "POLLOUT " : "", ev & POLLERR ? "POLLERR" : "");
	printf("its SO_ERROR: %s\n", name_of(so_error(fd)));
	/* Linux: the first connect after the handshake ended says 0, the next EISCONN. */
	report("connect again once connected", connect(fd, (struct sockaddr *)&server, sizeof server));
	report("and again", connect(fd, (struct sockaddr *)&server, sizeof server));
	char buf[16];
	report("recv with nothing there", recv(fd, buf, sizeof buf, 0));
	report("listen on a connected socket", listen(fd, 1));
	close(fd);
}

static void probe_unconnected(void)
{
	int fd = tcp_socket();
	char buf[16];
	struct sockaddr_in peer;
	socklen_t len = sizeof peer;
	report("getpeername unconnected", getpeername(fd, (struct sockaddr *)&peer, &len));
	report("recv unconnected", recv(fd, buf, sizeof buf, 0));
	report("send unconnected (MSG_NOSIGNAL)", send(fd, "x", 1, MSG_NOSIGNAL));
	report("shutdown unconnected", shutdown(fd, SHUT_RDWR));
	report("accept on a socket not listening", accept(fd, NULL, NULL));
	struct sockaddr_in any = { .sin_family = AF_INET };
	report("bind to port 0", bind(fd, (struct sockaddr *)&any, sizeof any));
	report("bind again", bind(fd, (struct sockaddr *)&any, sizeof any));
	close(fd);

	fd = tcp_socket();
	struct sockaddr_in elsewhere = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a636363) };
	report("bind to an address not ours", bind(fd, (struct sockaddr *)&elsewhere, sizeof elsewhere));
	report("bind with a short length", bind(fd, (struct sockaddr *)&any, 4));
	close(fd);

	fd = tcp_socket();
	report("setsockopt of an unknown option", setsockopt(fd, SOL_SOCKET, 12345, &(int){ 1 }, sizeof(int)));
	report("setsockopt TCP_NODELAY with a short length", setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(char){ 1 }, 1));
	int type = 0;
	len = sizeof type;
	report("getsockopt SO_TYPE", getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : -1);
	close(fd);
	report("close twice", close(fd));
	report("recv on a closed fd", recv(fd, buf, sizeof buf, 0));
}

static void probe_addresses(int port)
{
	struct sockaddr_in here = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(port + 2)) };
	int a = tcp_socket();
	report("bind a listener", bind(a, (struct sockaddr *)&here, sizeof here));
	report("listen", listen(a, 4));
	struct sockaddr_in name;
	socklen_t name_len = sizeof name;
	getsockname(a, (struct sockaddr *)&name, &name_len);
	char text[INET_ADDRSTRLEN];
	printf("the listener's name: %s:%d\n", inet_ntop(AF_INET, &name.sin_addr, text, sizeof text), ntohs(name.sin_port) - port);
	int b = tcp_socket();
	report("bind a second socket to its port", bind(b, (struct sockaddr *)&here, sizeof here));
	close(b);
	b = tcp_socket();
	setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	report("... with SO_REUSEADDR, the listener without", bind(b, (struct sockaddr *)&here, sizeof here));
	close(b);
	close(a);

	here.sin_port = htons((uint16_t)(port + 3));
	a = tcp_socket();
	b = tcp_socket();
	setsockopt(a, SOL_SOCKET, SO_REUSEPORT, &(int){ 1 }, sizeof(int));
	setsockopt(b, SOL_SOCKET, SO_REUSEPORT, &(int){ 1 }, sizeof(int));
	report("SO_REUSEPORT: bind the first", bind(a, (struct sockaddr *)&here, sizeof here));
	report("SO_REUSEPORT: bind the second", bind(b, (struct sockaddr *)&here, sizeof here));
	report("SO_REUSEPORT: the first listens", listen(a, 4));
	report("SO_REUSEPORT: the second listens", listen(b, 4));
	int c = tcp_socket();
	report("SO_REUSEPORT: bind a third without it", bind(c, (struct sockaddr *)&here, sizeof here));
	close(c);
	c = tcp_socket();
	setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	report("SO_REUSEPORT: bind a third with SO_REUSEADDR only", bind(c, (struct sockaddr *)&here, sizeof here));
	close(c);
	c = tcp_socket();
	setsockopt(c, SOL_SOCKET, SO_REUSEPORT, &(int){ 1 }, sizeof(int));
	report("SO_REUSEPORT: bind a third with it", bind(c, (struct sockaddr *)&here, sizeof here));
	close(c);
	close(a);
	report("SO_REUSEPORT: after closing one, bind without it", bind(c = tcp_socket(), (struct sockaddr *)&here, sizeof here));
	close(c);
	close(b);
	report("SO_REUSEPORT: after closing all, bind without it", bind(c = tcp_socket(), (struct sockaddr *)&here, sizeof here));
	close(c);

	/* SO_REUSEADDR shares a port among sockets not listening; only one of them may listen. */
	here.sin_port = htons((uint16_t)(port + 4));
	a = tcp_socket();
	b = tcp_socket();
	setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	report("SO_REUSEADDR: bind the first", bind(a, (struct sockaddr *)&here, sizeof here));
	report("SO_REUSEADDR: bind the second", bind(b, (struct sockaddr *)&here, sizeof here));
	report("SO_REUSEADDR: the first listens", listen(a, 4));
	report("SO_REUSEADDR: the second listens", listen(b, 4));
	c = tcp_socket();
	setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	report("SO_REUSEADDR: bind a third beside the listener", bind(c, (struct sockaddr *)&here, sizeof here));
	close(c);
	close(a);
	close(b);

	/* A connection bound to its port holds it: another socket binds it beside only if both set SO_REUSEADDR. */
	here.sin_port = htons((uint16_t)(port + 6));
	for (int reuse = 0; reuse < 2; reuse++) {
		a = tcp_socket();
		b = tcp_socket();
		if (reuse) {
			setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
			setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
		}
		const char *with = reuse ? "with SO_REUSEADDR" : "without SO_REUSEADDR";
		char what[96];
		snprintf(what, sizeof what, "a connection %s: bind its port", with);
		report(what, bind(a, (struct sockaddr *)&here, sizeof here));
		if (connect(a, (struct sockaddr *)&server, sizeof server) != 0 || write(a, "e", 1) != 1) {
			printf("SETUP connect from a bound port: %s\n", name_of(errno));
			exit(1);
		}
		snprintf(what, sizeof what, "a connection %s: bind another socket beside it", with);
		report(what, bind(b, (struct sockaddr *)&here, sizeof here));
		close(b);
		/* A reset leaves no TIME_WAIT to hold the port into the next run. */
		setsockopt(a, SOL_SOCKET, SO_LINGER, &(struct linger){ .l_onoff = 1, .l_linger = 0 }, sizeof(struct linger));
		close(a);
	}

	/* UDP: either option, set on both, shares the port. */
	here.sin_port = htons((uint16_t)(port + 5));
	for (int option = 0; option < 3; option++) {
		const char *names[] = { "no option", "SO_REUSEADDR", "SO_REUSEPORT" };
		int d[2];
		for (int i = 0; i < 2; i++) {
			d[i] = socket(AF_INET, SOCK_DGRAM, 0);
			if (option > 0)
				setsockopt(d[i], SOL_SOCKET, option == 1 ? SO_REUSEADDR : SO_REUSEPORT, &(int){ 1 }, sizeof(int));
		}
		char what[80];
		snprintf(what, sizeof what, "UDP with %s: bind the first", names[option]);
		report(what, bind(d[0], (struct sockaddr *)&here, sizeof here));
		snprintf(what, sizeof what, "UDP with %s: bind the second", names[option]);
		report(what, bind(d[1], (struct sockaddr *)&here, sizeof here));
		close(d[0]);
		close(d[1]);
	}
}

static void probe_reset(void)
{
	char buf[64];
	/* The server resets at once: the pending error comes out of recv first, then end of stream. */
	int fd = connected('r');
	short ev = wait_for(fd, POLLIN, 5000);
	printf("reset: poll: %s%s%s\n", ev & POLLIN ? "POLLIN " : "", ev & POLLERR ? "POLLERR " : "", ev & POLLHUP ? "POLLHUP" : "");
	report("reset: recv", recv(fd, buf, sizeof buf, 0));
	report("reset: recv again", recv(fd, buf, sizeof buf, 0));
	report("reset: send (MSG_NOSIGNAL)", send(fd, "x", 1, MSG_NOSIGNAL));
	close(fd);

	fd = connected('r');
	wait_for(fd, POLLIN, 5000);
	report("reset: send first (MSG_NOSIGNAL)", send(fd, "x", 1, MSG_NOSIGNAL));
	report("reset: then send again", send(fd, "x", 1, MSG_NOSIGNAL));
	close(fd);

	/* The server closes (FIN); our data then draws its RST. */
	fd = connected('f');
	ev = wait_for(fd, POLLIN, 5000);
	report("peer closed: recv", recv(fd, buf, sizeof buf, 0));
	report("peer closed: first send", send(fd, "x", 1, MSG_NOSIGNAL));
	ev = wait_for(fd, POLLERR | POLLHUP, 5000);
	printf("peer closed: after its RST poll: %s%s\n", ev & POLLERR ? "POLLERR " : "", ev & POLLHUP ? "POLLHUP" : "");
	report("peer closed: send after the RST", send(fd, "x", 1, MSG_NOSIGNAL));
	sigpipes = 0;
	report("peer closed: write (SIGPIPE)", write(fd, "x", 1));
	printf("peer closed: SIGPIPEs: %d\n", (int)sigpipes);
	close(fd);
}

static void probe_shutdown(void)
{
	char buf[64];
	int fd = connected('e');
	report("shutdown SHUT_WR", shutdown(fd, SHUT_WR));
	sigpipes = 0;
	report("send after SHUT_WR", send(fd, "x", 1, 0));
	printf("SIGPIPEs: %d\n", (int)sigpipes);
	report("send after SHUT_WR with MSG_NOSIGNAL", send(fd, "x", 1, MSG_NOSIGNAL));
	printf("SIGPIPEs: %d\n", (int)sigpipes);
	report("recv until the echo server's FIN", recv(fd, buf, sizeof buf, 0));
	report("shutdown with a bad how", shutdown(fd, 7));
	close(fd);
}

static void probe_timeouts(void)
{
	char buf[64];
	int fd = connected('h');
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	report("SO_RCVTIMEO set", setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	report("recv with SO_RCVTIMEO 200 ms", recv(fd, buf, sizeof buf, 0));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	printf("it waited at least 150 ms and at most 2 s: %s\n", ms >= 150 && ms < 2000 ? "yes" : "no");
	tv.tv_usec = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	/* A signal without SA_RESTART interrupts a blocking recv. */
	struct sigaction sa = { .sa_handler = on_alarm };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { .it_value = { .tv_usec = 200000 } };
	setitimer(ITIMER_REAL, &it, NULL);
	report("blocking recv interrupted by a signal", recv(fd, buf, sizeof buf, 0));
	printf("alarms: %d\n", (int)alarms);

	/* With SA_RESTART the recv goes on after the handler, and returns what arrives later. */
	close(fd);
	fd = connected('d'); /* the server sends "late" 500 ms after the command */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	report("blocking recv across an SA_RESTART signal", recv(fd, buf, sizeof buf, 0));
	printf("alarms: %d\n", (int)alarms);
	close(fd);
}

static void probe_waitall(void)
{
	char buf[8];
	int fd = connected('e');
	report("send with MSG_MORE", send(fd, "abcd", 4, MSG_MORE));
	report("then without", send(fd, "efgh", 4, 0));
	report("MSG_WAITALL for 8 echoed bytes", recv(fd, buf, 8, MSG_WAITALL));
	report("MSG_DONTWAIT with nothing there", recv(fd, buf, 8, MSG_DONTWAIT));
	/* (The default is the namespace's net.ipv4.tcp_congestion_control, which may name one the stack lacks.) */
	char algorithm[16] = "";
	socklen_t alen;
	report("TCP_CONGESTION reno", setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "reno", 4));
	alen = sizeof algorithm;
	getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, algorithm, &alen);
	printf("TCP_CONGESTION now: %s\n", algorithm);
	report("TCP_CONGESTION of an algorithm nobody has", setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "nosuch", 6));
	int size = 4096, got_size = 0;
	socklen_t slen = sizeof got_size;
	report("SO_RCVBUF 4096", setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size));
	getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got_size, &slen);
	printf("SO_RCVBUF reads back %d\n", got_size);
	report("SO_SNDBUF 4096", setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size));
	getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got_size, &slen);
	printf("SO_SNDBUF reads back %d\n", got_size);
	struct tcp_info info;
	socklen_t len = sizeof info;
	memset(&info, 0, sizeof info);
	int rc = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len);
	printf("TCP_INFO: %d, state %d, timestamps %s, sack %s, wscale %s, rtt %s, cwnd %s, unacked %u, at least 104 bytes %s\n",
	       rc, info.tcpi_state, info.tcpi_options & TCPI_OPT_TIMESTAMPS ? "yes" : "no",
	       info.tcpi_options & TCPI_OPT_SACK ? "yes" : "no", info.tcpi_options & TCPI_OPT_WSCALE ? "yes" : "no",
	       info.tcpi_rtt > 0 ? "> 0" : "0", info.tcpi_snd_cwnd > 0 ? "> 0" : "0", info.tcpi_unacked, len >= 104 ? "yes" : "no");
	close(fd);

	/* SO_LINGER with a zero timeout: close() resets (the test counts the peer's EstabResets for both runs). */
	fd = connected('h');
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	report("SO_LINGER zero", setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
	report("close with SO_LINGER zero", close(fd));
}

/* The peer: a child process per connection; its first byte says what the child does with it. */
static int serve(int port)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_IGN); /* no zombies */
	int l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 16) != 0)
		return perror("serve"), 1;
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		if (fork() != 0) {
			close(c);
			continue;
		}
		close(l);
		char command = 0, buf[4096];
		if (read(c, &command, 1) == 1) {
			if (command == 'r') {
				struct linger lg = { .l_onoff = 1, .l_linger = 0 };
				setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			} else if (command == 'e') {
				ssize_t n;
				while ((n = read(c, buf, sizeof buf)) > 0)
					if (write(c, buf, (size_t)n) != n)
						break;
			} else if (command == 'h') {
				while (read(c, buf, sizeof buf) > 0)
					;
			} else if (command == 'd') {
				usleep(500000);
				if (write(c, "late", 4) != 4)
					perror("write");
				while (read(c, buf, sizeof buf) > 0)
					;
			}
		}
		close(c);
		_exit(0);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		return serve(atoi(argv[2]));
	if (argc != 4 || strcmp(argv[1], "probe") != 0)
		return fprintf(stderr, "usage: errno_probe serve PORT | errno_probe probe ADDRESS PORT\n"), 2;
	int port = atoi(argv[3]);
	server.sin_family = AF_INET;
	server.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, argv[2], &server.sin_addr) != 1)
		return fprintf(stderr, "bad address %s\n", argv[2]), 2;
	closed_port = server;
	closed_port.sin_port = htons((uint16_t)(port + 1));

	struct sigaction sa = { .sa_handler = on_sigpipe };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGPIPE, &sa, NULL);

	probe_connect();
	probe_unconnected();
	probe_addresses(port);
	probe_reset();
	probe_shutdown();
	probe_timeouts();
	probe_waitall();
	printf("done\n");
	return 0;
}
