/*
 * onload_stack.h: the C ABI of libonload_stack.so, the user-level TCP/IP stack compiled
 * with NativeAOT (source: preload/native/Exports.cs).
 *
 * Each export is declared twice: as a function, for programs that link against the
 * library, and as a pointer type (name_fn), for loaders that dlsym() it, as the preload
 * shim does. Check onload_stack_abi_version() against ONLOAD_STACK_ABI_VERSION before
 * calling anything else.
 *
 * Clean as C11 and as C++17 with -Wall -Wextra -Werror.
 */
#ifndef ONLOAD_STACK_H
#define ONLOAD_STACK_H

#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes; changes when an existing export changes. */
#define ONLOAD_STACK_ABI_VERSION 2

/* The name of the shared library, for dlopen(). */
#define ONLOAD_STACK_LIBRARY "libonload_stack.so"

/* Returns the library's ABI version (ONLOAD_STACK_ABI_VERSION of the header it was built with). */
int onload_stack_abi_version(void);
typedef int (*onload_stack_abi_version_fn)(void);

/*
 * Writes the library's version string into buf, truncated to len - 1 bytes and
 * NUL-terminated (snprintf semantics). Returns the full length of the string without
 * the NUL, so a result >= len means it was truncated; buf NULL with len 0 only asks
 * for the length. Returns -EINVAL for len < 0, or buf NULL with len > 0.
 */
int onload_stack_version(char *buf, int len);
typedef int (*onload_stack_version_fn)(char *buf, int len);

/*
 * Runs two stacks joined by the in-memory simulated link (5% loss each way, reordering and
 * corruption, in virtual time) exchanging `datagrams` UDP datagrams each way. Returns how
 * many arrived intact (at most 2 * datagrams), -EIO if any arrived damaged, -EINVAL if
 * datagrams is not in 1..100000. The same seed gives the same result.
 */
int onload_stack_selftest(uint64_t seed, int datagrams);
typedef int (*onload_stack_selftest_fn)(uint64_t seed, int datagrams);

/*
 * The socket layer (preload/native/SocketExports.cs), which the preload shim libonload.so
 * calls: IPv4 TCP (and UDP, below) on one process-wide stack in driverlink mode, on the interface named by
 * ONLOAD_INTERFACE, started at the first call. Handles are the stack's connections;
 * addresses and ports are in host byte order; results are counts, handles or 0, or a
 * negated Linux errno. No call blocks: a caller that must wait polls (onload_sock_poll),
 * then registers its own eventfd (onload_sock_wait_begin), sleeps on it and ends the wait
 * (onload_sock_wait_end). Whichever thread next runs the stack writes the eventfd of each
 * waiter one of whose sockets it made ready.
 */
int onload_sock_init(void);
typedef int (*onload_sock_init_fn)(void);
int onload_sock_start_failure(char *buf, int len);          /* why init failed, snprintf-style */
typedef int (*onload_sock_start_failure_fn)(char *buf, int len);
uint32_t onload_sock_local_address(void);
typedef uint32_t (*onload_sock_local_address_fn)(void);
int onload_sock_open(void);
typedef int (*onload_sock_open_fn)(void);
int onload_sock_bind(int h, uint32_t address, uint16_t port);
typedef int (*onload_sock_bind_fn)(int h, uint32_t address, uint16_t port);
int onload_sock_listen(int h, int backlog);
typedef int (*onload_sock_listen_fn)(int h, int backlog);
int onload_sock_accept(int h, uint32_t *address, uint16_t *port); /* -EAGAIN when none waits */
typedef int (*onload_sock_accept_fn)(int h, uint32_t *address, uint16_t *port);
int onload_sock_connect(int h, uint32_t address, uint16_t port);  /* -EINPROGRESS when the SYN went */
typedef int (*onload_sock_connect_fn)(int h, uint32_t address, uint16_t port);
int onload_sock_send(int h, const void *data, intptr_t len);
typedef int (*onload_sock_send_fn)(int h, const void *data, intptr_t len);
int onload_sock_recv(int h, void *buf, intptr_t len);
typedef int (*onload_sock_recv_fn)(int h, void *buf, intptr_t len);
int onload_sock_peek(int h, void *buf, intptr_t len);       /* recv(MSG_PEEK) */
typedef int (*onload_sock_peek_fn)(int h, void *buf, intptr_t len);
int onload_sock_queued(int h, int send);                    /* FIONREAD (0) or SIOCOUTQ (1) */
typedef int (*onload_sock_queued_fn)(int h, int send);
int onload_sock_shutdown(int h, int how);                  /* SHUT_RD, SHUT_WR, SHUT_RDWR */
typedef int (*onload_sock_shutdown_fn)(int h, int how);
int onload_sock_close(int h);
typedef int (*onload_sock_close_fn)(int h);
int onload_sock_name(int h, int peer, uint32_t *address, uint16_t *port);
typedef int (*onload_sock_name_fn)(int h, int peer, uint32_t *address, uint16_t *port);
int onload_sock_take_error(int h);                          /* SO_ERROR: positive errno or 0 */
typedef int (*onload_sock_take_error_fn)(int h);
int onload_sock_tcp_info(int h, void *info, int len);        /* TCP_INFO: Linux's struct tcp_info, cut to len; its size */
typedef int (*onload_sock_tcp_info_fn)(int h, void *info, int len);
/* The TCP options the stack keeps (setsockopt has already checked the value on the placeholder). */
enum {
	ONLOAD_TCP_OPT_NODELAY = 1,
	ONLOAD_TCP_OPT_CORK = 2,
	ONLOAD_TCP_OPT_KEEPALIVE = 3,
	ONLOAD_TCP_OPT_KEEPIDLE = 4,   /* seconds */
	ONLOAD_TCP_OPT_KEEPINTVL = 5,  /* seconds */
	ONLOAD_TCP_OPT_KEEPCNT = 6,
	ONLOAD_TCP_OPT_LINGER_ZERO = 7, /* SO_LINGER on with a zero timeout: close() resets */
	ONLOAD_TCP_OPT_USER_TIMEOUT = 8, /* ms */
	ONLOAD_TCP_OPT_RCVBUF = 9,
	ONLOAD_TCP_OPT_SNDBUF = 10,
	ONLOAD_TCP_OPT_CONGESTION = 11, /* 1: cubic, 2: reno */
	ONLOAD_TCP_OPT_REUSEADDR = 12,
	ONLOAD_TCP_OPT_REUSEPORT = 13
};
int onload_sock_tcp_setopt(int h, int option, int64_t value);
typedef int (*onload_sock_tcp_setopt_fn)(int h, int option, int64_t value);
int onload_sock_tcp_getopt(int h, int option);
typedef int (*onload_sock_tcp_getopt_fn)(int h, int option);
/* poll(2)'s bits, and POLLRDHUP (0x2000) when the read side is shut. */
int onload_sock_poll(const int *handles, const short *events, short *revents, int n);
typedef int (*onload_sock_poll_fn)(const int *handles, const short *events, short *revents, int n);
/*
 * Before sleeping: how many handles have one of their events (revents filled; events are
 * matched exactly, so add POLLERR and POLLHUP to have them), or 0 with the caller registered
 * as *waiter: wake_fd (an eventfd) is written when one does. *vnic_fd is -1 (a thread of the
 * stack watches the VNIC), or an fd to sleep on too, with *timeout_ms cut to the stack's next
 * timer. -EAGAIN: frames are waiting, poll instead of sleeping.
 */
int onload_sock_wait_begin(int wake_fd, const int *handles, const short *events, short *revents, int n, int *waiter,
			   int *vnic_fd, int *timeout_ms);
typedef int (*onload_sock_wait_begin_fn)(int wake_fd, const int *handles, const short *events, short *revents, int n,
					 int *waiter, int *vnic_fd, int *timeout_ms);
int onload_sock_wait_end(int waiter);                       /* 1: wake_fd was written, read it */
typedef int (*onload_sock_wait_end_fn)(int waiter);
int onload_sock_drain(int timeout_ms);                      /* at exit: connections still sending */
typedef int (*onload_sock_drain_fn)(int timeout_ms);

/*
 * Handing sockets to the kernel (fork, exec): onload_sock_handover makes unconnected kernel TCP socket fd the
 * ESTABLISHED or CLOSE_WAIT connection h, with its queues (TCP_REPAIR, done by onload-driverd), and forgets h;
 * -EOPNOTSUPP for other states. onload_sock_handover_listener frees listener h's port for the kernel to listen on
 * and returns it; -EBUSY while connections wait to be accepted or the program holds one on the port. Before it,
 * onload_sock_share_listener_port lets a kernel socket with SO_REUSEADDR bind and listen on the port while the
 * stack still has its frames, so the kernel listens before they come to it.
 */
int onload_sock_handover(int h, int fd);
typedef int (*onload_sock_handover_fn)(int h, int fd);
int onload_sock_handover_listener(int h);
typedef int (*onload_sock_handover_listener_fn)(int h);
int onload_sock_share_listener_port(int h);
typedef int (*onload_sock_share_listener_port_fn)(int h);
/* UDP socket h leaves the stack: returns the kernel socket that held its port (bound, in its groups), to take the
 * program's fd; *dropped: datagrams queued on the stack, lost. */
int onload_sock_udp_handover(int h, int *dropped);
typedef int (*onload_sock_udp_handover_fn)(int h, int *dropped);

/*
 * UDP sockets (preload/native/SocketExports.Udp.cs), numbered apart from TCP connections:
 * onload_sock_poll takes a UDP handle with ONLOAD_SOCK_UDP set (POLLIN with a datagram
 * queued, POLLOUT always, POLLERR with an error pending). A datagram is sent whole from a
 * gather list and received whole into a scatter list (the rest of it, past the buffers, is
 * dropped; *datagram_len says how long it was).
 */
#define ONLOAD_SOCK_UDP 0x40000000
int onload_sock_udp_open(void);
typedef int (*onload_sock_udp_open_fn)(void);
int onload_sock_udp_bind(int h, uint32_t address, uint16_t port);   /* port 0: an ephemeral one */
typedef int (*onload_sock_udp_bind_fn)(int h, uint32_t address, uint16_t port);
int onload_sock_udp_connect(int h, uint32_t address, uint16_t port);
typedef int (*onload_sock_udp_connect_fn)(int h, uint32_t address, uint16_t port);
int onload_sock_udp_disconnect(int h);                               /* connect(AF_UNSPEC) */
typedef int (*onload_sock_udp_disconnect_fn)(int h);
/* to 0: to the connected peer (-EDESTADDRREQ without one). Returns the bytes sent. */
int onload_sock_udp_send(int h, const struct iovec *iov, int iovcnt, int to, uint32_t address, uint16_t port);
typedef int (*onload_sock_udp_send_fn)(int h, const struct iovec *iov, int iovcnt, int to, uint32_t address, uint16_t port);
/* The bytes copied, or -EAGAIN when no datagram is queued; peek leaves the datagram queued. */
int onload_sock_udp_recv(int h, const struct iovec *iov, int iovcnt, int peek, uint32_t *address, uint16_t *port,
			 int *datagram_len);
typedef int (*onload_sock_udp_recv_fn)(int h, const struct iovec *iov, int iovcnt, int peek, uint32_t *address,
				       uint16_t *port, int *datagram_len);
int onload_sock_udp_next_length(int h);                              /* FIONREAD: 0 when none */
typedef int (*onload_sock_udp_next_length_fn)(int h);
int onload_sock_udp_close(int h);
typedef int (*onload_sock_udp_close_fn)(int h);
int onload_sock_udp_name(int h, int peer, uint32_t *address, uint16_t *port);
typedef int (*onload_sock_udp_name_fn)(int h, int peer, uint32_t *address, uint16_t *port);
int onload_sock_udp_take_error(int h);                               /* SO_ERROR: positive errno or 0 */
typedef int (*onload_sock_udp_take_error_fn)(int h);
/* The options the stack keeps; a group address in host byte order; a TTL of -1 is the default. */
enum {
	ONLOAD_UDP_OPT_RCVBUF = 1,
	ONLOAD_UDP_OPT_BROADCAST = 2,
	ONLOAD_UDP_OPT_MULTICAST_TTL = 3,
	ONLOAD_UDP_OPT_MULTICAST_LOOP = 4,
	ONLOAD_UDP_OPT_ADD_MEMBERSHIP = 5,
	ONLOAD_UDP_OPT_DROP_MEMBERSHIP = 6,
	ONLOAD_UDP_OPT_REUSEADDR = 7,
	ONLOAD_UDP_OPT_REUSEPORT = 8
};
int onload_sock_udp_setopt(int h, int option, uint32_t value);
typedef int (*onload_sock_udp_setopt_fn)(int h, int option, uint32_t value);

/*
 * Zero-copy TCP (preload/native/SocketExports.ZeroCopy.cs), under the C API's onload_zc_* calls (onload.h).
 * onload_sock_zc_lend lends up to max unread bytes after those already lent, one contiguous run of the receive ring
 * (*data points at it): its length, or recv()'s result with nothing to read. They stay in the ring and in the window
 * until onload_sock_zc_return gives back the first n lent bytes; onload_sock_recv says -EBUSY meanwhile.
 * onload_sock_zc_reserve gives the send ring's free run after the queued bytes (*data) and its stream position
 * (data bytes queued before it); onload_sock_zc_commit queues its first n bytes (0 abandons it); copied sends say
 * -EBUSY while it is open. onload_sock_zc_acked: data bytes the peer has acknowledged.
 */
int onload_sock_zc_lend(int h, int max, void **data);
typedef int (*onload_sock_zc_lend_fn)(int h, int max, void **data);
int onload_sock_zc_return(int h, int n);
typedef int (*onload_sock_zc_return_fn)(int h, int n);
int onload_sock_zc_reserve(int h, void **data, uint64_t *position);
typedef int (*onload_sock_zc_reserve_fn)(int h, void **data, uint64_t *position);
int onload_sock_zc_commit(int h, int n);
typedef int (*onload_sock_zc_commit_fn)(int h, int n);
int64_t onload_sock_zc_acked(int h);
typedef int64_t (*onload_sock_zc_acked_fn)(int h);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ONLOAD_STACK_H */
