/*
 * zc_probe HOST PORT RECEIVE_BYTES SEND_BYTES: zero-copy TCP through the C API (libonload_ext.so), against a kernel
 * server that sends RECEIVE_BYTES of pattern seed 1, then reads SEND_BYTES of seed 2 and answers "ok N" once it
 * has checked them (tests/Onload.Tests/Preload/ExtApiTests.cs runs it).
 *
 * Receive: pieces lent by onload_zc_recv are checked against the pattern where the stream has them and held until
 * nothing more arrives (the window closed: back-pressure); a piece released twice and a handle never lent are
 * refused (EINVAL); recv() with a piece out copies the bytes after it; the rest are released out of order and the
 * stream read to its end, every byte checked. Send: the bytes are written into room the stack gives
 * (onload_zc_send_alloc), send() meanwhile says EBUSY, and the last send completes (acknowledged) before shutdown.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <onload.h>

#include "check.h"

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void check_piece(const struct onload_zc_iovec *v, size_t at)
{
	const unsigned char *p = v->iov_base;
	for (size_t i = 0; i < v->iov_len; i++)
		CHECK(p[i] == pattern_at(at + i, 1), "byte %zu of the received stream is %u, not %u", at + i, p[i],
		      pattern_at(at + i, 1));
}

int main(int argc, char **argv)
{
	CHECK(argc == 5, "usage: zc_probe HOST PORT RECEIVE_BYTES SEND_BYTES");
	size_t total = strtoull(argv[3], NULL, 10), to_send = strtoull(argv[4], NULL, 10);
	CHECK(onload_is_present() == 1, "the stack is present");
	int fd = onload_socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0, "onload_socket");
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	CHECK(inet_pton(AF_INET, argv[1], &a.sin_addr) == 1, "address");
	CHECK(onload_connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
	struct onload_stat st;
	CHECK(onload_fd_stat(fd, &st) == 1 && st.stack_id == getpid() && st.endpoint_state == 1, "on the stack, ESTABLISHED");
	int kernel = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(onload_fd_stat(kernel, &st) == 0, "a socket() socket is the kernel's");
	CHECK(onload_zc_recv(kernel, (struct onload_zc_iovec[1]){ 0 }, 1, 0) == -1 && errno == EOPNOTSUPP,
	      "zero-copy on a kernel socket: EOPNOTSUPP");
	close(kernel);
	printf("ok on the stack\n");

	/* Hold everything lent until 300 ms pass with nothing new: the stack's window is closed. */
	struct onload_zc_iovec held[ONLOAD_ZC_MAX_HELD];
	size_t offsets[ONLOAD_ZC_MAX_HELD];
	int n_held = 0;
	size_t at = 0;
	long quiet_since = now_ms();
	while (now_ms() - quiet_since < 300 && at < total) {
		/* The first piece is waited for; after it, 300 ms without a byte means the sender is stopped. */
		int n = onload_zc_recv(fd, held + n_held, ONLOAD_ZC_MAX_HELD - n_held, n_held == 0 ? 0 : MSG_DONTWAIT);
		if (n < 0 && errno == ENOBUFS)
			break; /* the most a socket may hold */
		if (n < 0) {
			CHECK(errno == EAGAIN, "onload_zc_recv while holding");
			struct pollfd p = { .fd = fd, .events = POLLIN };
			onload_poll(&p, 1, 10);
			continue;
		}
		CHECK(n > 0, "no end of stream yet");
		for (int i = n_held; i < n_held + n; i++) {
			offsets[i] = at;
			check_piece(&held[i], at);
			at += held[i].iov_len;
		}
		n_held += n;
		quiet_since = now_ms();
		if (n_held == ONLOAD_ZC_MAX_HELD)
			break;
	}
	CHECK(at > 0 && at < total, "held %zu of %zu bytes and the sender stopped", at, total);
	printf("ok held %zu bytes in %d pieces, the window closed\n", at, n_held);

	onload_zc_handle first = held[0].buf;
	CHECK(onload_zc_release(fd, &first, 1) == 0, "release a piece");
	CHECK(onload_zc_release(fd, &first, 1) == -1 && errno == EINVAL, "release it again: EINVAL");
	onload_zc_handle bogus = (onload_zc_handle)(at + 12345);
	CHECK(onload_zc_release(fd, &bogus, 1) == -1 && errno == EINVAL, "a handle never lent: EINVAL");
	printf("ok each piece is released once\n");

	/* recv() with pieces out copies what follows them. */
	unsigned char buf[65536];
	ssize_t got = onload_recv(fd, buf, 1000, 0);
	CHECK(got > 0, "recv with pieces lent");
	for (ssize_t i = 0; i < got; i++)
		CHECK(buf[i] == pattern_at(at + (size_t)i, 1), "recv after lent pieces: byte %zu", at + (size_t)i);
	at += (size_t)got;
	printf("ok recv copies past the lent pieces\n");

	for (int i = n_held - 1; i >= 1; i--) /* the rest, last first */
		CHECK(onload_zc_release(fd, &held[i].buf, 1) == 0, "release piece %d (stream offset %zu)", i, offsets[i]);
	printf("ok released out of order\n");

	while (at < total) {
		ssize_t n = onload_recv(fd, buf, sizeof buf, 0);
		CHECK(n > 0, "recv the rest at %zu", at);
		for (ssize_t i = 0; i < n; i++)
			CHECK(buf[i] == pattern_at(at + (size_t)i, 1), "byte %zu", at + (size_t)i);
		at += (size_t)n;
	}
	printf("ok received %zu bytes intact\n", at);

	uint64_t done_at = 0;
	size_t sent = 0;
	int busy_seen = 0;
	while (sent < to_send) {
		struct iovec room;
		CHECK(onload_zc_send_alloc(fd, &room, 0) == 0, "onload_zc_send_alloc");
		if (!busy_seen) {
			CHECK(onload_send(fd, "x", 1, MSG_DONTWAIT) == -1 && errno == EBUSY, "send() during a zero-copy send: EBUSY");
			struct iovec again;
			CHECK(onload_zc_send_alloc(fd, &again, MSG_DONTWAIT) == -1 && errno == EBUSY, "a second alloc: EBUSY");
			busy_seen = 1;
		}
		size_t k = to_send - sent < room.iov_len ? to_send - sent : room.iov_len;
		for (size_t i = 0; i < k; i++)
			((unsigned char *)room.iov_base)[i] = pattern_at(sent + i, 2);
		CHECK(onload_zc_send(fd, k, &done_at) == (ssize_t)k, "onload_zc_send");
		sent += k;
	}
	CHECK(done_at == to_send, "the last send ends at %zu (%llu)", to_send, (unsigned long long)done_at);
	uint64_t acked = 0;
	long deadline = now_ms() + 20000;
	while (onload_zc_send_completed(fd, &acked) == 0 && acked < done_at && now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		onload_poll(&p, 1, 10);
	}
	CHECK(acked >= done_at, "the sends completed: %llu of %llu acknowledged", (unsigned long long)acked,
	      (unsigned long long)done_at);
	printf("ok zero-copy sends of %zu bytes complete\n", sent);

	CHECK(onload_shutdown(fd, SHUT_WR) == 0, "shutdown");
	char reply[64] = "";
	size_t r = 0;
	for (ssize_t n; r < sizeof reply - 1 && (n = onload_recv(fd, reply + r, sizeof reply - 1 - r, 0)) > 0;)
		r += (size_t)n;
	reply[r] = '\0';
	printf("peer: %s", reply);
	CHECK(onload_close(fd) == 0, "close");
	printf("ok done\n");
	return 0;
}
