/*
 * check.h: what the preload test helpers (the C programs in preload/tests) share. CHECK: a failed step prints its
 * line, what it was and errno, and exits 1; each helper prints "ok WHAT" for the steps that passed. The checked
 * stream: a pattern both ends can compute, pumped through an echo in both directions at once and checked byte by
 * byte.
 */
#ifndef ONLOAD_TESTS_CHECK_H
#define ONLOAD_TESTS_CHECK_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			printf("FAILED line %d: ", __LINE__); \
			printf(__VA_ARGS__); \
			printf(" (errno %d %s)\n", errno, strerror(errno)); \
			exit(1); \
		} \
	} while (0)

/* Lengths the compiler cannot prove safe, so that _FORTIFY_SOURCE routes the calls to __*_chk. */
static volatile size_t bump __attribute__((unused));
#define V(n) ((n) + bump)

/* Byte I of the stream SEED names: it depends on its position, so a lost, repeated or reordered byte shows. */
static inline unsigned char pattern_at(size_t i, unsigned seed)
{
	return (unsigned char)(((i + seed) % 251) ^ (i >> 11));
}

/* One direction pair of a checked stream through an echo: how far each side has got. */
struct stream {
	int fd;
	unsigned seed;
	size_t sent, received;
};

/*
 * Sends the pattern until SEND_TO bytes are out and checks the echo until RECEIVE_TO bytes are in, both at once (an
 * echo of more than the socket buffers deadlocks a program that sends all first). Fails when nothing moves for 10 s.
 */
static inline void stream_until(struct stream *s, size_t send_to, size_t receive_to, const char *what)
{
	static unsigned char buf[65536];
	while (s->sent < send_to || s->received < receive_to) {
		struct pollfd p = { .fd = s->fd, .events = (short)((s->sent < send_to ? POLLOUT : 0) | (s->received < receive_to ? POLLIN : 0)) };
		CHECK(poll(&p, 1, 10000) == 1, "%s: poll at %zu sent, %zu received: nothing moved for 10 s", what, s->sent, s->received);
		if ((p.revents & POLLOUT) && s->sent < send_to) {
			size_t n = send_to - s->sent < sizeof buf ? send_to - s->sent : sizeof buf;
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern_at(s->sent + i, s->seed);
			ssize_t w = send(s->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			CHECK(w > 0 || errno == EAGAIN, "%s: send at %zu sent", what, s->sent);
			if (w > 0)
				s->sent += (size_t)w;
		}
		if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && s->received < receive_to) {
			size_t n = receive_to - s->received < sizeof buf ? receive_to - s->received : sizeof buf;
			ssize_t got = recv(s->fd, buf, n, MSG_DONTWAIT);
			CHECK(got != 0, "%s: end of stream at %zu received of %zu", what, s->received, receive_to);
			CHECK(got > 0 || errno == EAGAIN, "%s: recv at %zu received", what, s->received);
			for (ssize_t i = 0; i < got; i++)
				CHECK(buf[i] == pattern_at(s->received + (size_t)i, s->seed), "%s: echoed byte %zu differs", what, s->received + (size_t)i);
			if (got > 0)
				s->received += (size_t)got;
		}
	}
}

/* Echoes LEN bytes of stream SEED through FD (an echo server's connection) and checks them; prints "ok WHAT". */
static inline void echo_check(int fd, size_t len, unsigned seed, const char *what)
{
	struct stream s = { .fd = fd, .seed = seed };
	stream_until(&s, len, len, what);
	printf("ok %s\n", what);
}

#endif
