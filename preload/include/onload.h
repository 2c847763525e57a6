/*
 * onload.h: the C API of the user-level stack for programs that link it (libonload_ext.so, `pkg-config onload`).
 *
 * A program chooses per socket what is accelerated: onload_socket() makes a socket on the stack, socket() one on
 * the kernel, and the onload_* calls below take either kind (a kernel fd passes through to libc), so one poll or
 * epoll set may mix them. Nothing is interposed: the program's own socket(), read(), close()... stay the kernel's.
 * Use onload_close() for a socket made by onload_socket() (a libc close() leaks its connection until the fd number
 * is used again) and onload_poll/onload_epoll_* when the set holds one. Signal handlers must not call onload_*
 * functions. Across exec only onload-run (libonload.so) keeps accelerated sockets; at fork they go to the kernel
 * and are shared as Linux shares them (docs/PRELOAD-NOTES.md).
 *
 * Under onload-run the same calls reach libonload.so, which defines them too (its socket() then accelerates
 * every socket, and onload_set_stackname(ONLOAD_DONT_ACCELERATE) keeps a thread's new ones on the kernel).
 *
 * Results and errors are those of the libc call of the same name: -1 with errno, as Linux gives them. The stack
 * starts at the first accelerated socket, on ONLOAD_INTERFACE (unset: the only interface with a global IPv4
 * address) through onload-driverd (started on demand); the ONLOAD_* settings are in the README.
 *
 * Clean as C11 and as C++17 with -Wall -Wextra -Werror. Symbols are versioned ONLOAD_EXT_1.0.
 */
#ifndef ONLOAD_H
#define ONLOAD_H

#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The API this header describes: the version node of the library's symbols is ONLOAD_EXT_<major>.0. */
#define ONLOAD_API_VERSION_MAJOR 1
#define ONLOAD_API_VERSION_MINOR 0

/* 1 when the stack runs for this process (starting it if need be), 0 when it cannot (onload_* sockets are then
 * the kernel's, or fail with ENETDOWN when ONLOAD_NO_FAIL=0). */
int onload_is_present(void);

/* ------------------------------------------------------------------ the socket calls, on either kind of fd */
int onload_socket(int domain, int type, int protocol);
int onload_bind(int fd, const struct sockaddr *addr, socklen_t len);
int onload_listen(int fd, int backlog);
int onload_accept(int fd, struct sockaddr *addr, socklen_t *len);
int onload_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int onload_connect(int fd, const struct sockaddr *addr, socklen_t len);
int onload_close(int fd);
int onload_shutdown(int fd, int how);
int onload_getsockname(int fd, struct sockaddr *addr, socklen_t *len);
int onload_getpeername(int fd, struct sockaddr *addr, socklen_t *len);
int onload_setsockopt(int fd, int level, int name, const void *value, socklen_t len);
int onload_getsockopt(int fd, int level, int name, void *value, socklen_t *len);
int onload_fcntl(int fd, int cmd, ...);
int onload_ioctl(int fd, unsigned long request, ...);
ssize_t onload_read(int fd, void *buf, size_t len);
ssize_t onload_write(int fd, const void *buf, size_t len);
ssize_t onload_readv(int fd, const struct iovec *iov, int iovcnt);
ssize_t onload_writev(int fd, const struct iovec *iov, int iovcnt);
ssize_t onload_recv(int fd, void *buf, size_t len, int flags);
ssize_t onload_send(int fd, const void *buf, size_t len, int flags);
ssize_t onload_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen);
ssize_t onload_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen);
ssize_t onload_recvmsg(int fd, struct msghdr *msg, int flags);
ssize_t onload_sendmsg(int fd, const struct msghdr *msg, int flags);
int onload_poll(struct pollfd *fds, nfds_t nfds, int timeout);
int onload_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *timeout);
int onload_epoll_create1(int flags);
int onload_epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
int onload_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);
int onload_epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *sigmask);
int onload_dup(int fd);
int onload_dup2(int oldfd, int newfd);
int onload_dup3(int oldfd, int newfd, int flags);

/* -------------------------------------------------------------------------------------------------- stacks */
/*
 * onload_set_stackname: where new sockets go. The name ONLOAD_DONT_ACCELERATE keeps them on the kernel; any other
 * name (or "" or NULL: the default) accelerates them. This stack runs one stack per process, so every other name
 * names that one: the first becomes its name (onload_fd_stat), and a different name later fails with EBUSY.
 * who: the calling thread (ONLOAD_THIS_THREAD) or the process (ONLOAD_ALL_THREADS: threads that set no name of
 * their own). scope ONLOAD_SCOPE_THREAD or ONLOAD_SCOPE_PROCESS (both name this process's stack) or
 * ONLOAD_SCOPE_NOCHANGE; stacks shared between processes (USER, GLOBAL) fail with EOPNOTSUPP.
 * onload_stackname_save and onload_stackname_restore keep and bring back the calling thread's choice.
 */
#define ONLOAD_DONT_ACCELERATE "onload_dont_accelerate"
#define ONLOAD_STACK_NAME_MAX 32
enum onload_stackname_who { ONLOAD_THIS_THREAD = 0, ONLOAD_ALL_THREADS = 1 };
enum onload_stackname_scope {
	ONLOAD_SCOPE_NOCHANGE = 0,
	ONLOAD_SCOPE_THREAD = 1,
	ONLOAD_SCOPE_PROCESS = 2,
	ONLOAD_SCOPE_USER = 3,
	ONLOAD_SCOPE_GLOBAL = 4
};
int onload_set_stackname(enum onload_stackname_who who, enum onload_stackname_scope scope, const char *name);
int onload_stackname_save(void);
int onload_stackname_restore(void);

/* ---------------------------------------------------------------------------------------------- spinning */
/*
 * Whether the calling thread's blocking waits of a kind spin (for ONLOAD_SPIN_US, or 100 us where that is 0)
 * before they sleep. Until a thread calls this, ONLOAD_SPIN_US decides for it. 0, or -1 with EINVAL.
 */
enum onload_spin_type {
	ONLOAD_SPIN_ALL = 0,        /* every kind below */
	ONLOAD_SPIN_RECV = 1,       /* blocking reads, receives and accepts */
	ONLOAD_SPIN_SEND = 2,       /* blocking writes, sends and connects */
	ONLOAD_SPIN_POLL = 3,       /* poll, ppoll, select, pselect */
	ONLOAD_SPIN_EPOLL_WAIT = 4  /* epoll_wait, epoll_pwait */
};
int onload_thread_set_spin(enum onload_spin_type type, int spin);

/* ------------------------------------------------------------------------------------------ onload_fd_stat */
struct onload_stat {
	int32_t stack_id;                         /* the stack: the process's id (one stack per process) */
	char stack_name[ONLOAD_STACK_NAME_MAX];   /* its name ("" when none was set) */
	int32_t endpoint_id;                      /* the socket's row in the stack's table */
	int32_t endpoint_state;                   /* a TCP socket's state as Linux numbers them (TCP_ESTABLISHED 1...);
						   * 0 for UDP */
	int32_t protocol;                         /* IPPROTO_TCP or IPPROTO_UDP */
};
/* 1 with *stat filled when fd is on the stack, 0 when it is not (a kernel fd), -1 with errno (EBADF, EFAULT). */
int onload_fd_stat(int fd, struct onload_stat *stat);

/* ----------------------------------------------------------------------------------- zero-copy receive */
/*
 * onload_zc_recv lends received bytes of a TCP socket where they lie in the stack's receive ring, one piece per
 * iovec (a piece ends where the ring wraps), up to max pieces: it returns how many, 0 at end of stream, or -1 with
 * errno as recv() (EAGAIN when non-blocking or MSG_DONTWAIT with nothing there; blocking otherwise). Each piece
 * must be released exactly once with onload_zc_release, in any order; until then its bytes stay in the stack's
 * buffer and count against the receive window, so a program that holds them stops its peer (back-pressure), and
 * nothing overwrites them. At most ONLOAD_ZC_MAX_HELD pieces are held per socket (ENOBUFS past it). recv() and
 * read() on the socket go on working meanwhile: they copy the bytes after those lent. EOPNOTSUPP for a socket
 * not on the stack or not TCP.
 */
#define ONLOAD_ZC_MAX_HELD 64
typedef uint64_t onload_zc_handle;
struct onload_zc_iovec {
	void *iov_base;
	size_t iov_len;
	onload_zc_handle buf; /* what onload_zc_release takes */
};
int onload_zc_recv(int fd, struct onload_zc_iovec *iov, int max, int flags);
/* 0 when every handle was held and is now released; -1 with EINVAL at the first that was not held (never lent,
 * or released already): the handles before it are released, it and those after are not. */
int onload_zc_release(int fd, const onload_zc_handle *bufs, int count);

/* -------------------------------------------------------------------------------------- zero-copy send */
/*
 * onload_zc_send_alloc gives the free room of a TCP socket's send buffer to write into (buf->iov_base, iov_len;
 * one run, up to where the ring wraps), waiting for room as send() does unless non-blocking or MSG_DONTWAIT.
 * onload_zc_send then sends its first len bytes as send() would (len 0 gives the room back) and sets *done_at
 * (may be NULL) to where they end in the stream; they are complete, and acknowledged by the peer, once
 * onload_zc_send_completed says at least that. Between the two, send() and write() on the socket fail with EBUSY
 * and a second onload_zc_send_alloc too. Errors are send()'s (EPIPE, ECONNRESET, EAGAIN...).
 */
int onload_zc_send_alloc(int fd, struct iovec *buf, int flags);
ssize_t onload_zc_send(int fd, size_t len, uint64_t *done_at);
/* 0 with *acked the data bytes the peer has acknowledged since the connection opened; -1 with errno. */
int onload_zc_send_completed(int fd, uint64_t *acked);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ONLOAD_H */
