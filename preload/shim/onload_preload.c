/*
 * onload_preload.c: libonload.so, the LD_PRELOAD interposer.
 *
 * Intercepts the POSIX socket calls of an unmodified program and carries its AF_INET and AF_INET6
 * SOCK_STREAM and SOCK_DGRAM sockets on the user-level stack (libonload_stack.so, the NativeAOT
 * build of preload/native, loaded at the first such socket). The stack speaks IPv4: an AF_INET6
 * socket stays on it while it talks to IPv4 through v4-mapped addresses, and goes to the kernel at
 * its first IPv6 address (a UDP socket the stack has already bound cannot, and refuses IPv6).
 * Everything else (AF_UNIX, raw sockets, files, pipes) goes to libc untouched. See
 * docs/PRELOAD-NOTES.md.
 *
 * An accelerated socket owns a real kernel fd: socket() makes a kernel socket of the same
 * type (the placeholder) and returns its number, and fd_table[fd] names the stack's
 * connection. The placeholder carries fd flags, fcntl and setsockopt state, and becomes the
 * real socket when a call hands the socket to the kernel (a loopback bind or connect, or a
 * destination the stack cannot route). The stack keeps its own backing kernel socket for
 * the port (driverlink-client/Kernel/BackingSocket.cs); unifying the two is later work.
 *
 * The stack's own calls (the .NET runtime inside libonload_stack.so uses read, write,
 * close, socket and poll) must reach libc: a thread-local guard is set around every call
 * into the stack, and every intercepted function passes straight through while it is.
 *
 * Every call into the stack is non-blocking; blocking calls, poll and select wait here:
 * poll the stack and the kernel fds, spin for ONLOAD_SPIN_US, then sleep in the real poll()
 * on the kernel fds plus the VNIC's wait fd, no longer than the stack's next timer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <alloca.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <linux/sockios.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "onload_stack.h"

/*
 * The same source builds two libraries. libonload.so (LD_PRELOAD) exports the libc names, which is how it takes
 * over an unmodified program's sockets, and the onload_* API beside them (onload_ext.c, included at the end).
 * libonload_ext.so (ONLOAD_EXT_ONLY) keeps the libc names to itself: a program linking it reaches the stack only
 * through the onload_* calls it makes, and its other calls stay the kernel's.
 */
#ifdef ONLOAD_EXT_ONLY
#define EXPORT __attribute__((visibility("hidden")))
#else
#define EXPORT __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------------------ libc */

static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_listen)(int, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static int (*real_close)(int);
static int (*real_shutdown)(int, int);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static int (*real_epoll_create)(int);
static int (*real_epoll_create1)(int);
static int (*real_epoll_ctl)(int, int, int, struct epoll_event *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static int (*real_epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);
static int (*real_close_range)(unsigned int, unsigned int, int);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
static int (*real_sendmmsg)(int, struct mmsghdr *, unsigned int, int);
static int (*real_recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);

#define RESOLVE(name) (real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name))

static void resolve_libc(void)
{
	RESOLVE(socket); RESOLVE(bind); RESOLVE(listen); RESOLVE(accept); RESOLVE(accept4);
	RESOLVE(connect); RESOLVE(read); RESOLVE(write); RESOLVE(recv); RESOLVE(send);
	RESOLVE(recvfrom); RESOLVE(sendto); RESOLVE(close); RESOLVE(shutdown);
	RESOLVE(getsockname); RESOLVE(getpeername); RESOLVE(setsockopt); RESOLVE(getsockopt);
	RESOLVE(fcntl); RESOLVE(fcntl64); RESOLVE(poll); RESOLVE(select); RESOLVE(ppoll); RESOLVE(pselect);
	RESOLVE(readv); RESOLVE(writev); RESOLVE(recvmsg); RESOLVE(sendmsg); RESOLVE(ioctl);
	RESOLVE(dup); RESOLVE(dup2); RESOLVE(dup3);
	RESOLVE(epoll_create); RESOLVE(epoll_create1); RESOLVE(epoll_ctl); RESOLVE(epoll_wait); RESOLVE(epoll_pwait);
	RESOLVE(sigaction); RESOLVE(close_range); RESOLVE(sendfile); RESOLVE(epoll_pwait2);
	RESOLVE(sendmmsg); RESOLVE(recvmmsg);
	if (real_fcntl64 == NULL)
		real_fcntl64 = real_fcntl;
}

static pthread_once_t libc_once = PTHREAD_ONCE_INIT;

/* Resolved once, before main (the constructor) or at the first call, whichever comes first. */
#define LIBC(name) (real_##name != NULL ? real_##name : (pthread_once(&libc_once, resolve_libc), real_##name))

/* ------------------------------------------------------------------------------ settings */

static int opt_no_fail = 1;     /* ONLOAD_NO_FAIL */
static long opt_spin_ns = 100000; /* ONLOAD_SPIN_US */

/* Which wait a thread is in, for its own spin setting (onload_thread_set_spin in onload_ext.c). */
enum { SPIN_RECV, SPIN_SEND, SPIN_POLL, SPIN_EPOLL };
static __thread int thread_spin_set;      /* 0: ONLOAD_SPIN_US decides */
static __thread unsigned thread_spin_mask; /* 1 << SPIN_*: the waits that spin */
static __thread int thread_waiting_in = SPIN_POLL;

/* How long this thread spins before sleeping in a wait of `kind`. */
static inline long spin_ns(int kind)
{
	if (!thread_spin_set)
		return opt_spin_ns;
	return (thread_spin_mask & (1u << kind)) ? (opt_spin_ns > 0 ? opt_spin_ns : 100000) : 0;
}
static int opt_debug;           /* ONLOAD_DEBUG */
static int opt_exit_linger_ms = 10000; /* ONLOAD_EXIT_LINGER_MS */

static void debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void debug(const char *fmt, ...)
{
	if (!opt_debug)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputs("onload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ------------------------------------------------------------------- the reentrancy guard */

/* Set while this thread is inside the stack: its calls go straight to libc. */
static __thread int in_stack;

/* Signals that arrived while this thread was inside the stack, run when it leaves (see "signals" below). */
static __thread uint32_t deferred_signals;
static void run_deferred_signals(void);

#define STACK(expr) ({ \
	in_stack++; \
	__typeof__(expr) r_ = (expr); \
	if (--in_stack == 0 && deferred_signals != 0) { \
		run_deferred_signals(); \
	} \
	r_; \
})

/* --------------------------------------------------------------------------- the fd table */

#define FD_NONBLOCK 1

struct ep_set;

/* The stack numbers TCP connections and UDP sockets apart: an fd's handle is one of its kind. */
enum { KIND_TCP, KIND_UDP };

struct fd_entry {
	int handle_plus1; /* the stack's connection (or UDP socket) + 1; 0: not accelerated */
	uint32_t gen;       /* changes when the fd gets or loses a connection: epoll members hold the one they saw */
	uint32_t rd_eagain; /* reads and accepts that found nothing, and writes that found no room: */
	uint32_t wr_eagain; /* an EPOLLET member reports the same readiness again after one */
	uint8_t kind;       /* KIND_TCP or KIND_UDP: which of the stack's tables handle_plus1 indexes */
	uint8_t forked;     /* accelerated in the parent before fork: the child cannot use it (see "fork") */
	int ep_watch_plus1; /* + 1, an epoll fd whose sleeper left this EPOLLET member's EPOLLIN or EPOLLOUT out as
			     * already reported: the program meeting EAGAIN here must wake it to look again (note_eagain) */
	struct ep_set *ep;  /* this fd is an epoll fd with accelerated members (the shim's part of the set) */
};

static struct fd_entry *fd_table;
static int fd_table_size;

/*
 * Per stack connection: how many fds name it (dup, dup2, dup3, F_DUPFD share it; the last close closes
 * it), and O_NONBLOCK, which belongs to the open file description that dups share. One table per kind,
 * indexed by handle; each as large as fd_table (a handle past it is not dup'd: EMFILE).
 */
struct conn_state {
	int refs;
	int flags;
	int rcv_timeo_ms; /* SO_RCVTIMEO, SO_SNDTIMEO in ms (rounded up); 0: wait for ever */
	int snd_timeo_ms;
	int connecting;   /* a connect returned before the handshake ended (EINPROGRESS, EINTR, timeout) */
	uint8_t corked;   /* TCP_CORK is on (set by the program) */
	uint8_t more;     /* the last send had MSG_MORE: the stack holds a partial segment as under TCP_CORK */
	int backlog;      /* listen()'s, for the kernel listener a fork hands the socket to */
	int family; /* AF_INET or AF_INET6: the form of every address the program gives and gets */
	struct zc_state *zc; /* zero-copy bookkeeping (onload_ext.c), made at the first onload_zc_* call */
};

static struct conn_state *conn_tables[2];

static void warn_forked(int fd);
static void note_eagain(struct fd_entry *e, int writing);

static inline struct fd_entry *accelerated(int fd)
{
	if (in_stack || fd < 0 || fd >= fd_table_size)
		return NULL;
	if (__builtin_expect(fd_table[fd].forked, 0))
		warn_forked(fd);
	if (fd_table[fd].handle_plus1 == 0)
		return NULL;
	return &fd_table[fd];
}

static inline int handle_of(const struct fd_entry *e) { return e->handle_plus1 - 1; }

static inline struct conn_state *conn_of(const struct fd_entry *e) { return &conn_tables[e->kind][handle_of(e)]; }

/* The handle as onload_sock_poll takes it: a UDP socket's is marked. */
static inline int poll_handle_of(const struct fd_entry *e)
{
	return e->kind == KIND_UDP ? handle_of(e) | ONLOAD_SOCK_UDP : handle_of(e);
}

static inline int nonblocking(const struct fd_entry *e) { return conn_of(e)->flags & FD_NONBLOCK; }

static inline int family_of(const struct fd_entry *e) { return conn_of(e)->family; }

/* fd now names stack connection h of the kind, new (flags given) or shared with another fd (flags < 0). */
static void forget_fd(int fd);
static void zc_forget(struct conn_state *c);

static void take_fd(int fd, int kind, int h, int flags)
{
	struct fd_entry *e = &fd_table[fd];
	/* Still naming a connection: its fd went to libc's close(), which libonload_ext.so does not interpose (the
	 * program should have called onload_close). The connection is let go now, as that close should have. */
	if (e->handle_plus1 != 0 && flags >= 0)
		forget_fd(fd);
	e->handle_plus1 = h + 1;
	e->kind = (uint8_t)kind;
	e->gen++;
	if (flags >= 0) {
		conn_tables[kind][h].refs = 1;
		conn_tables[kind][h].flags = flags;
		conn_tables[kind][h].rcv_timeo_ms = 0;
		conn_tables[kind][h].snd_timeo_ms = 0;
		conn_tables[kind][h].connecting = 0;
		conn_tables[kind][h].corked = 0;
		conn_tables[kind][h].more = 0;
	} else
		conn_tables[kind][h].refs++;
}

/* fd no longer names its connection; returns how many fds still do (0: close it on the stack). */
static int release_fd(struct fd_entry *e)
{
	int left = --conn_of(e)->refs;
	e->handle_plus1 = 0;
	e->gen++;
	return left;
}

static void ep_hand_to_kernel(int fd, uint32_t gen, int alias);
static void ep_forget(int epfd);
static inline struct ep_set *ep_of(int epfd);

/* nfd, a kernel dup of an accelerated fd's placeholder, names the same connection. */
static void share_fd(int nfd, const struct fd_entry *e)
{
	if (nfd < 0 || nfd >= fd_table_size)
		return; /* past the table: the kernel's dup of the placeholder, not accelerated */
	if (fd_table[nfd].ep != NULL)
		ep_forget(nfd);
	take_fd(nfd, e->kind, handle_of(e), -1);
}

/* ---------------------------------------------------------------------------- the stack */

/* The stack's C ABI: preload/include/onload_stack.h (signatures checked against it here). */
typedef onload_sock_init_fn init_fn;
typedef onload_sock_start_failure_fn start_failure_fn;
typedef onload_sock_local_address_fn local_address_fn;
typedef onload_sock_open_fn open_fn;
typedef onload_sock_bind_fn bind_fn;
typedef onload_sock_listen_fn listen_fn;
typedef onload_sock_accept_fn accept_fn;
typedef onload_sock_connect_fn connect_fn;
typedef onload_sock_send_fn send_fn;
typedef onload_sock_recv_fn recv_fn;
typedef onload_sock_shutdown_fn shutdown_fn;
typedef onload_sock_close_fn close_fn;
typedef onload_sock_name_fn name_fn;
typedef onload_sock_take_error_fn take_error_fn;
typedef onload_sock_tcp_info_fn tcp_info_fn;
typedef onload_sock_tcp_setopt_fn tcp_setopt_fn;
typedef onload_sock_tcp_getopt_fn tcp_getopt_fn;
typedef onload_sock_poll_fn poll_fn;
typedef onload_sock_wait_begin_fn wait_begin_fn;
typedef onload_sock_wait_end_fn wait_end_fn;
typedef onload_sock_drain_fn drain_fn;
typedef onload_sock_handover_fn handover_fn;
typedef onload_sock_handover_listener_fn handover_listener_fn;
typedef onload_sock_share_listener_port_fn share_listener_port_fn;
typedef onload_sock_udp_handover_fn udp_handover_fn;
typedef onload_sock_peek_fn peek_fn;
typedef onload_sock_queued_fn queued_fn;
typedef onload_sock_udp_open_fn udp_open_fn;
typedef onload_sock_udp_bind_fn udp_bind_fn;
typedef onload_sock_udp_connect_fn udp_connect_fn;
typedef onload_sock_udp_disconnect_fn udp_disconnect_fn;
typedef onload_sock_udp_send_fn udp_send_fn;
typedef onload_sock_udp_recv_fn udp_recv_fn;
typedef onload_sock_udp_next_length_fn udp_next_length_fn;
typedef onload_sock_udp_close_fn udp_close_fn;
typedef onload_sock_udp_name_fn udp_name_fn;
typedef onload_sock_udp_take_error_fn udp_take_error_fn;
typedef onload_sock_udp_setopt_fn udp_setopt_fn;
typedef onload_sock_zc_lend_fn zc_lend_fn;
typedef onload_sock_zc_return_fn zc_return_fn;
typedef onload_sock_zc_reserve_fn zc_reserve_fn;
typedef onload_sock_zc_commit_fn zc_commit_fn;
typedef onload_sock_zc_acked_fn zc_acked_fn;

static struct {
	init_fn init;
	start_failure_fn start_failure;
	local_address_fn local_address;
	open_fn open;
	bind_fn bind;
	listen_fn listen;
	accept_fn accept;
	connect_fn connect;
	send_fn send;
	recv_fn recv;
	shutdown_fn shutdown;
	close_fn close;
	name_fn name;
	take_error_fn take_error;
	tcp_info_fn tcp_info;
	tcp_setopt_fn tcp_setopt;
	tcp_getopt_fn tcp_getopt;
	poll_fn poll;
	wait_begin_fn wait_begin;
	wait_end_fn wait_end;
	drain_fn drain;
	handover_fn handover;
	handover_listener_fn handover_listener;
	share_listener_port_fn share_listener_port;
	udp_handover_fn udp_handover;
	peek_fn peek;
	queued_fn queued;
	udp_open_fn udp_open;
	udp_bind_fn udp_bind;
	udp_connect_fn udp_connect;
	udp_disconnect_fn udp_disconnect;
	udp_send_fn udp_send;
	udp_recv_fn udp_recv;
	udp_next_length_fn udp_next_length;
	udp_close_fn udp_close;
	udp_name_fn udp_name;
	udp_take_error_fn udp_take_error;
	udp_setopt_fn udp_setopt;
	zc_lend_fn zc_lend;
	zc_return_fn zc_return;
	zc_reserve_fn zc_reserve;
	zc_commit_fn zc_commit;
	zc_acked_fn zc_acked;
} st;

/* STACK_FORKED: this process is a child forked from the one whose stack is loaded (see "fork"). */
enum { STACK_UNTRIED, STACK_READY, STACK_FAILED, STACK_FORKED };
static pid_t stack_owner; /* the process whose stack this is */
static int stack_state = STACK_UNTRIED;
static uint32_t stack_address; /* host byte order */
static unsigned stack_ifindex;   /* ONLOAD_INTERFACE's index, for the multicast options */
static pthread_mutex_t stack_load_lock = PTHREAD_MUTEX_INITIALIZER;

/* The stack library: ONLOAD_STACK_LIB, else libonload_stack.so beside this library. */
static void stack_library_path(char *path, size_t len)
{
	const char *env = getenv("ONLOAD_STACK_LIB");
	if (env != NULL && *env != '\0') {
		snprintf(path, len, "%s", env);
		return;
	}
	Dl_info info;
	if (dladdr((void *)stack_library_path, &info) && info.dli_fname != NULL) {
		const char *slash = strrchr(info.dli_fname, '/');
		if (slash != NULL) {
			snprintf(path, len, "%.*s/libonload_stack.so", (int)(slash - info.dli_fname), info.dli_fname);
			return;
		}
	}
	snprintf(path, len, "libonload_stack.so");
}

/* Closes handle h of the kind on the stack (the caller holds the guard or uses STACK). */
static int stack_close(int kind, int h)
{
	return kind == KIND_UDP ? st.udp_close(h) : st.close(h);
}

/*
 * exit(): the kernel would close the process's sockets and go on sending what they hold; this stack
 * dies with the process, so it closes them and sends first (bounded by ONLOAD_EXIT_LINGER_MS).
 * Connections the process still holds when it is killed are closed by the daemon, from the
 * connection mirror. _exit() skips this.
 */
/* Set as exit() closes the accelerated fds (drain_at_exit): another thread asleep on one of them stays asleep. */
static volatile int process_exiting;
static pthread_t exiting_thread;

static void drain_at_exit(void)
{
	if (getpid() != stack_owner)
		return; /* a forked child's exit must not close its parent's connections */
	exiting_thread = pthread_self();
	process_exiting = 1;
	in_stack++;
	for (int fd = 0; fd < fd_table_size; fd++)
		if (fd_table[fd].handle_plus1 != 0) {
			int h = handle_of(&fd_table[fd]), kind = fd_table[fd].kind;
			if (release_fd(&fd_table[fd]) == 0)
				stack_close(kind, h);
		}
	int left = st.drain(opt_exit_linger_ms);
	in_stack--;
	if (left > 0)
		fprintf(stderr, "onload: exit: %d connections still sending after %d ms: their peers see them end\n",
			left, opt_exit_linger_ms);
	else
		debug("exit: every connection sent its data");
}

static int load_stack_locked(char *why, size_t why_len)
{
	char path[4096];
	stack_library_path(path, sizeof path);
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		snprintf(why, why_len, "%s", dlerror());
		return -1;
	}
#define SYM(field, name) \
	if ((*(void **)&st.field = dlsym(lib, name)) == NULL) { \
		snprintf(why, why_len, "the stack library has no %s (an older one?)", name); \
		return -1; \
	}
	SYM(init, "onload_sock_init");
	SYM(start_failure, "onload_sock_start_failure");
	SYM(local_address, "onload_sock_local_address");
	SYM(open, "onload_sock_open");
	SYM(bind, "onload_sock_bind");
	SYM(listen, "onload_sock_listen");
	SYM(accept, "onload_sock_accept");
	SYM(connect, "onload_sock_connect");
	SYM(send, "onload_sock_send");
	SYM(recv, "onload_sock_recv");
	SYM(shutdown, "onload_sock_shutdown");
	SYM(close, "onload_sock_close");
	SYM(name, "onload_sock_name");
	SYM(take_error, "onload_sock_take_error");
	SYM(tcp_info, "onload_sock_tcp_info");
	SYM(tcp_setopt, "onload_sock_tcp_setopt");
	SYM(tcp_getopt, "onload_sock_tcp_getopt");
	SYM(poll, "onload_sock_poll");
	SYM(wait_begin, "onload_sock_wait_begin");
	SYM(wait_end, "onload_sock_wait_end");
	SYM(drain, "onload_sock_drain");
	SYM(handover, "onload_sock_handover");
	SYM(handover_listener, "onload_sock_handover_listener");
	SYM(share_listener_port, "onload_sock_share_listener_port");
	SYM(udp_handover, "onload_sock_udp_handover");
	SYM(peek, "onload_sock_peek");
	SYM(queued, "onload_sock_queued");
	SYM(udp_open, "onload_sock_udp_open");
	SYM(udp_bind, "onload_sock_udp_bind");
	SYM(udp_connect, "onload_sock_udp_connect");
	SYM(udp_disconnect, "onload_sock_udp_disconnect");
	SYM(udp_send, "onload_sock_udp_send");
	SYM(udp_recv, "onload_sock_udp_recv");
	SYM(udp_next_length, "onload_sock_udp_next_length");
	SYM(udp_close, "onload_sock_udp_close");
	SYM(udp_name, "onload_sock_udp_name");
	SYM(udp_take_error, "onload_sock_udp_take_error");
	SYM(udp_setopt, "onload_sock_udp_setopt");
	SYM(zc_lend, "onload_sock_zc_lend");
	SYM(zc_return, "onload_sock_zc_return");
	SYM(zc_reserve, "onload_sock_zc_reserve");
	SYM(zc_commit, "onload_sock_zc_commit");
	SYM(zc_acked, "onload_sock_zc_acked");
#undef SYM
	debug("loaded %s", path);
	/* The first call into the library starts the .NET runtime (on this thread), then the stack. */
	int rc = st.init();
	if (rc < 0) {
		char reason[512] = "";
		st.start_failure(reason, (int)sizeof reason);
		snprintf(why, why_len, "%s (%s)", reason, strerror(-rc));
		return -1;
	}
	stack_address = st.local_address();
	stack_owner = getpid();
	const char *ifname = getenv("ONLOAD_INTERFACE");
	stack_ifindex = ifname != NULL ? if_nametoindex(ifname) : 0;
	/* Registered after the stack library loaded, so it runs before that library's exit handlers. */
	atexit(drain_at_exit);
	return 0;
}

/*
 * The program's signal dispositions survive the stack's loading. Starting the .NET runtime sets some of its own:
 * SIGPIPE to SIG_IGN (a program whose handler counted SIGPIPEs saw none, and one relying on the default was not
 * stopped), and SIGINT, SIGQUIT, SIGCHLD and SIGCONT handlers once anything touches its process support. The
 * runtime keeps what it needs to run managed code: SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGTRAP and SIGABRT (it turns
 * faults in managed code into exceptions and chains the rest to the program's handler) and the real-time signals
 * it uses to suspend threads for the garbage collector.
 */
static int runtime_keeps(int sig)
{
	return sig == SIGSEGV || sig == SIGFPE || sig == SIGBUS || sig == SIGILL || sig == SIGTRAP || sig == SIGABRT;
}

static void restore_program_signals(const struct sigaction *saved)
{
	for (int sig = 1; sig < 32; sig++) {
		struct sigaction now;
		if (sig == SIGKILL || sig == SIGSTOP || runtime_keeps(sig) || sigaction(sig, NULL, &now) != 0)
			continue;
		if (now.sa_handler != saved[sig].sa_handler || now.sa_flags != saved[sig].sa_flags) {
			sigaction(sig, &saved[sig], NULL);
			debug("signal %d: the program's disposition restored after the stack started", sig);
		}
	}
}

/* Whether the stack is up, loading it at the first call. Warns once when it cannot be. */
static int stack_ready(void)
{
	int state = __atomic_load_n(&stack_state, __ATOMIC_ACQUIRE);
	if (state == STACK_FORKED) {
		static int warned;
		if (!__atomic_exchange_n(&warned, 1, __ATOMIC_ACQ_REL))
			fprintf(stderr, "onload: pid %d, forked from %d, opens its sockets on the kernel: a forked child "
					"cannot use its parent's stack yet\n", (int)getpid(), (int)stack_owner);
		return 0;
	}
	if (state != STACK_UNTRIED)
		return state == STACK_READY;
	pthread_mutex_lock(&stack_load_lock);
	if (stack_state == STACK_UNTRIED) {
		char why[1024] = "";
		struct sigaction saved[32];
		for (int sig = 1; sig < 32; sig++)
			sigaction(sig, NULL, &saved[sig]);
		/* The threads the runtime and the stack start now inherit this mask: the program's asynchronous signals
		 * are never delivered to them (a handler would run on a thread the program does not know, and a blocking
		 * call the signal was meant to interrupt would go on waiting). */
		sigset_t blocked, old_mask;
		sigemptyset(&blocked);
		for (int sig = 1; sig < 32; sig++)
			if (sig != SIGKILL && sig != SIGSTOP && !runtime_keeps(sig))
				sigaddset(&blocked, sig);
		pthread_sigmask(SIG_BLOCK, &blocked, &old_mask);
		in_stack++;
		int rc = load_stack_locked(why, sizeof why);
		in_stack--;
		pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
		restore_program_signals(saved);
		if (deferred_signals != 0)
			run_deferred_signals();
		if (rc != 0)
			fprintf(stderr, "onload: cannot accelerate sockets, %s: %s\n",
				opt_no_fail ? "using the kernel's" : "socket() fails", why);
		__atomic_store_n(&stack_state, rc == 0 ? STACK_READY : STACK_FAILED, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&stack_load_lock);
	return stack_state == STACK_READY;
}

/* ------------------------------------------------------------------------------- helpers */

static void park_if_exiting(void);

/* A failed call. One made by another thread while exit() closes the accelerated fds can fail for that alone (EBADF
 * after it passed its last park_if_exiting): it parks instead, as under Linux, where exit_group ends the thread
 * before any of its fds close. */
static inline int fail(int negative_errno)
{
	park_if_exiting();
	errno = -negative_errno;
	return -1;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* fd and its dups no longer name a stack socket: from here on their placeholder is the real socket. An epoll set
 * that held them holds alias too (if not -1), with the same events and data. */
static void forget_on_stack(int fd, struct fd_entry *e, int alias)
{
	int h = handle_of(e);
	struct conn_state *c = conn_of(e);
	/* Dups share the placeholder's file, so they go to the kernel with it (a rare, cold path). */
	for (int other = 0; c->refs > 1 && other < fd_table_size; other++)
		if (other != fd && fd_table[other].handle_plus1 == h + 1 && fd_table[other].kind == e->kind) {
			c->refs--;
			fd_table[other].handle_plus1 = 0;
			ep_hand_to_kernel(other, fd_table[other].gen, alias);
		}
	c->refs = 0;
	e->handle_plus1 = 0;
	ep_hand_to_kernel(fd, e->gen, alias);
}

/* Hands an accelerated socket (not yet bound or connected on the stack) back to the kernel:
 * from here on its placeholder is the real socket. */
static void hand_to_kernel(int fd, struct fd_entry *e, const char *why)
{
	debug("fd %d handed to the kernel: %s", fd, why);
	int kind = e->kind, h = handle_of(e);
	forget_on_stack(fd, e, -1);
	STACK(stack_close(kind, h));
}

/* What sockaddr_in_of found: an IPv4 address for the stack, or one only the kernel can carry. */
enum { ADDR_IPV4, ADDR_KERNEL };

/* Whether AF_INET6 socket fd is IPv6-only: its placeholder holds the option (default net.ipv6.bindv6only). */
static int v6only(int fd)
{
	int on = 0;
	socklen_t len = sizeof on;
	return LIBC(getsockopt)(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len) == 0 && on;
}

/*
 * The stack's IPv4 address and port for an address the program gave bind or connect on accelerated socket fd
 * (of `family`): ADDR_IPV4; ADDR_KERNEL for an address only the kernel carries; or, for a malformed one, the
 * errno Linux gives (inet_bind, inet6_bind). A dual-stack AF_INET6 socket (IPV6_V6ONLY off) reaches IPv4 through
 * v4-mapped addresses, ::ffff:a.b.c.d, and its :: covers 0.0.0.0 (RFC 3493 3.7); IPv6 proper, and anything an
 * IPv6-only socket is given, is the kernel's.
 */
static int sockaddr_in_of(int fd, int family, const struct sockaddr *addr, socklen_t len, uint32_t *address, uint16_t *port)
{
	if (family == AF_INET6) {
		if (addr == NULL || len < 24) /* SIN6_LEN_RFC2133: Linux takes the old sockaddr_in6, without scope id */
			return -EINVAL;
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		if (sin6->sin6_family != AF_INET6)
			return -EAFNOSUPPORT;
		if (v6only(fd) || !(IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)))
			return ADDR_KERNEL;
		uint32_t mapped;
		memcpy(&mapped, &sin6->sin6_addr.s6_addr[12], sizeof mapped); /* 0 for :: */
		*address = ntohl(mapped);
		*port = ntohs(sin6->sin6_port);
		return ADDR_IPV4;
	}
	if (addr == NULL || len < (socklen_t)sizeof(struct sockaddr_in))
		return -EINVAL;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
	if (sin->sin_family != AF_INET)
		return -EAFNOSUPPORT;
	*address = ntohl(sin->sin_addr.s_addr);
	*port = ntohs(sin->sin_port);
	return ADDR_IPV4;
}

/*
 * Gives the program an address of the stack's in its socket's family: for AF_INET6, ::ffff:a.b.c.d, and :: for
 * 0.0.0.0 (what Linux's getsockname says of an unbound or wildcard dual-stack socket). As Linux, the address is
 * cut to *len and *len set to its full length.
 */
static void fill_sockaddr(struct sockaddr *addr, socklen_t *len, int family, uint32_t address, uint16_t port)
{
	if (addr == NULL || len == NULL)
		return;
	union {
		struct sockaddr_in v4;
		struct sockaddr_in6 v6;
	} sa;
	socklen_t full;
	memset(&sa, 0, sizeof sa);
	if (family == AF_INET6) {
		sa.v6.sin6_family = AF_INET6;
		sa.v6.sin6_port = htons(port);
		if (address != 0) {
			sa.v6.sin6_addr.s6_addr[10] = 0xff;
			sa.v6.sin6_addr.s6_addr[11] = 0xff;
			uint32_t a = htonl(address);
			memcpy(&sa.v6.sin6_addr.s6_addr[12], &a, sizeof a);
		}
		full = sizeof sa.v6;
	} else {
		sa.v4.sin_family = AF_INET;
		sa.v4.sin_addr.s_addr = htonl(address);
		sa.v4.sin_port = htons(port);
		full = sizeof sa.v4;
	}
	memcpy(addr, &sa, *len < full ? *len : full);
	*len = full;
}

static inline int is_loopback(uint32_t a) { return (a >> 24) == 127; }

/* ------------------------------------------------------------------------ waiting: sleeping */

/*
 * A thread sleeps on an eventfd of its own, which it registers with the stack together with the accelerated sockets
 * and events it waits for (onload_sock_wait_begin). Whichever thread next runs the stack under its lock (the stack's
 * background thread, or a program thread in any socket call) and makes one of them ready writes it. The check that
 * nothing is ready and the registration happen under that lock too: no wake-up is lost, and a wake-up goes only to
 * the thread whose socket became ready, so an idle program sleeps without a bound and uses no CPU.
 *
 * The eventfd is made at the thread's first sleep and closed when the thread exits (a server that makes a thread
 * per connection would otherwise leak one per connection). A forked child closes the forking thread's: it is the
 * same eventfd as the parent's, and the two processes would take each other's wake-ups.
 */
static __thread int wake_fd = -1;
static pthread_key_t wake_fd_key;
static pthread_once_t wake_fd_once = PTHREAD_ONCE_INIT;

static void close_wake_fd(void *fd_plus1)
{
	LIBC(close)((int)(intptr_t)fd_plus1 - 1);
}

static void forget_wake_fd_in_child(void)
{
	if (wake_fd >= 0) {
		LIBC(close)(wake_fd);
		wake_fd = -1;
		pthread_setspecific(wake_fd_key, NULL);
	}
}

static void wake_fd_init(void)
{
	pthread_key_create(&wake_fd_key, close_wake_fd);
	pthread_atfork(NULL, NULL, forget_wake_fd_in_child);
}

/* The calling thread's eventfd; -1 when none can be made (the process is out of fds). */
static int thread_wake_fd(void)
{
	if (wake_fd >= 0)
		return wake_fd;
	pthread_once(&wake_fd_once, wake_fd_init);
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0)
		return -1;
	wake_fd = fd;
	pthread_setspecific(wake_fd_key, (void *)(intptr_t)(fd + 1));
	return fd;
}

/* Empties the thread's eventfd after a wake-up, so that the next sleep starts clean. */
static void take_wake_up(void)
{
	uint64_t v;
	(void)LIBC(read)(wake_fd, &v, sizeof v);
}

/* Without an eventfd a sleeper cannot be woken by the stack: it looks again this often. */
#define UNWAKEABLE_SLEEP_MS 1

/*
 * Another thread is in exit(), which closes the accelerated fds for the stack: under Linux a thread blocked on one
 * waits on until exit_group ends it, never seeing the fd go (a blocked accept would say EBADF). Every wait, spinning
 * or asleep, comes here between looks.
 */
static void park_if_exiting(void)
{
	while (process_exiting && !pthread_equal(pthread_self(), exiting_thread))
		pause();
}

/*
 * Sleeps until one of the accelerated `handles` has one of its `events` (matched exactly), one of the kernel fds in
 * k[0..nk-1] is ready (the caller leaves room for two more entries after them: the thread's eventfd and, without the
 * stack's background thread, the VNIC's wait fd), a signal arrives or sleep_ms passes; ppoll with `sigmask`.
 * `held`, when not NULL, is a lock the caller holds over the arrays: released once the stack has copied them.
 * 0: look again; -1 with errno (EINTR) as poll.
 */
static int sleep_until_ready(const int *handles, const short *events, short *revents, int na, struct pollfd *k, int nk,
			     int sleep_ms, const sigset_t *sigmask, pthread_mutex_t *held)
{
	int wfd = thread_wake_fd();
	int waiter, vnic_fd;
	int rc = STACK(st.wait_begin(wfd, handles, events, revents, na, &waiter, &vnic_fd, &sleep_ms));
	if (held != NULL)
		pthread_mutex_unlock(held);
	if (rc > 0 || rc == -EAGAIN)
		return 0; /* ready meanwhile, or frames waiting */
	if (rc < 0)
		return fail(rc);
	int m = nk;
	if (wfd >= 0)
		k[m++] = (struct pollfd){ .fd = wfd, .events = POLLIN };
	else if (sleep_ms < 0 || sleep_ms > UNWAKEABLE_SLEEP_MS)
		sleep_ms = UNWAKEABLE_SLEEP_MS;
	if (vnic_fd >= 0)
		k[m++] = (struct pollfd){ .fd = vnic_fd, .events = POLLIN };
	rc = sigmask == NULL ? LIBC(poll)(k, (nfds_t)m, sleep_ms)
			     : LIBC(ppoll)(k, (nfds_t)m, sleep_ms < 0 ? NULL : &(struct timespec){ sleep_ms / 1000, (sleep_ms % 1000) * 1000000L }, sigmask);
	int saved = errno;
	if (STACK(st.wait_end(waiter)) == 1)
		take_wake_up();
	park_if_exiting();
	errno = saved;
	return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------ waiting: poll */

extern void __chk_fail(void) __attribute__((noreturn));

/* Whether a select set names an accelerated fd. */
static int select_any(int nfds, fd_set *rd, fd_set *wr, fd_set *ex)
{
	if (in_stack || fd_table == NULL)
		return 0;
	for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
		if (accelerated(fd) != NULL && ((rd && FD_ISSET(fd, rd)) || (wr && FD_ISSET(fd, wr)) || (ex && FD_ISSET(fd, ex))))
			return 1;
	return 0;
}

#define SMALL 64

/*
 * poll() over a mix of accelerated and kernel fds. Checks both, spins for ONLOAD_SPIN_US, then sleeps in the real
 * poll() on the kernel fds and the thread's eventfd, which the stack writes when one of the accelerated fds has one
 * of its events (sleep_until_ready), and checks again.
 */
static int mixed_poll(struct pollfd *fds, nfds_t nfds, int timeout, const sigset_t *sigmask)
{
	int handles_small[SMALL], where_small[SMALL];
	short events_small[SMALL], revents_small[SMALL];
	struct pollfd kfds_small[SMALL + 2]; /* + the thread's eventfd and perhaps the VNIC's wait fd */
	int *handles = handles_small, *where = where_small;
	short *events = events_small, *revents = revents_small;
	struct pollfd *kfds = kfds_small;
	int *kwhere = NULL, kwhere_small[SMALL];
	int result = -1;

	if (nfds > SMALL) {
		handles = malloc(nfds * sizeof *handles);
		where = malloc(nfds * sizeof *where);
		events = malloc(nfds * sizeof *events);
		revents = malloc(nfds * sizeof *revents);
		kfds = malloc((nfds + 2) * sizeof *kfds);
		kwhere = malloc(nfds * sizeof *kwhere);
		if (!handles || !where || !events || !revents || !kfds || !kwhere) {
			errno = ENOMEM;
			goto out;
		}
	} else
		kwhere = kwhere_small;

	int na = 0, nk = 0;
	for (nfds_t i = 0; i < nfds; i++) {
		fds[i].revents = 0;
		struct fd_entry *e = accelerated(fds[i].fd);
		if (e != NULL) {
			handles[na] = poll_handle_of(e);
			/* poll reports these whether asked or not: a sleep ends for them too. */
			events[na] = (short)(fds[i].events | POLLERR | POLLHUP | POLLNVAL);
			where[na++] = (int)i;
		} else {
			kfds[nk] = fds[i];
			kwhere[nk++] = (int)i;
		}
	}

	long start = now_ns();
	long deadline = timeout < 0 ? -1 : start + timeout * 1000000L;
	for (;;) {
		int ready = 0;
		park_if_exiting();
		int rc = STACK(st.poll(handles, events, revents, na));
		if (rc < 0) {
			errno = -rc;
			goto out;
		}
		for (int i = 0; i < na; i++) {
			fds[where[i]].revents = revents[i];
			ready += revents[i] != 0;
		}
		if (nk > 0) {
			rc = LIBC(poll)(kfds, (nfds_t)nk, 0);
			if (rc < 0)
				goto out;
			for (int i = 0; i < nk; i++) {
				fds[kwhere[i]].revents = kfds[i].revents;
				ready += kfds[i].revents != 0;
			}
		}
		long now = now_ns();
		if (ready > 0 || timeout == 0 || (deadline >= 0 && now >= deadline)) {
			result = ready;
			goto out;
		}
		if (now - start < spin_ns(thread_waiting_in))
			continue;
		int sleep_ms = deadline < 0 ? -1 : (int)((deadline - now + 999999) / 1000000);
		/* EINTR: a signal, as the kernel's poll would say. ppoll/pselect's mask holds while asleep (the spin
		 * before runs under the thread's own mask, as glibc's emulation of them once did). */
		if (sleep_until_ready(handles, events, revents, na, kfds, nk, sleep_ms, sigmask, NULL) < 0)
			goto out;
	}
out:
	if (nfds > SMALL) {
		free(handles); free(where); free(events); free(revents); free(kfds); free(kwhere);
	}
	return result;
}

/* The SA_RESTART flag of the last signal handler this thread ran (set by the trampoline). */
static __thread int last_handler_restarts;

/*
 * Blocks until an accelerated fd has one of `events`: 0, or -1 with errno. EAGAIN when the socket's SO_RCVTIMEO
 * (POLLIN) or SO_SNDTIMEO (POLLOUT) passes first. A signal whose handler was installed with SA_RESTART resumes the
 * wait, as the kernel restarts the call; without it, or when the socket has a timeout (Linux's sock_intr_errno),
 * the call fails with EINTR.
 */
static int wait_for(int fd, short events)
{
	struct conn_state *c = conn_of(&fd_table[fd]);
	int timeout_ms = (events & POLLOUT) ? c->snd_timeo_ms : c->rcv_timeo_ms;
	long deadline = timeout_ms > 0 ? now_ns() + timeout_ms * 1000000L : 0;
	for (;;) {
		int left = -1;
		if (deadline != 0) {
			long ns = deadline - now_ns();
			if (ns <= 0)
				return fail(-EAGAIN);
			left = (int)((ns + 999999) / 1000000);
		}
		struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
		last_handler_restarts = 0;
		thread_waiting_in = (events & POLLOUT) ? SPIN_SEND : SPIN_RECV;
		int rc = mixed_poll(&p, 1, left, NULL);
		thread_waiting_in = SPIN_POLL;
		if (rc > 0)
			return 0;
		if (rc == 0)
			continue; /* the deadline decides */
		if (errno != EINTR || !last_handler_restarts || timeout_ms > 0)
			return -1;
	}
}

/* A call on accelerated fd found nothing to do: -1 with EAGAIN when it must not block (noted for EPOLLET), else it
 * waits for POLLOUT (writing) or POLLIN: 0 to try again, -1 with errno. */
static int await_ready(int fd, struct fd_entry *e, int nonblock, int writing)
{
	if (nonblock) {
		note_eagain(e, writing);
		return fail(-EAGAIN);
	}
	return wait_for(fd, writing ? POLLOUT : POLLIN);
}

/* ---------------------------------------------------------------------------------- UDP */

/*
 * UDP sockets on the stack. A datagram moves whole in one stack call, from the caller's own buffers (a gather or
 * scatter list goes to the stack as is): nothing is allocated per datagram. A socket the stack has not bound yet
 * goes to the kernel, as a TCP socket does, when it is bound to 127/8 or sends or connects to a local destination
 * (127/8, INADDR_ANY, the stack's own address) or one the stack cannot route. Once bound it stays on the stack,
 * which sends to those local destinations through the port's backing kernel socket and hears the answers there.
 *
 * An AF_INET6 socket follows the same rules through v4-mapped addresses (sockaddr_in_of, fill_sockaddr), and goes to
 * the kernel at its first IPv6 address, or when IPv6-only, while the stack has not bound it. Once bound it cannot
 * move (the port and its queued datagrams are the stack's): an IPv6 destination then fails (udp_no_ipv6).
 */

static inline int is_local_destination(uint32_t a) { return is_loopback(a) || a == 0 || a == stack_address; }

/* Whether the stack has given the socket a port yet (explicit bind, or an implicit one at send or connect). */
static int udp_bound(const struct fd_entry *e)
{
	uint32_t address;
	uint16_t port = 0;
	return STACK(st.udp_name(handle_of(e), 0, &address, &port)) == 0 && port != 0;
}

/*
 * A destination (connect, sendto) on UDP socket fd, as sockaddr_in_of reads it, and also a plain sockaddr_in on a
 * dual-stack AF_INET6 socket, which Linux's udpv6_sendmsg and ip6_datagram_connect take as IPv4 (an IPv6-only
 * socket's goes to the kernel, which refuses it).
 */
static int udp_destination_of(int fd, const struct fd_entry *e, const struct sockaddr *addr, socklen_t len,
			      uint32_t *address, uint16_t *port)
{
	if (family_of(e) == AF_INET6 && addr != NULL && len >= (socklen_t)sizeof(sa_family_t) && addr->sa_family == AF_INET)
		return v6only(fd) ? ADDR_KERNEL : sockaddr_in_of(fd, AF_INET, addr, len, address, port);
	return sockaddr_in_of(fd, family_of(e), addr, len, address, port);
}

/*
 * An AF_INET6 socket already bound on the stack, which carries IPv4 only, given IPv6 to carry (a destination, or a
 * group to join). Linux would carry it; the port and its queued datagrams cannot move to the kernel, so the call
 * fails with `negative_errno` (ENETUNREACH for a destination: no route to it from here) and says why, once.
 */
static int udp_no_ipv6(int fd, int negative_errno, const char *what)
{
	static int warned;
	if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		fprintf(stderr, "onload: fd %d: %s on a UDP socket already bound on the stack, which carries IPv4 only: %s "
				"(a socket IPv6-only, or given IPv6 before its first bind or send, stays on the kernel; shown once)\n",
			fd, what, strerror(-negative_errno));
	return fail(negative_errno);
}

static int udp_bind(int fd, struct fd_entry *e, const struct sockaddr *addr, socklen_t len)
{
	uint32_t address;
	uint16_t port;
	int rc = sockaddr_in_of(fd, family_of(e), addr, len, &address, &port);
	if (rc < 0)
		return fail(rc);
	if (rc == ADDR_KERNEL || is_loopback(address)) {
		if (udp_bound(e))
			return fail(-EINVAL); /* already bound, as Linux */
		hand_to_kernel(fd, e, rc == ADDR_KERNEL ? "bound to an IPv6 address or IPv6-only" : "bound to loopback");
		return LIBC(bind)(fd, addr, len);
	}
	rc = STACK(st.udp_bind(handle_of(e), address, port));
	if (rc < 0)
		return fail(rc);
	debug("fd %d bound (UDP socket %d)", fd, handle_of(e));
	return 0;
}

static int udp_connect(int fd, struct fd_entry *e, const struct sockaddr *addr, socklen_t len)
{
	if (addr != NULL && len >= (socklen_t)sizeof(sa_family_t) && addr->sa_family == AF_UNSPEC) {
		int rc = STACK(st.udp_disconnect(handle_of(e)));
		return rc < 0 ? fail(rc) : 0;
	}
	uint32_t address;
	uint16_t port;
	int rc = udp_destination_of(fd, e, addr, len, &address, &port);
	if (rc < 0)
		return fail(rc);
	int unbound = !udp_bound(e);
	if (rc == ADDR_KERNEL) {
		if (!unbound)
			return udp_no_ipv6(fd, -ENETUNREACH, "connect to an IPv6 address");
		hand_to_kernel(fd, e, "not an IPv4 destination");
		return LIBC(connect)(fd, addr, len);
	}
	if (unbound && is_local_destination(address)) {
		hand_to_kernel(fd, e, "a local destination");
		return LIBC(connect)(fd, addr, len);
	}
	rc = STACK(st.udp_connect(handle_of(e), address, port));
	if (unbound && (rc == -ENETUNREACH || rc == -EHOSTUNREACH)) {
		hand_to_kernel(fd, e, "no route through the accelerated interface");
		return LIBC(connect)(fd, addr, len);
	}
	if (rc < 0)
		return fail(rc);
	debug("fd %d connected (UDP socket %d)", fd, handle_of(e));
	return 0;
}

/*
 * One datagram from iov, to addr (or the connected peer when addr is NULL). The stack never waits for room (a
 * send goes to the ring or fails), so a blocking socket does not block either. The caller has checked that e is
 * a UDP socket; it returns through the kernel when the socket goes there.
 */
static ssize_t udp_send(int fd, struct fd_entry *e, const struct msghdr *msg, int flags)
{
	if (msg->msg_controllen > 0 || (flags & MSG_MORE))
		return fail(-EOPNOTSUPP); /* no control messages, no corking on the stack yet */
	if (msg->msg_iovlen > IOV_MAX)
		return fail(-EMSGSIZE);
	uint32_t address = 0;
	uint16_t port = 0;
	int to = msg->msg_name != NULL && msg->msg_namelen > 0;
	if (to) {
		int rc = udp_destination_of(fd, e, msg->msg_name, msg->msg_namelen, &address, &port);
		if (rc < 0)
			return fail(rc);
		if (rc == ADDR_KERNEL) {
			if (udp_bound(e))
				return udp_no_ipv6(fd, -ENETUNREACH, "a datagram to an IPv6 address");
			hand_to_kernel(fd, e, "not an IPv4 destination");
			return LIBC(sendmsg)(fd, msg, flags);
		}
		if (is_local_destination(address) && !udp_bound(e)) {
			hand_to_kernel(fd, e, "a local destination");
			return LIBC(sendmsg)(fd, msg, flags);
		}
	}
	int rc = STACK(st.udp_send(handle_of(e), msg->msg_iov, (int)msg->msg_iovlen, to, address, port));
	if (to && (rc == -ENETUNREACH || rc == -EHOSTUNREACH) && !udp_bound(e)) {
		hand_to_kernel(fd, e, "no route through the accelerated interface");
		return LIBC(sendmsg)(fd, msg, flags);
	}
	return rc < 0 ? fail(rc) : rc;
}

/*
 * The next datagram into msg's buffers, its sender into msg_name; MSG_TRUNC in msg_flags when it did not fit, and
 * with MSG_TRUNC in flags the datagram's real length returned (as Linux). MSG_PEEK leaves it queued. Blocks unless
 * the socket is non-blocking or MSG_DONTWAIT is given.
 */
static ssize_t udp_recv(int fd, struct fd_entry *e, struct msghdr *msg, int flags)
{
	if (flags & MSG_ERRQUEUE)
		return fail(-EAGAIN); /* no IP_RECVERR on the stack: the error queue is always empty */
	if (msg->msg_iovlen > IOV_MAX)
		return fail(-EMSGSIZE);
	int nonblock = nonblocking(e) || (flags & MSG_DONTWAIT);
	uint32_t address;
	uint16_t port;
	int length;
	for (;;) {
		int rc = STACK(st.udp_recv(handle_of(e), msg->msg_iov, (int)msg->msg_iovlen, (flags & MSG_PEEK) != 0,
					   &address, &port, &length));
		if (rc >= 0) {
			if (msg->msg_name != NULL)
				fill_sockaddr(msg->msg_name, &msg->msg_namelen, family_of(e), address, port);
			else
				msg->msg_namelen = 0;
			msg->msg_controllen = 0;
			msg->msg_flags = length > rc ? MSG_TRUNC : 0;
			return (flags & MSG_TRUNC) ? length : rc;
		}
		if (rc != -EAGAIN)
			return fail(rc);
		if (await_ready(fd, e, nonblock, 0) < 0)
			return -1;
	}
}

/* recv/read/recvfrom and send/write/sendto as a one-buffer message. */
static ssize_t udp_recv_buf(int fd, struct fd_entry *e, void *buf, size_t len, int flags, struct sockaddr *addr,
			    socklen_t *alen)
{
	struct iovec v = { .iov_base = buf, .iov_len = len };
	struct msghdr m = { .msg_name = addr, .msg_namelen = alen != NULL ? *alen : 0, .msg_iov = &v, .msg_iovlen = 1 };
	ssize_t n = udp_recv(fd, e, &m, flags);
	if (n >= 0 && addr != NULL && alen != NULL)
		*alen = m.msg_namelen;
	return n;
}

static ssize_t udp_send_buf(int fd, struct fd_entry *e, const void *buf, size_t len, int flags,
			    const struct sockaddr *addr, socklen_t alen)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addr != NULL ? alen : 0, .msg_iov = &v, .msg_iovlen = 1 };
	return udp_send(fd, e, &m, flags);
}

/* The interface a multicast option names (an address, or an index from ip_mreqn) must be the stack's. */
static int udp_our_interface(uint32_t address, int ifindex)
{
	if (ifindex != 0)
		return (unsigned)ifindex == stack_ifindex;
	return address == INADDR_ANY || address == stack_address;
}

/*
 * setsockopt on a UDP socket: the options the stack keeps go to it; all but the memberships also go to the
 * placeholder first, which checks them as Linux does and answers getsockopt. A membership is the stack's alone: the
 * placeholder, bound to no port, would join in the kernel for nothing (or fail for want of a multicast route).
 */
static int udp_setsockopt(int fd, struct fd_entry *e, int level, int name, const void *value, socklen_t len)
{
	int h = handle_of(e);
	if (level == IPPROTO_IPV6 && family_of(e) == AF_INET6) {
		int bound = udp_bound(e);
		if (name == IPV6_V6ONLY && bound)
			return fail(-EINVAL); /* as Linux, once the socket has a port */
		if (name == IPV6_ADD_MEMBERSHIP || name == MCAST_JOIN_GROUP || name == MCAST_JOIN_SOURCE_GROUP) {
			/* An IPv6 group's datagrams are the kernel's to receive. Other IPv6 options (IPV6_MULTICAST_HOPS, ...)
			 * concern IPv6 packets only: the placeholder keeps them for when the socket goes to the kernel. */
			if (bound)
				return udp_no_ipv6(fd, -ENODEV, "joining an IPv6 group");
			hand_to_kernel(fd, e, "joining an IPv6 group");
			return LIBC(setsockopt)(fd, level, name, value, len);
		}
	}
	if (level == IPPROTO_IP && (name == IP_ADD_MEMBERSHIP || name == IP_DROP_MEMBERSHIP)) {
		if (value == NULL || len < (socklen_t)sizeof(struct ip_mreq))
			return fail(-EINVAL);
		struct ip_mreqn mreq = { 0 }; /* ip_mreq is its first part */
		memcpy(&mreq, value, len < (socklen_t)sizeof mreq ? len : sizeof mreq);
		if (!udp_our_interface(ntohl(mreq.imr_address.s_addr), len >= (socklen_t)sizeof mreq ? mreq.imr_ifindex : 0))
			return fail(-ENODEV); /* the stack has one interface */
		int rc = STACK(st.udp_setopt(h, name == IP_ADD_MEMBERSHIP ? ONLOAD_UDP_OPT_ADD_MEMBERSHIP : ONLOAD_UDP_OPT_DROP_MEMBERSHIP,
					     ntohl(mreq.imr_multiaddr.s_addr)));
		return rc < 0 ? fail(rc) : 0;
	}
	if (level == IPPROTO_IP && name == IP_MULTICAST_IF && value != NULL && len >= (socklen_t)sizeof(struct in_addr)) {
		struct ip_mreqn mreq = { 0 };
		if (len >= (socklen_t)sizeof(struct ip_mreq))
			memcpy(&mreq, value, len < (socklen_t)sizeof mreq ? len : sizeof mreq);
		else
			memcpy(&mreq.imr_address, value, sizeof mreq.imr_address); /* a bare struct in_addr */
		if (!udp_our_interface(ntohl(mreq.imr_address.s_addr), len >= (socklen_t)sizeof mreq ? mreq.imr_ifindex : 0))
			return fail(-EADDRNOTAVAIL); /* the stack sends through its own interface only */
	}
	int rc = LIBC(setsockopt)(fd, level, name, value, len);
	if (rc != 0)
		return rc;
	int option = level == SOL_SOCKET && name == SO_RCVBUF ? ONLOAD_UDP_OPT_RCVBUF
		   : level == SOL_SOCKET && name == SO_BROADCAST ? ONLOAD_UDP_OPT_BROADCAST
		   : level == SOL_SOCKET && name == SO_REUSEADDR ? ONLOAD_UDP_OPT_REUSEADDR
		   : level == SOL_SOCKET && name == SO_REUSEPORT ? ONLOAD_UDP_OPT_REUSEPORT
		   : level == IPPROTO_IP && name == IP_MULTICAST_TTL ? ONLOAD_UDP_OPT_MULTICAST_TTL
		   : level == IPPROTO_IP && name == IP_MULTICAST_LOOP ? ONLOAD_UDP_OPT_MULTICAST_LOOP : 0;
	if (option == 0)
		return 0;
	int v = 0;
	if (option == ONLOAD_UDP_OPT_RCVBUF) {
		v = *(const int *)value; /* the placeholder accepted it, so it holds an int; the stack doubles it as Linux */
	} else {
		/* The placeholder's reading of it: the TTL and loop options take an int or a byte, and -1 means the default. */
		socklen_t vlen = sizeof v;
		if (LIBC(getsockopt)(fd, level, name, &v, &vlen) != 0)
			return -1;
	}
	int r = STACK(st.udp_setopt(h, option, (uint32_t)v));
	return r < 0 ? fail(r) : 0;
}

/*
 * sendmmsg and recvmmsg, on any accelerated fd: one message at a time through sendmsg/recvmsg. recvmmsg waits for
 * the first datagram as recvmsg does; after it, MSG_WAITFORONE takes only what is queued, and a timeout bounds the
 * wait for each further one (Linux checks its timeout only after each datagram arrives; see recvmmsg(2), BUGS).
 */
EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags);

EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(sendmmsg)(fd, vec, vlen, flags);
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV; /* as Linux */
	unsigned int i;
	for (i = 0; i < vlen; i++) {
		ssize_t n = sendmsg(fd, &vec[i].msg_hdr, flags);
		if (n < 0)
			return i > 0 ? (int)i : -1;
		vec[i].msg_len = (unsigned int)n;
	}
	return (int)i;
}

EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(recvmmsg)(fd, vec, vlen, flags, timeout);
	if (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L))
		return fail(-EINVAL);
	long deadline = timeout == NULL ? -1 : now_ns() + timeout->tv_sec * 1000000000L + timeout->tv_nsec;
	if (vlen > UIO_MAXIOV)
		vlen = UIO_MAXIOV;
	unsigned int i;
	int err = 0;
	for (i = 0; i < vlen; i++) {
		int f = flags & ~MSG_WAITFORONE;
		if (i > 0 && (flags & MSG_WAITFORONE))
			f |= MSG_DONTWAIT;
		else if (i > 0 && deadline >= 0) {
			long left = deadline - now_ns();
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (left <= 0 || poll(&p, 1, (int)((left + 999999) / 1000000)) <= 0)
				break;
			f |= MSG_DONTWAIT;
		}
		ssize_t n = recvmsg(fd, &vec[i].msg_hdr, f);
		if (n < 0) {
			err = errno;
			break;
		}
		vec[i].msg_len = (unsigned int)n;
	}
	if (timeout != NULL) { /* Linux writes back the time left */
		long left = deadline - now_ns();
		if (left < 0)
			left = 0;
		timeout->tv_sec = left / 1000000000L;
		timeout->tv_nsec = left % 1000000000L;
	}
	return i == 0 && err != 0 ? fail(-err) : (int)i;
}

/* ---------------------------------------------------------------------- the interceptors */

/* Which kind of stack socket carries socket(domain, type, protocol); -1: the kernel's. */
/* onload_set_stackname(..., ONLOAD_DONT_ACCELERATE): this thread's, or every thread's, new sockets are the
 * kernel's. */
static __thread int thread_stack_choice; /* 0: as the process; 1: accelerate; 2: the kernel's */
static int process_dont_accelerate;

static inline int dont_accelerate(void)
{
	return thread_stack_choice != 0 ? thread_stack_choice == 2 : __atomic_load_n(&process_dont_accelerate, __ATOMIC_RELAXED);
}

static int accelerated_kind(int domain, int type, int protocol)
{
	type &= ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP))
		return KIND_TCP;
	if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP))
		return KIND_UDP;
	return -1;
}

EXPORT int socket(int domain, int type, int protocol)
{
	int fd = LIBC(socket)(domain, type, protocol);
	int kind = accelerated_kind(domain, type, protocol);
	if (fd < 0 || in_stack || kind < 0 || dont_accelerate())
		return fd;
	if (fd >= fd_table_size || !stack_ready()) {
		if (opt_no_fail)
			return fd;
		LIBC(close)(fd);
		return fail(fd >= fd_table_size ? -EMFILE : -ENETDOWN);
	}
	int h = STACK(kind == KIND_UDP ? st.udp_open() : st.open());
	if (h >= fd_table_size) { /* past the connection table */
		STACK(stack_close(kind, h));
		h = -EMFILE;
	}
	if (h < 0) {
		if (opt_no_fail) {
			debug("fd %d on the kernel: the stack has no room (%s)", fd, strerror(-h));
			return fd;
		}
		LIBC(close)(fd);
		return fail(h);
	}
	take_fd(fd, kind, h, (type & SOCK_NONBLOCK) ? FD_NONBLOCK : 0);
	conn_of(&fd_table[fd])->family = domain;
	debug("fd %d accelerated (%s %d%s)", fd, kind == KIND_UDP ? "UDP socket" : "connection", h,
	      domain == AF_INET6 ? ", AF_INET6" : "");
	return fd;
}

EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(bind)(fd, addr, len);
	if (e->kind == KIND_UDP)
		return udp_bind(fd, e, addr, len);
	uint32_t address;
	uint16_t port;
	int rc = sockaddr_in_of(fd, family_of(e), addr, len, &address, &port);
	if (rc < 0)
		return fail(rc);
	if (rc == ADDR_KERNEL || is_loopback(address)) {
		hand_to_kernel(fd, e, rc == ADDR_KERNEL ? "bound to an IPv6 address or IPv6-only" : "bound to loopback");
		return LIBC(bind)(fd, addr, len);
	}
	rc = STACK(st.bind(handle_of(e), address, port));
	return rc < 0 ? fail(rc) : 0;
}

EXPORT int listen(int fd, int backlog)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL || e->kind == KIND_UDP) /* a datagram socket's placeholder says EOPNOTSUPP, as Linux */
		return LIBC(listen)(fd, backlog);
	int rc = STACK(st.listen(handle_of(e), backlog));
	if (rc < 0)
		return fail(rc);
	conn_of(e)->backlog = backlog;
	debug("fd %d listening", fd);
	return 0;
}

/*
 * A listener's stash: the connections waiting in its accept queue when it went to the kernel, each handed over
 * too and parked as an SCM_RIGHTS message in a socketpair whose read end the processes share after fork. Whichever
 * process accepts on the listener first takes the next one, exactly once (the kernel's own queue follows); those
 * nobody takes are closed by the kernel with the last holder of the pair. They make the listener readable to poll
 * and ppoll (poll_stashes) and to epoll sets (the read end follows the listener in: stash_epoll_ctl); select does
 * not see them yet.
 */
#define MAX_STASHES 64
static struct { int listener, pair, writer; } stashes[MAX_STASHES]; /* the writer stays open: no end-of-file */
static int stash_count;

/* The index of listener fd's stash, or -1. */
static int find_stash(int listener)
{
	for (int i = 0; i < stash_count; i++)
		if (stashes[i].listener == listener)
			return i;
	return -1;
}

static void drop_stash(int i)
{
	LIBC(close)(stashes[i].pair);
	LIBC(close)(stashes[i].writer);
	stashes[i] = stashes[--stash_count];
}

/* epoll_ctl on a listener with a stash: the stash's read end follows it into (or out of) the set, with its events
 * and data, so that its stashed connections wake the set as the listener's. */
static void stash_epoll_ctl(int epfd, int op, int listener, struct epoll_event *event)
{
	int i = find_stash(listener);
	if (i >= 0 && LIBC(epoll_ctl)(epfd, op, stashes[i].pair, event) != 0 && op == EPOLL_CTL_ADD && errno == EEXIST)
		LIBC(epoll_ctl)(epfd, EPOLL_CTL_MOD, stashes[i].pair, event);
}

/* Whether listener fd has a connection stashed (poll: "readable"). */
static int stash_pending(int listener)
{
	int i = find_stash(listener);
	struct pollfd p = { .fd = i >= 0 ? stashes[i].pair : -1, .events = POLLIN };
	return i >= 0 && LIBC(poll)(&p, 1, 0) == 1;
}

/* The listener is closed: this process takes none of its stashed connections any more. */
static void forget_stash(int listener)
{
	int i = find_stash(listener);
	if (i >= 0)
		drop_stash(i);
}

/* The next connection stashed for listener fd, or -1 when there is none (any more). */
static int take_stashed(int listener)
{
	int i = find_stash(listener);
	if (i < 0)
		return -1;
	char byte;
	struct iovec iov = { &byte, 1 };
	union { struct cmsghdr h; char space[CMSG_SPACE(sizeof(int))]; } control;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
	ssize_t n = LIBC(recvmsg)(stashes[i].pair, &m, MSG_DONTWAIT);
	struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
	if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
		int fd;
		memcpy(&fd, CMSG_DATA(c), sizeof fd);
		return fd;
	}
	if (n < 0 && errno != EINTR) /* taken, every one (EAGAIN: by another process) */
		drop_stash(i);
	return -1;
}

/* accept on a listener handed to the kernel: its stashed connections first, with accept4's flags. */
static int accept_stashed(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	int saved_errno = errno;
	int nfd = take_stashed(fd);
	errno = saved_errno;
	if (nfd < 0)
		return -1;
	if (flags & SOCK_NONBLOCK)
		LIBC(fcntl)(nfd, F_SETFL, LIBC(fcntl)(nfd, F_GETFL) | O_NONBLOCK);
	if (flags & SOCK_CLOEXEC)
		LIBC(fcntl)(nfd, F_SETFD, FD_CLOEXEC);
	if (addr != NULL && len != NULL)
		LIBC(getpeername)(nfd, addr, len);
	return nfd;
}

/* Parks connection fd (a kernel socket now) in the stash being filled through pair_end; closes it here. */
static int stash(int pair_end, int fd)
{
	char byte = 0;
	struct iovec iov = { &byte, 1 };
	union { struct cmsghdr h; char space[CMSG_SPACE(sizeof(int))]; } control;
	memset(&control, 0, sizeof control);
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof fd);
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	int rc = LIBC(sendmsg)(pair_end, &m, MSG_DONTWAIT) == 1 ? 0 : -errno;
	LIBC(close)(fd);
	return rc;
}

/* An accepted socket starts with its listener's SO_RCVTIMEO and SO_SNDTIMEO, as Linux's clone of it does. */
static void inherit_timeouts(int nfd, const struct conn_state *listener)
{
	struct conn_state *c = conn_of(&fd_table[nfd]);
	c->rcv_timeo_ms = listener->rcv_timeo_ms;
	c->snd_timeo_ms = listener->snd_timeo_ms;
	struct timeval rcv = { listener->rcv_timeo_ms / 1000, (listener->rcv_timeo_ms % 1000) * 1000 };
	struct timeval snd = { listener->snd_timeo_ms / 1000, (listener->snd_timeo_ms % 1000) * 1000 };
	if (c->rcv_timeo_ms > 0)
		LIBC(setsockopt)(nfd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof rcv);
	if (c->snd_timeo_ms > 0)
		LIBC(setsockopt)(nfd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof snd);
}

static int accept_common(int fd, struct sockaddr *addr, socklen_t *len, int flags, struct fd_entry *e)
{
	uint32_t address;
	uint16_t port;
	int c;
	for (;;) {
		c = STACK(st.accept(handle_of(e), &address, &port));
		if (c != -EAGAIN)
			break;
		if (nonblocking(e)) {
			note_eagain(e, 0);
			return fail(-EAGAIN);
		}
		if (wait_for(fd, POLLIN) < 0)
			return -1;
	}
	if (c < 0)
		return fail(c);
	int nfd = LIBC(socket)(family_of(e), SOCK_STREAM | (flags & (SOCK_NONBLOCK | SOCK_CLOEXEC)), 0);
	if (nfd < 0 || nfd >= fd_table_size || c >= fd_table_size) {
		int err = nfd < 0 ? errno : EMFILE;
		if (nfd >= 0)
			LIBC(close)(nfd);
		STACK(st.close(c));
		return fail(-err);
	}
	take_fd(nfd, KIND_TCP, c, (flags & SOCK_NONBLOCK) ? FD_NONBLOCK : 0);
	conn_of(&fd_table[nfd])->family = family_of(e);
	inherit_timeouts(nfd, conn_of(e));
	fill_sockaddr(addr, len, family_of(e), address, port);
	debug("fd %d accepted on fd %d (connection %d)", nfd, fd, c);
	return nfd;
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct fd_entry *e = accelerated(fd);
	int nfd;
	if (stash_count > 0 && (nfd = accept_stashed(fd, addr, len, 0)) >= 0)
		return nfd;
	if (e == NULL || e->kind == KIND_UDP)
		return LIBC(accept)(fd, addr, len);
	return accept_common(fd, addr, len, 0, e);
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct fd_entry *e = accelerated(fd);
	int nfd;
	if (stash_count > 0 && (nfd = accept_stashed(fd, addr, len, flags)) >= 0)
		return nfd;
	if (e == NULL || e->kind == KIND_UDP)
		return LIBC(accept4)(fd, addr, len, flags);
	return accept_common(fd, addr, len, flags, e);
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(connect)(fd, addr, len);
	if (e->kind == KIND_UDP)
		return udp_connect(fd, e, addr, len);
	uint32_t address;
	uint16_t port;
	int rc = sockaddr_in_of(fd, family_of(e), addr, len, &address, &port);
	if (rc != ADDR_IPV4 || is_loopback(address) || address == 0 || address == stack_address) {
		/* AF_UNSPEC (disconnect), IPv6, loopback, 0.0.0.0 or :: (Linux's "this host") and this host's own
		 * address: only the kernel carries them. */
		hand_to_kernel(fd, e, rc != ADDR_IPV4 ? "not an IPv4 destination" : "a local destination");
		return LIBC(connect)(fd, addr, len);
	}
	int h = handle_of(e);
	struct conn_state *c = conn_of(e);
	rc = STACK(st.connect(h, address, port));
	if (rc == -EISCONN && c->connecting) {
		/* Linux: the first connect after one that returned early reports the handshake's end with 0. */
		c->connecting = 0;
		return 0;
	}
	if (rc == -ENETUNREACH || rc == -EHOSTUNREACH) {
		hand_to_kernel(fd, e, "no route through the accelerated interface");
		return LIBC(connect)(fd, addr, len);
	}
	if (rc != -EINPROGRESS)
		return rc < 0 ? fail(rc) : 0;
	debug("fd %d connecting (connection %d)", fd, h);
	c->connecting = 1;
	if (nonblocking(e))
		return fail(-EINPROGRESS);
	if (wait_for(fd, POLLOUT) < 0)
		return errno == EAGAIN ? fail(-EINPROGRESS) : -1; /* SO_SNDTIMEO passed: Linux says EINPROGRESS */
	c->connecting = 0;
	int err = STACK(st.take_error(h));
	return err > 0 ? fail(-err) : err < 0 ? fail(err) : 0;
}

static int zc_copy_recv(struct fd_entry *e, void *buf, size_t len);

static ssize_t stack_recv(int fd, struct fd_entry *e, void *buf, size_t len, int flags)
{
	int nonblock = nonblocking(e) || (flags & MSG_DONTWAIT);
	while (flags & MSG_PEEK) {
		int rc = STACK(st.peek(handle_of(e), buf, (intptr_t)len));
		if (rc != -EAGAIN)
			return rc < 0 ? fail(rc) : rc;
		if (await_ready(fd, e, nonblock, 0) < 0)
			return -1;
	}
	size_t got = 0;
	for (;;) {
		int rc = STACK(st.recv(handle_of(e), (char *)buf + got, (intptr_t)(len - got)));
		if (rc == -EBUSY) /* bytes lent by onload_zc_recv are still out: copy what follows them */
			rc = zc_copy_recv(e, (char *)buf + got, len - got);
		if (rc > 0) {
			got += (size_t)rc;
			if (!(flags & MSG_WAITALL) || got == len || nonblock)
				return (ssize_t)got;
			continue;
		}
		if (rc == 0 || (rc < 0 && rc != -EAGAIN))
			return got > 0 ? (ssize_t)got : rc == 0 ? 0 : fail(rc);
		if (nonblock) {
			note_eagain(e, 0);
			return got > 0 ? (ssize_t)got : fail(-EAGAIN);
		}
		if (wait_for(fd, POLLIN) < 0)
			return got > 0 ? (ssize_t)got : -1;
	}
}

static ssize_t stack_send_all(int fd, struct fd_entry *e, const void *buf, size_t len, int flags);

/*
 * send() on a connection. MSG_MORE holds a partial segment as TCP_CORK does, until a send without it (Linux's
 * tcp_sendmsg does not push the last segment of a MSG_MORE send); a cork the program set itself stays.
 */
static ssize_t stack_send(int fd, struct fd_entry *e, const void *buf, size_t len, int flags)
{
	struct conn_state *c = conn_of(e);
	int was_more = c->more;
	c->more = (flags & MSG_MORE) != 0;
	if (c->more && !was_more && !c->corked)
		STACK(st.tcp_setopt(handle_of(e), ONLOAD_TCP_OPT_CORK, 1));
	ssize_t n = stack_send_all(fd, e, buf, len, flags);
	if (was_more && !c->more && !c->corked) /* the send that ends a MSG_MORE run pushes what waited */
		STACK(st.tcp_setopt(handle_of(e), ONLOAD_TCP_OPT_CORK, 0));
	return n;
}

static ssize_t stack_send_all(int fd, struct fd_entry *e, const void *buf, size_t len, int flags)
{
	int nonblock = nonblocking(e) || (flags & MSG_DONTWAIT);
	size_t sent = 0;
	for (;;) {
		int rc = STACK(st.send(handle_of(e), (const char *)buf + sent, (intptr_t)(len - sent)));
		if (rc >= 0) {
			sent += (size_t)rc;
			if (sent == len)
				return (ssize_t)sent;
			continue;
		}
		if (rc != -EAGAIN) {
			if (sent > 0)
				return (ssize_t)sent;
			if (rc == -EPIPE && !(flags & MSG_NOSIGNAL))
				raise(SIGPIPE);
			return fail(rc);
		}
		if (nonblock) {
			note_eagain(e, 1);
			return sent > 0 ? (ssize_t)sent : fail(-EAGAIN);
		}
		if (wait_for(fd, POLLOUT) < 0)
			return sent > 0 ? (ssize_t)sent : -1;
	}
}

EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP)
		return udp_recv_buf(fd, e, buf, len, 0, NULL, NULL);
	return e == NULL ? LIBC(read)(fd, buf, len) : stack_recv(fd, e, buf, len, 0);
}

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP)
		return udp_send_buf(fd, e, buf, len, 0, NULL, 0);
	return e == NULL ? LIBC(write)(fd, buf, len) : stack_send(fd, e, buf, len, 0);
}

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP)
		return udp_recv_buf(fd, e, buf, len, flags, NULL, NULL);
	return e == NULL ? LIBC(recv)(fd, buf, len, flags) : stack_recv(fd, e, buf, len, flags);
}

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP)
		return udp_send_buf(fd, e, buf, len, flags, NULL, 0);
	return e == NULL ? LIBC(send)(fd, buf, len, flags) : stack_send(fd, e, buf, len, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(recvfrom)(fd, buf, len, flags, addr, alen);
	if (e->kind == KIND_UDP)
		return udp_recv_buf(fd, e, buf, len, flags, addr, alen);
	ssize_t n = stack_recv(fd, e, buf, len, flags);
	if (n >= 0 && addr != NULL && alen != NULL) {
		uint32_t address;
		uint16_t port;
		if (STACK(st.name(handle_of(e), 1, &address, &port)) == 0)
			fill_sockaddr(addr, alen, family_of(e), address, port);
	}
	return n;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(sendto)(fd, buf, len, flags, addr, alen);
	if (e->kind == KIND_UDP)
		return udp_send_buf(fd, e, buf, len, flags, addr, alen);
	return stack_send(fd, e, buf, len, flags); /* a stream socket ignores the address */
}

/* What closing fd ends on the shim's side: its epoll set's accelerated part, its share of a stack socket. */
static void forget_fd(int fd)
{
	if (!in_stack && fd >= 0 && fd < fd_table_size)
		fd_table[fd].forked = 0; /* closing it is all a forked child may do with it, quietly */
	if (!in_stack && stash_count > 0)
		forget_stash(fd);
	struct fd_entry *e = accelerated(fd);
	if (!in_stack && fd >= 0 && fd < fd_table_size && fd_table[fd].ep != NULL)
		ep_forget(fd);
	if (e != NULL) {
		int h = handle_of(e), kind = e->kind;
		const char *what = kind == KIND_UDP ? "UDP socket" : "connection";
		if (release_fd(e) == 0) {
			zc_forget(&conn_tables[kind][h]);
			STACK(stack_close(kind, h));
			debug("fd %d closed (%s %d)", fd, what, h);
		} else
			debug("fd %d closed (%s %d stays with its other fds)", fd, what, h);
	}
}

EXPORT int close(int fd)
{
	forget_fd(fd);
	return LIBC(close)(fd);
}

/* close_range(2): each accelerated fd or epoll set in the range is let go of as close() does; CLOEXEC only marks. */
EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	if (!in_stack && !(flags & CLOSE_RANGE_CLOEXEC) && first <= last)
		for (unsigned int fd = first; fd <= last && fd < (unsigned int)fd_table_size; fd++)
			if (fd_table[fd].handle_plus1 != 0 || fd_table[fd].ep != NULL || fd_table[fd].forked)
				forget_fd((int)fd);
	return real_close_range != NULL ? real_close_range(first, last, flags)
					: (int)syscall(SYS_close_range, first, last, flags);
}

/*
 * sendfile(2) into an accelerated socket: the file is read into a buffer on this thread's stack, 16 KiB at a time,
 * and sent as send() would (blocking or not, as the socket is). Bytes read but not sent (a non-blocking socket
 * took only part) are given back: the file position, or *offset, moves by what was sent, as Linux's.
 */
EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
	struct fd_entry *e = accelerated(out_fd);
	if (e == NULL)
		return LIBC(sendfile)(out_fd, in_fd, offset, count);
	if (accelerated(in_fd) != NULL)
		return fail(-EINVAL); /* Linux reads only from what it can map: never a socket */
	char chunk[16384];
	size_t sent = 0;
	while (sent < count) {
		size_t want = count - sent < sizeof chunk ? count - sent : sizeof chunk;
		ssize_t got = offset != NULL ? pread(in_fd, chunk, want, *offset) : LIBC(read)(in_fd, chunk, want);
		if (got <= 0) {
			if (got < 0 && sent == 0)
				return -1;
			break; /* end of file, or an error after some bytes: report what went */
		}
		ssize_t n = send(out_fd, chunk, (size_t)got, 0);
		if (n < 0) {
			int err = errno;
			if (offset == NULL)
				lseek(in_fd, -got, SEEK_CUR);
			if (sent > 0)
				break;
			errno = err;
			return -1;
		}
		sent += (size_t)n;
		if (offset != NULL)
			*offset += n;
		else if (n < got)
			lseek(in_fd, n - got, SEEK_CUR);
		if (n < got)
			break; /* the socket took part: a non-blocking one is full */
	}
	return (ssize_t)sent;
}

EXPORT int shutdown(int fd, int how)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(shutdown)(fd, how);
	if (e->kind == KIND_UDP)
		return fail(-EOPNOTSUPP); /* not on the stack's UDP yet */
	int rc = STACK(st.shutdown(handle_of(e), how));
	return rc < 0 ? fail(rc) : 0;
}

static int name_common(int fd, struct sockaddr *addr, socklen_t *len, int peer)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return peer ? LIBC(getpeername)(fd, addr, len) : LIBC(getsockname)(fd, addr, len);
	if (addr == NULL || len == NULL)
		return fail(-EFAULT);
	uint32_t address;
	uint16_t port;
	int rc = STACK(e->kind == KIND_UDP ? st.udp_name(handle_of(e), peer, &address, &port)
					   : st.name(handle_of(e), peer, &address, &port));
	if (rc < 0)
		return fail(rc);
	fill_sockaddr(addr, len, family_of(e), address, port);
	return 0;
}

EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len) { return name_common(fd, addr, len, 0); }

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len) { return name_common(fd, addr, len, 1); }

/*
 * The stack's name and value of a TCP option the placeholder has accepted (so its length and value are good), or
 * 0 for an option the stack does not act on (TCP_QUICKACK, TCP_DEFER_ACCEPT, TCP_MAXSEG, ...: the placeholder
 * keeps them, and reads them back).
 */
static int tcp_option_of(int level, int name, const void *value, socklen_t len, int64_t *v)
{
	int i = len >= (socklen_t)sizeof(int) ? *(const int *)value : 0;
	*v = i;
	if (level == SOL_SOCKET) {
		switch (name) {
		case SO_KEEPALIVE: return ONLOAD_TCP_OPT_KEEPALIVE;
		case SO_RCVBUF: return ONLOAD_TCP_OPT_RCVBUF;
		case SO_SNDBUF: return ONLOAD_TCP_OPT_SNDBUF;
		case SO_REUSEADDR: return ONLOAD_TCP_OPT_REUSEADDR;
		case SO_REUSEPORT: return ONLOAD_TCP_OPT_REUSEPORT;
		case SO_LINGER: {
			const struct linger *l = value;
			*v = l->l_onoff && l->l_linger == 0;
			return ONLOAD_TCP_OPT_LINGER_ZERO;
		}
		}
		return 0;
	}
	if (level != IPPROTO_TCP)
		return 0;
	switch (name) {
	case TCP_NODELAY: return ONLOAD_TCP_OPT_NODELAY;
	case TCP_CORK: return ONLOAD_TCP_OPT_CORK;
	case TCP_KEEPIDLE: return ONLOAD_TCP_OPT_KEEPIDLE;
	case TCP_KEEPINTVL: return ONLOAD_TCP_OPT_KEEPINTVL;
	case TCP_KEEPCNT: return ONLOAD_TCP_OPT_KEEPCNT;
	case TCP_USER_TIMEOUT: return ONLOAD_TCP_OPT_USER_TIMEOUT;
	case TCP_CONGESTION: {
		char algorithm[16] = "";
		memcpy(algorithm, value, len < sizeof algorithm - 1 ? len : sizeof algorithm - 1);
		*v = strcmp(algorithm, "cubic") == 0 ? 1 : strcmp(algorithm, "reno") == 0 ? 2 : 0;
		return ONLOAD_TCP_OPT_CONGESTION;
	}
	}
	return 0;
}

EXPORT int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
	/* The placeholder takes every option (it checks them as Linux does, and keeps them should the
	 * socket go to the kernel); the stack takes those it implements. */
	struct fd_entry *e = accelerated(fd);
	int rc = e != NULL && e->kind == KIND_UDP ? udp_setsockopt(fd, e, level, name, value, len)
						  : LIBC(setsockopt)(fd, level, name, value, len);
	if (rc == 0 && e != NULL && level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO) &&
	    len >= (socklen_t)sizeof(struct timeval)) {
		/* The placeholder checked the value; the stack's waits keep it in ms, rounded up (as jiffies are). */
		const struct timeval *tv = value;
		long ms = tv->tv_sec * 1000L + (tv->tv_usec + 999) / 1000;
		int capped = ms > INT_MAX ? INT_MAX : (int)ms;
		if (name == SO_RCVTIMEO)
			conn_of(e)->rcv_timeo_ms = capped;
		else
			conn_of(e)->snd_timeo_ms = capped;
	}
	if (rc == 0 && e != NULL && e->kind == KIND_TCP) {
		int64_t v;
		int option = tcp_option_of(level, name, value, len, &v);
		if (option == ONLOAD_TCP_OPT_CORK)
			conn_of(e)->corked = v != 0;
		if (option != 0) {
			int r = STACK(st.tcp_setopt(handle_of(e), option, v));
			if (r < 0)
				return fail(r);
		}
	}
	return rc;
}

EXPORT int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_TCP && level == IPPROTO_TCP && name == TCP_INFO) {
		if (value == NULL || len == NULL)
			return fail(-EFAULT);
		int full = STACK(st.tcp_info(handle_of(e), value, (int)*len));
		if (full < 0)
			return fail(full);
		if (*len > (socklen_t)full)
			*len = (socklen_t)full; /* as Linux: the shorter of the two */
		return 0;
	}
	if (e != NULL && e->kind == KIND_TCP && value != NULL && len != NULL &&
	    ((level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF)) || (level == IPPROTO_TCP && name == TCP_CONGESTION))) {
		int option = name == SO_RCVBUF ? ONLOAD_TCP_OPT_RCVBUF : name == SO_SNDBUF ? ONLOAD_TCP_OPT_SNDBUF : ONLOAD_TCP_OPT_CONGESTION;
		int v = STACK(st.tcp_getopt(handle_of(e), option));
		if (v < 0)
			return fail(v);
		if (option == ONLOAD_TCP_OPT_CONGESTION) {
			const char *algorithm = v == 2 ? "reno" : "cubic";
			socklen_t n = (socklen_t)strlen(algorithm) + 1;
			if (*len < n)
				n = *len;
			memcpy(value, algorithm, n);
			*len = n;
			return 0;
		}
		if (*len < (socklen_t)sizeof(int))
			return fail(-EINVAL);
		*(int *)value = v;
		*len = sizeof(int);
		return 0;
	}
	if (e == NULL || level != SOL_SOCKET || name != SO_ERROR)
		return LIBC(getsockopt)(fd, level, name, value, len);
	if (value == NULL || len == NULL || *len < (socklen_t)sizeof(int))
		return fail(-EINVAL);
	int err = STACK(e->kind == KIND_UDP ? st.udp_take_error(handle_of(e)) : st.take_error(handle_of(e)));
	if (err < 0)
		return fail(err);
	*(int *)value = err;
	*len = sizeof(int);
	return 0;
}

/* fcntl: everything goes to the placeholder, so F_GETFL reads back what F_SETFL set; O_NONBLOCK is
 * noted for the stack's calls. */
static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	int rc = real(fd, cmd, arg);
	struct fd_entry *e = accelerated(fd);
	if (rc >= 0 && e != NULL && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		share_fd(rc, e);
	if (rc == 0 && e != NULL && cmd == F_SETFL)
		conn_of(e)->flags = ((intptr_t)arg & O_NONBLOCK) ? (conn_of(e)->flags | FD_NONBLOCK) : (conn_of(e)->flags & ~FD_NONBLOCK);
	return rc;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *); /* as glibc does: one pointer-sized argument, whatever cmd takes */
	va_end(ap);
	return fcntl_common(LIBC(fcntl), fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(LIBC(fcntl64), fd, cmd, arg);
}

static int any_accelerated(struct pollfd *fds, nfds_t nfds)
{
	if (!in_stack && fd_table != NULL)
		for (nfds_t i = 0; i < nfds; i++)
			if (accelerated(fds[i].fd) != NULL)
				return 1;
	return 0;
}

/*
 * poll on a listener whose queued connections a fork or exec stashed (see "fork and exec"): they make it readable,
 * which its kernel socket does not show. Returns -1 when no polled fd has one (poll as usual), else the poll's result
 * at once, with POLLIN added.
 */
static int poll_stashes(struct pollfd *fds, nfds_t nfds)
{
	int any = 0;
	for (nfds_t i = 0; i < nfds && !any; i++)
		any = (fds[i].events & POLLIN) && stash_pending(fds[i].fd);
	if (!any)
		return -1;
	int rc = any_accelerated(fds, nfds) ? mixed_poll(fds, nfds, 0, NULL) : LIBC(poll)(fds, nfds, 0);
	if (rc < 0)
		return rc;
	for (nfds_t i = 0; i < nfds; i++)
		if ((fds[i].events & POLLIN) && stash_pending(fds[i].fd)) {
			rc += fds[i].revents == 0;
			fds[i].revents |= POLLIN;
		}
	return rc;
}

EXPORT int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	int rc;
	if (stash_count > 0 && !in_stack && (rc = poll_stashes(fds, nfds)) >= 0)
		return rc;
	return any_accelerated(fds, nfds) ? mixed_poll(fds, nfds, timeout, NULL) : LIBC(poll)(fds, nfds, timeout);
}

/* A timespec as poll's milliseconds, rounded up; -1 for none. */
static int timespec_ms(const struct timespec *ts)
{
	if (ts == NULL)
		return -1;
	long long ms = (long long)ts->tv_sec * 1000 + (ts->tv_nsec + 999999) / 1000000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

EXPORT int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *ts, const sigset_t *sigmask)
{
	int rc;
	if (stash_count > 0 && !in_stack && (rc = poll_stashes(fds, nfds)) >= 0)
		return rc;
	if (!any_accelerated(fds, nfds))
		return LIBC(ppoll)(fds, nfds, ts, sigmask);
	if (ts != NULL && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L))
		return fail(-EINVAL);
	return mixed_poll(fds, nfds, timespec_ms(ts), sigmask);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *ts, const sigset_t *sigmask, size_t fdslen)
{
	if (fdslen / sizeof *fds < nfds)
		__chk_fail();
	return ppoll(fds, nfds, ts, sigmask);
}

/* select and pselect over accelerated fds: as a poll. timeout_ms -1 for none. */
static int select_common(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int timeout_ms, const sigset_t *sigmask);

EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	if (!select_any(nfds, rd, wr, ex))
		return LIBC(select)(nfds, rd, wr, ex, tv);
	if (tv != NULL && (tv->tv_sec < 0 || tv->tv_usec < 0))
		return fail(-EINVAL);
	int timeout = tv == NULL ? -1 : (int)(tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000);
	long start = now_ns();
	int rc = select_common(nfds, rd, wr, ex, timeout, NULL);
	if (rc >= 0 && tv != NULL) { /* Linux writes back the time left */
		long left = timeout * 1000000L - (now_ns() - start);
		if (left < 0)
			left = 0;
		tv->tv_sec = left / 1000000000L;
		tv->tv_usec = (left % 1000000000L) / 1000;
	}
	return rc;
}

EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts, const sigset_t *sigmask)
{
	if (!select_any(nfds, rd, wr, ex))
		return LIBC(pselect)(nfds, rd, wr, ex, ts, sigmask);
	if (ts != NULL && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L))
		return fail(-EINVAL);
	return select_common(nfds, rd, wr, ex, timespec_ms(ts), sigmask); /* pselect leaves *ts as it was */
}

static int select_common(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int timeout, const sigset_t *sigmask)
{
	if (nfds < 0 || nfds > FD_SETSIZE)
		return fail(-EINVAL);
	struct pollfd pfds[FD_SETSIZE];
	nfds_t n = 0;
	for (int fd = 0; fd < nfds; fd++) {
		short ev = 0;
		if (rd && FD_ISSET(fd, rd))
			ev |= POLLIN;
		if (wr && FD_ISSET(fd, wr))
			ev |= POLLOUT;
		if (ex && FD_ISSET(fd, ex))
			ev |= POLLPRI;
		if (ev != 0) {
			pfds[n].fd = fd;
			pfds[n].events = ev;
			pfds[n++].revents = 0;
		}
	}
	if (mixed_poll(pfds, n, timeout, sigmask) < 0)
		return -1;
	int count = 0;
	for (nfds_t i = 0; i < n; i++) {
		int fd = pfds[i].fd;
		short r = pfds[i].revents;
		if (rd && FD_ISSET(fd, rd) && !(r & (POLLIN | POLLHUP | POLLERR)))
			FD_CLR(fd, rd);
		else if (rd && FD_ISSET(fd, rd))
			count++;
		if (wr && FD_ISSET(fd, wr) && !(r & (POLLOUT | POLLERR)))
			FD_CLR(fd, wr);
		else if (wr && FD_ISSET(fd, wr))
			count++;
		if (ex && FD_ISSET(fd, ex) && !(r & POLLPRI))
			FD_CLR(fd, ex);
		else if (ex && FD_ISSET(fd, ex))
			count++;
	}
	return count;
}

/* ------------------------------------------------------------ vectors and messages */

/*
 * readv/recvmsg and writev/sendmsg on the stack: one stack call per buffer. The first non-empty buffer goes as
 * recv()/send() would (blocking or not); once some bytes moved, the rest only with what is there at once (and a
 * send raises no SIGPIPE), so the call reports what it moved. MSG_PEEK fills the first buffer only.
 */
static ssize_t stack_iov(int fd, struct fd_entry *e, const struct iovec *iov, int iovcnt, int flags, int sending)
{
	if (iovcnt < 0 || iovcnt > IOV_MAX)
		return fail(-EINVAL);
	int later = sending ? flags | MSG_DONTWAIT | MSG_NOSIGNAL : (flags & MSG_WAITALL) ? flags : flags | MSG_DONTWAIT;
	ssize_t total = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len == 0)
			continue;
		int err = errno;
		int f = total > 0 ? later : flags;
		ssize_t n = sending ? stack_send(fd, e, iov[i].iov_base, iov[i].iov_len, f)
				    : stack_recv(fd, e, iov[i].iov_base, iov[i].iov_len, f);
		if (n < 0) {
			if (total > 0)
				errno = err;
			return total > 0 ? total : -1;
		}
		total += n;
		if ((size_t)n < iov[i].iov_len || (!sending && (flags & MSG_PEEK)))
			break;
	}
	return total;
}

static ssize_t stack_recv_iov(int fd, struct fd_entry *e, const struct iovec *iov, int iovcnt, int flags)
{
	return stack_iov(fd, e, iov, iovcnt, flags, 0);
}

static ssize_t stack_send_iov(int fd, struct fd_entry *e, const struct iovec *iov, int iovcnt, int flags)
{
	return stack_iov(fd, e, iov, iovcnt, flags, 1);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP) {
		if (iovcnt < 0)
			return fail(-EINVAL);
		struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
		return udp_recv(fd, e, &m, 0);
	}
	return e == NULL ? LIBC(readv)(fd, iov, iovcnt) : stack_recv_iov(fd, e, iov, iovcnt, 0);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	struct fd_entry *e = accelerated(fd);
	if (e != NULL && e->kind == KIND_UDP) {
		if (iovcnt < 0)
			return fail(-EINVAL);
		struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
		return udp_send(fd, e, &m, 0);
	}
	return e == NULL ? LIBC(writev)(fd, iov, iovcnt) : stack_send_iov(fd, e, iov, iovcnt, 0);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(recvmsg)(fd, msg, flags);
	if (msg == NULL || msg->msg_iovlen > IOV_MAX)
		return fail(msg == NULL ? -EFAULT : -EMSGSIZE);
	if (e->kind == KIND_UDP)
		return udp_recv(fd, e, msg, flags);
	ssize_t n = stack_recv_iov(fd, e, msg->msg_iov, (int)msg->msg_iovlen, flags);
	if (n >= 0) {
		msg->msg_namelen = 0;   /* TCP gives no address, as Linux's tcp_recvmsg */
		msg->msg_controllen = 0; /* nor control messages (none are implemented) */
		msg->msg_flags = 0;
	}
	return n;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(sendmsg)(fd, msg, flags);
	if (msg == NULL)
		return fail(-EFAULT);
	if (e->kind == KIND_UDP)
		return udp_send(fd, e, msg, flags);
	if (msg->msg_controllen > 0)
		return fail(-EOPNOTSUPP); /* no control messages on the stack yet */
	if (msg->msg_iovlen > IOV_MAX)
		return fail(-EMSGSIZE);
	return stack_send_iov(fd, e, msg->msg_iov, (int)msg->msg_iovlen, flags); /* a stream socket ignores msg_name */
}

/* --------------------------------------------------------------------------- ioctl */

EXPORT int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return LIBC(ioctl)(fd, request, arg);
	switch (request) {
	case FIONBIO: {
		/* The placeholder takes it too, so that F_GETFL reads it back. */
		int rc = LIBC(ioctl)(fd, request, arg);
		if (rc == 0)
			conn_of(e)->flags = *(const int *)arg ? (conn_of(e)->flags | FD_NONBLOCK) : (conn_of(e)->flags & ~FD_NONBLOCK);
		return rc;
	}
	case FIONREAD:   /* SIOCINQ */
	case SIOCOUTQ: {
		if (arg == NULL)
			return fail(-EFAULT);
		/* UDP: the next datagram's length, as Linux's udp_ioctl; nothing waits to be sent (it went to the ring). */
		int n = e->kind == KIND_UDP ? (request == SIOCOUTQ ? 0 : STACK(st.udp_next_length(handle_of(e))))
					    : STACK(st.queued(handle_of(e), request == SIOCOUTQ));
		if (n < 0)
			return fail(n);
		*(int *)arg = n;
		return 0;
	}
	default:
		return LIBC(ioctl)(fd, request, arg);
	}
}

/* ------------------------------------------------------------------------------ dup */

/* newfd is about to be replaced by dup2/dup3: as close() would, it lets go of its connection or set. */
static void before_replacing(int newfd)
{
	if (in_stack || newfd < 0 || newfd >= fd_table_size)
		return;
	fd_table[newfd].forked = 0;
	if (fd_table[newfd].ep != NULL)
		ep_forget(newfd);
	struct fd_entry *e = accelerated(newfd);
	if (e != NULL) {
		int h = handle_of(e), kind = e->kind;
		if (release_fd(e) == 0)
			STACK(stack_close(kind, h));
		debug("fd %d replaced by dup2/dup3 (connection %d)", newfd, h);
	}
}

EXPORT int dup(int fd)
{
	int nfd = LIBC(dup)(fd);
	struct fd_entry *e = accelerated(fd);
	if (nfd >= 0 && e != NULL)
		share_fd(nfd, e);
	return nfd;
}

static int dup3_common(int oldfd, int newfd, int flags, int three)
{
	struct fd_entry *e = accelerated(oldfd);
	if (oldfd == newfd || (e == NULL && accelerated(newfd) == NULL && ep_of(newfd) == NULL))
		return three ? LIBC(dup3)(oldfd, newfd, flags) : LIBC(dup2)(oldfd, newfd);
	/* The kernel closes newfd only if the dup can happen: check oldfd first (EBADF) so newfd is kept then. */
	if (LIBC(fcntl)(oldfd, F_GETFD) < 0)
		return -1;
	before_replacing(newfd);
	int rc = three ? LIBC(dup3)(oldfd, newfd, flags) : LIBC(dup2)(oldfd, newfd);
	if (rc >= 0 && e != NULL && e->handle_plus1 != 0)
		share_fd(rc, e);
	return rc;
}

EXPORT int dup2(int oldfd, int newfd) { return dup3_common(oldfd, newfd, 0, 0); }

EXPORT int dup3(int oldfd, int newfd, int flags) { return dup3_common(oldfd, newfd, flags, 1); }

/* ------------------------------------------------------------- the fortified variants */

/* With -D_FORTIFY_SOURCE glibc's headers route these calls here; the check first, as glibc's. */

EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		__chk_fail();
	return read(fd, buf, len);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		__chk_fail();
	return recv(fd, buf, len, flags);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, struct sockaddr *addr,
			      socklen_t *alen)
{
	if (len > buflen)
		__chk_fail();
	return recvfrom(fd, buf, len, flags, addr, alen);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
	if (fdslen / sizeof *fds < nfds)
		__chk_fail();
	return poll(fds, nfds, timeout);
}

/* ------------------------------------------------------------------------------- epoll */

/*
 * An epoll fd stays a real kernel epoll fd holding the kernel fds. Its accelerated members (whose
 * placeholders the kernel would report as unconnected sockets) live here instead, in an ep_set kept
 * in the epoll fd's table entry. epoll_wait checks the members (onload_sock_poll), then the kernel set
 * with timeout 0, spins ONLOAD_SPIN_US, then sleeps in the real poll() on the epoll fd itself (readable
 * when the kernel set has events) and the thread's eventfd, registered with the stack for the members'
 * events (ep_sleep); epoll_ctl adding or re-arming a member wakes the set's sleepers, as Linux's does.
 *
 * EPOLLET is carried by edges of readiness: a member reports again when its readiness rose since the
 * last look, or when the program has since met EAGAIN on it (the program drained it, as edge-triggered
 * programs must). Unlike Linux, a second arrival while still readable and not drained is not an edge.
 */
struct ep_member {
	int fd;
	uint32_t gen;       /* fd_table[fd].gen when added: a member whose fd was closed is dropped */
	uint32_t events;    /* as epoll_ctl gave them */
	epoll_data_t data;
	int armed;          /* 0: an EPOLLONESHOT member reported, until EPOLL_CTL_MOD */
	short last;         /* EPOLLET: the readiness seen last */
	uint32_t rd_seen, wr_seen;
};

struct ep_set {
	pthread_mutex_t lock;
	int epfd;
	int n, cap;
	struct ep_member *m;
	/* Scratch for onload_sock_poll, cap long, used under the lock: no allocation per wait. */
	int *handles, *which;
	short *events, *revents;
	int cursor;         /* where the next report starts, so that no member starves another */
	int kernel_first;   /* the members filled the last call: the kernel set goes first in the next */
	struct ep_sleeper *sleepers; /* threads asleep in ep_sleep on this set */
	struct ep_set *next;
};

/*
 * A thread can be asleep in the kernel's epoll_wait on a set with no accelerated member yet when another thread adds
 * one (the .NET runtime's socket engine waits on its epoll set from before its first socket is added). The kernel
 * does not know the member, so nothing would wake the sleeper to look at it. So when a set gains its first
 * accelerated member, its kernel part gets a one-shot "member added" event: ep_added_fd, an eventfd made readable
 * and never read, registered with EPOLLONESHOT and data EP_ADDED. The kernel reports it once, waking one sleeper;
 * ep_kernel_wait drops it from what the program sees, and epoll_wait then looks at the set afresh. One sleeper
 * only: a second thread asleep in the same set's kernel part stays there until a kernel fd wakes it.
 */
static int ep_added_fd = -1;
#define EP_ADDED ((uint64_t)(uintptr_t)&ep_added_fd) /* no program's data can point into the shim */

/* A thread asleep on a set, on its own stack: epoll_ctl writes its eventfd when a member is added or re-armed. */
struct ep_sleeper {
	int wake_fd;
	int woken;
	struct ep_sleeper *next;
};

static struct ep_set *ep_sets; /* every set, for ep_hand_to_kernel */
static pthread_mutex_t ep_sets_lock = PTHREAD_MUTEX_INITIALIZER;

static inline struct ep_set *ep_of(int epfd)
{
	if (in_stack || epfd < 0 || epfd >= fd_table_size)
		return NULL;
	return __atomic_load_n(&fd_table[epfd].ep, __ATOMIC_ACQUIRE);
}

static struct ep_set *ep_new(int epfd)
{
	struct ep_set *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->epfd = epfd;
	pthread_mutex_lock(&ep_sets_lock);
	s->next = ep_sets;
	ep_sets = s;
	__atomic_store_n(&fd_table[epfd].ep, s, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ep_sets_lock);
	return s;
}

/* The epoll fd is closing (or its number was reused): its set goes. */
static void ep_forget(int epfd)
{
	pthread_mutex_lock(&ep_sets_lock);
	struct ep_set *s = fd_table[epfd].ep;
	fd_table[epfd].ep = NULL;
	for (struct ep_set **p = &ep_sets; s != NULL && *p != NULL; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
	pthread_mutex_unlock(&ep_sets_lock);
	if (s == NULL)
		return;
	free(s->m); free(s->handles); free(s->which); free(s->events); free(s->revents);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int ep_grow(struct ep_set *s)
{
	int cap = s->cap == 0 ? 8 : s->cap * 2;
	struct ep_member *m = realloc(s->m, (size_t)cap * sizeof *m);
	if (m != NULL)
		s->m = m;
	int *h = realloc(s->handles, (size_t)cap * sizeof *h);
	if (h != NULL)
		s->handles = h;
	int *w = realloc(s->which, (size_t)cap * sizeof *w);
	if (w != NULL)
		s->which = w;
	short *ev = realloc(s->events, (size_t)cap * sizeof *ev);
	if (ev != NULL)
		s->events = ev;
	short *rev = realloc(s->revents, (size_t)cap * sizeof *rev);
	if (rev != NULL)
		s->revents = rev;
	if (m == NULL || h == NULL || w == NULL || ev == NULL || rev == NULL)
		return -ENOMEM;
	s->cap = cap;
	return 0;
}

static inline void ep_remove_at(struct ep_set *s, int i) { s->m[i] = s->m[--s->n]; }

/* Wakes the threads asleep on the set (a member was added or re-armed: it may be ready). Under the set's lock. */
static void ep_wake_sleepers(struct ep_set *s)
{
	for (struct ep_sleeper *z = s->sleepers; z != NULL; z = z->next)
		if (!z->woken) {
			uint64_t one = 1;
			z->woken = 1;
			(void)LIBC(write)(z->wake_fd, &one, sizeof one);
		}
}

/*
 * The program met EAGAIN on an accelerated fd: an EPOLLET member reports its readiness again after one (ep_seen).
 * A thread may already be asleep on a set that left that readiness out as reported (the .NET runtime: its epoll
 * thread sleeps while pool threads read until EAGAIN); nothing the stack does would wake it for the next data, so
 * wake it to look again.
 */
static void note_eagain(struct fd_entry *e, int writing)
{
	__atomic_add_fetch(writing ? &e->wr_eagain : &e->rd_eagain, 1, __ATOMIC_SEQ_CST);
	int epfd = __atomic_exchange_n(&e->ep_watch_plus1, 0, __ATOMIC_SEQ_CST) - 1;
	struct ep_set *s = epfd >= 0 ? ep_of(epfd) : NULL;
	if (s != NULL) {
		pthread_mutex_lock(&s->lock);
		ep_wake_sleepers(s);
		pthread_mutex_unlock(&s->lock);
	}
}

/* An accelerated fd went to the kernel: in each set that holds it, it moves to the kernel's part, and alias (if
 * not -1) joins it there with the same events and data. */
static void ep_hand_to_kernel(int fd, uint32_t gen, int alias)
{
	pthread_mutex_lock(&ep_sets_lock);
	for (struct ep_set *s = ep_sets; s != NULL; s = s->next) {
		pthread_mutex_lock(&s->lock);
		for (int i = 0; i < s->n; i++)
			if (s->m[i].fd == fd && s->m[i].gen == gen) {
				struct epoll_event ev = { .events = s->m[i].events, .data = s->m[i].data };
				if (!s->m[i].armed)
					ev.events &= ~(uint32_t)(EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDHUP);
				LIBC(epoll_ctl)(s->epfd, EPOLL_CTL_ADD, fd, &ev);
				if (alias >= 0)
					LIBC(epoll_ctl)(s->epfd, EPOLL_CTL_ADD, alias, &ev);
				ep_remove_at(s, i);
				break;
			}
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_unlock(&ep_sets_lock);
}

#define EP_POLL_BITS (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP)

/* The shim's own eventfd kept in *slot, made at first use (a race makes two: one is closed). */
static int shared_eventfd(int *slot, int flags)
{
	int fd = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (fd >= 0)
		return fd;
	int made = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | flags);
	int expected = -1;
	if (made >= 0 && !__atomic_compare_exchange_n(slot, &expected, made, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		LIBC(close)(made);
		return expected;
	}
	return made;
}

/* Arms the set's one-shot "member added" event (see ep_added_fd); errno is left as it was. */
static void ep_announce_member(int epfd)
{
	int saved = errno;
	int fd = shared_eventfd(&ep_added_fd, 0);
	uint64_t one = 1;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = EP_ADDED };
	if (fd >= 0 && LIBC(write)(fd, &one, sizeof one) == sizeof one &&
	    LIBC(epoll_ctl)(epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT)
		LIBC(epoll_ctl)(epfd, EPOLL_CTL_ADD, fd, &ev);
	errno = saved;
}

/* The kernel part's events (epoll_pwait with a sigmask), without the shim's EP_ADDED, which sets *added. */
static int ep_kernel_wait(int epfd, struct epoll_event *out, int max, int timeout, const sigset_t *sigmask, int *added)
{
	int n = sigmask == NULL ? LIBC(epoll_wait)(epfd, out, max, timeout) : LIBC(epoll_pwait)(epfd, out, max, timeout, sigmask);
	for (int i = 0; i < n; i++)
		if (out[i].data.u64 == EP_ADDED) {
			out[i--] = out[--n];
			*added = 1;
		}
	return n;
}

EXPORT int epoll_create(int size)
{
	int fd = LIBC(epoll_create)(size);
	if (ep_of(fd) != NULL)
		ep_forget(fd); /* a number closed behind our back (close_range, the kernel) */
	return fd;
}

EXPORT int epoll_create1(int flags)
{
	int fd = LIBC(epoll_create1)(flags);
	if (ep_of(fd) != NULL)
		ep_forget(fd);
	return fd;
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL || epfd < 0 || epfd >= fd_table_size) {
		int rc = LIBC(epoll_ctl)(epfd, op, fd, event);
		if (rc == 0 && stash_count > 0 && !in_stack)
			stash_epoll_ctl(epfd, op, fd, event);
		return rc;
	}
	if (epfd == fd)
		return fail(-EINVAL);
	/* Asks the kernel whether epfd is an epoll fd (EBADF, EINVAL otherwise); the placeholder is never in it. */
	if (LIBC(epoll_ctl)(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != ENOENT)
		return -1;
	if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL)
		return fail(-EINVAL);
	if (op != EPOLL_CTL_DEL && event == NULL)
		return fail(-EFAULT);
	struct ep_set *s = ep_of(epfd);
	if (s == NULL) {
		if (op != EPOLL_CTL_ADD)
			return fail(-ENOENT);
		if ((s = ep_new(epfd)) == NULL)
			return fail(-ENOMEM);
	}
	int rc = 0;
	pthread_mutex_lock(&s->lock);
	int was_empty = s->n == 0;
	int found = -1;
	for (int i = 0; i < s->n; i++)
		if (s->m[i].fd == fd) {
			if (s->m[i].gen == e->gen) {
				found = i;
				break;
			}
			ep_remove_at(s, i--); /* a closed fd's member under the same number */
		}
	if (op == EPOLL_CTL_ADD && found >= 0)
		rc = -EEXIST;
	else if (op != EPOLL_CTL_ADD && found < 0)
		rc = -ENOENT;
	else if (op == EPOLL_CTL_DEL)
		ep_remove_at(s, found);
	else if (op == EPOLL_CTL_ADD && s->n == s->cap && (rc = ep_grow(s)) != 0)
		;
	else {
		struct ep_member *m = op == EPOLL_CTL_ADD ? &s->m[s->n++] : &s->m[found];
		m->fd = fd;
		m->gen = e->gen;
		m->events = event->events;
		m->data = event->data;
		m->armed = 1;
		m->last = 0; /* MOD, as Linux, looks at the readiness afresh */
		m->rd_seen = e->rd_eagain;
		m->wr_seen = e->wr_eagain;
		ep_wake_sleepers(s);
	}
	pthread_mutex_unlock(&s->lock);
	if (rc == 0 && op == EPOLL_CTL_ADD && was_empty)
		ep_announce_member(epfd);
	if (rc == 0)
		debug("epoll %d: fd %d %s", epfd, fd, op == EPOLL_CTL_ADD ? "added" : op == EPOLL_CTL_MOD ? "modified" : "removed");
	return rc < 0 ? fail(rc) : 0;
}

/* EPOLLET: the readiness a member last reported, less what the program has since drained to EAGAIN (no longer seen:
 * its return is a new edge). Under the set's lock. */
static short ep_seen(struct ep_member *m)
{
	const struct fd_entry *e = &fd_table[m->fd];
	if (e->rd_eagain != m->rd_seen) {
		m->last &= (short)~(EPOLLIN | EPOLLRDHUP);
		m->rd_seen = e->rd_eagain;
	}
	if (e->wr_eagain != m->wr_seen) {
		m->last &= (short)~EPOLLOUT;
		m->wr_seen = e->wr_eagain;
	}
	return m->last;
}

/* The accelerated members' events, at most max of them; -errno. */
static int ep_collect(struct ep_set *s, struct epoll_event *out, int max)
{
	pthread_mutex_lock(&s->lock);
	int k = 0;
	for (int i = 0; i < s->n; i++) {
		struct ep_member *m = &s->m[i];
		const struct fd_entry *e = &fd_table[m->fd];
		if (e->gen != m->gen || e->handle_plus1 == 0) {
			ep_remove_at(s, i--); /* closed: Linux drops it from every set */
			continue;
		}
		if (!m->armed)
			continue;
		s->handles[k] = poll_handle_of(e);
		s->events[k] = (short)(m->events & EP_POLL_BITS);
		s->which[k++] = i;
	}
	int count = 0;
	if (k > 0) {
		int rc = STACK(st.poll(s->handles, s->events, s->revents, k));
		if (rc < 0) {
			pthread_mutex_unlock(&s->lock);
			return rc;
		}
		int start = s->cursor % k;
		for (int j = 0; j < k && count < max; j++) {
			int idx = (start + j) % k;
			struct ep_member *m = &s->m[s->which[idx]];
			short r = (short)(s->revents[idx] & EP_POLL_BITS);
			if (m->events & EPOLLET) {
				short rose = (short)(r & ~ep_seen(m));
				m->last = r;
				if (rose == 0)
					continue;
			}
			if (r == 0)
				continue;
			uint32_t ev = (uint16_t)r;
			if (ev & EPOLLIN)
				ev |= m->events & EPOLLRDNORM;
			if (ev & EPOLLOUT)
				ev |= m->events & EPOLLWRNORM;
			out[count].events = ev;
			out[count].data = m->data;
			count++;
			if (m->events & EPOLLONESHOT)
				m->armed = 0;
			s->cursor = idx + 1;
		}
	}
	s->kernel_first = count == max;
	pthread_mutex_unlock(&s->lock);
	return count;
}

/*
 * Sleeps until a member has an event it would report (ep_collect's rules: an armed member's events, EPOLLERR and
 * EPOLLHUP; with EPOLLET only those it has not reported yet), the kernel set has one, a member is added or re-armed,
 * a signal arrives or sleep_ms passes. 0: look again; -1 with errno.
 */
static int ep_sleep(int epfd, struct ep_set *s, int sleep_ms, const sigset_t *sigmask)
{
	struct pollfd p[3] = { { .fd = epfd, .events = POLLIN } };
	struct ep_sleeper me = { .wake_fd = thread_wake_fd() };
	pthread_mutex_lock(&s->lock);
	int k = 0;
	for (int i = 0; i < s->n; i++) {
		struct ep_member *m = &s->m[i];
		const struct fd_entry *e = &fd_table[m->fd];
		if (!m->armed || e->gen != m->gen || e->handle_plus1 == 0)
			continue;
		short want = (short)((m->events & EP_POLL_BITS) | EPOLLERR | EPOLLHUP);
		if (m->events & EPOLLET) {
			/* Marked before ep_seen reads the EAGAIN counts, and note_eagain counts before it reads the mark:
			 * either this sleep wants the edge again, or the thread that met EAGAIN wakes it. */
			__atomic_store_n(&fd_table[m->fd].ep_watch_plus1, epfd + 1, __ATOMIC_SEQ_CST);
			want &= (short)~ep_seen(m);
		}
		s->handles[k] = poll_handle_of(e);
		s->events[k++] = want;
	}
	if (me.wake_fd >= 0) {
		me.next = s->sleepers;
		s->sleepers = &me;
	}
	int rc = sleep_until_ready(s->handles, s->events, s->revents, k, p, 1, sleep_ms, sigmask, &s->lock);
	if (me.wake_fd < 0)
		return rc;
	int saved = errno;
	pthread_mutex_lock(&s->lock);
	for (struct ep_sleeper **z = &s->sleepers; *z != NULL; z = &(*z)->next)
		if (*z == &me) {
			*z = me.next;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	if (me.woken)
		take_wake_up();
	errno = saved;
	return rc;
}

static int ep_wait(int epfd, struct ep_set *s, struct epoll_event *out, int max, int timeout, const sigset_t *sigmask)
{
	if (out == NULL || max <= 0)
		return fail(-EINVAL);
	long start = now_ns();
	long deadline = timeout < 0 ? -1 : start + timeout * 1000000L;
	for (;;) {
		int n = 0, rc, added = 0; /* a member's arrival needs nothing here: this loop looks at every member */
		if (s->kernel_first) {
			if ((rc = ep_kernel_wait(epfd, out, max, 0, NULL, &added)) < 0)
				return -1;
			n = rc;
			if (n < max) {
				if ((rc = ep_collect(s, out + n, max - n)) < 0)
					return n > 0 ? n : fail(rc);
				n += rc;
			}
			s->kernel_first = 0;
		} else {
			if ((rc = ep_collect(s, out, max)) < 0)
				return fail(rc);
			n = rc;
			if (n < max) {
				if ((rc = ep_kernel_wait(epfd, out + n, max - n, 0, NULL, &added)) < 0)
					return n > 0 ? n : -1;
				n += rc;
			}
		}
		long now = now_ns();
		if (n > 0 || timeout == 0 || (deadline >= 0 && now >= deadline))
			return n;
		if (now - start < spin_ns(SPIN_EPOLL))
			continue;
		int sleep_ms = deadline < 0 ? -1 : (int)((deadline - now + 999999) / 1000000);
		if (ep_sleep(epfd, s, sleep_ms, sigmask) < 0)
			return -1; /* EINTR */
	}
}

/* A set with accelerated members waits in ep_wait; one without, in the kernel, until a member arrives. */
static int ep_wait_any(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *sigmask)
{
	long deadline = timeout < 0 ? -1 : now_ns() + timeout * 1000000L;
	for (;;) {
		long left = deadline - now_ns();
		int left_ms = deadline < 0 ? -1 : left <= 0 ? 0 : (int)((left + 999999) / 1000000);
		struct ep_set *s = ep_of(epfd);
		if (s != NULL && s->n > 0)
			return ep_wait(epfd, s, events, maxevents, left_ms, sigmask);
		int added = 0;
		int n = ep_kernel_wait(epfd, events, maxevents, left_ms, sigmask, &added);
		if (n != 0 || !added)
			return n;
	}
}

EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	return ep_wait_any(epfd, events, maxevents, timeout, NULL);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *sigmask)
{
	return ep_wait_any(epfd, events, maxevents, timeout, sigmask);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents, const struct timespec *timeout,
			const sigset_t *sigmask)
{
	struct ep_set *s = ep_of(epfd);
	if (s == NULL || s->n == 0)
		return real_epoll_pwait2 != NULL ? real_epoll_pwait2(epfd, events, maxevents, timeout, sigmask)
						 : (int)syscall(SYS_epoll_pwait2, epfd, events, maxevents, timeout, sigmask, _NSIG / 8);
	if (timeout != NULL && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L))
		return fail(-EINVAL);
	return ep_wait(epfd, s, events, maxevents, timespec_ms(timeout), sigmask);
}

/* ------------------------------------------------------------------------ load time */

static long env_long(const char *name, long fallback)
{
	const char *v = getenv(name);
	if (v == NULL || *v == '\0')
		return fallback;
	char *end;
	long n = strtol(v, &end, 10);
	return *end == '\0' ? n : fallback;
}

/* ---------------------------------------------------------------------------------- fork and exec */

/*
 * The stack is this process's memory: a forked child gets a copy of it, but the VNIC's rings and the daemon's
 * connection stay the parent's, and an exec'd program starts without it. So a socket another process will use goes
 * to the kernel first, as it is (docs/PRELOAD-NOTES.md, "fork and exec"):
 *  - fork() (and daemon(), which forks): before the fork, every accelerated TCP socket is handed to the kernel:
 *    ESTABLISHED and CLOSE_WAIT connections with their state and queued bytes (onload-driverd makes the program's
 *    placeholder the connection with TCP_REPAIR), listeners by the placeholder listening on their port (what waited
 *    in their accept queue is handed over too and stashed: the parent's accept returns it first). Parent and child
 *    then share kernel sockets, as under Linux, and the parent's new sockets are accelerated again.
 *  - vfork (a fork here, see below), posix_spawn and the exec family: only the sockets an exec keeps (no
 *    FD_CLOEXEC) are handed over; the others end with the old program.
 * What cannot be handed over (UDP sockets, connections opening or closing, a listener with connections the program
 * holds that could not go) stays on the stack in the parent; in a forked child a call on it warns once and reaches
 * its placeholder (an unconnected socket), and the child's own sockets are the kernel's.
 */

/* Whether an exec keeps fd or one of its dups. */
static int inheritable(int fd, const struct fd_entry *e)
{
	if (!(LIBC(fcntl)(fd, F_GETFD) & FD_CLOEXEC))
		return 1;
	for (int other = 0; conn_of(e)->refs > 1 && other < fd_table_size; other++)
		if (fd_table[other].handle_plus1 == e->handle_plus1 && fd_table[other].kind == e->kind &&
		    !(LIBC(fcntl)(other, F_GETFD) & FD_CLOEXEC))
			return 1;
	return 0;
}

/*
 * Connection h becomes kernel socket fd. Like a connection a kernel listener accepted, it lets the listener's
 * socket bind the port beside it (SO_REUSEADDR, which the repair clears).
 */
static int hand_over_connection(int h, int fd)
{
	int rc = STACK(st.handover(h, fd));
	if (rc == 0) {
		int on = 1;
		LIBC(setsockopt)(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	}
	return rc;
}

/* Accepts what waits in listener fd's queue, hands each connection over and stashes it through pair (made on
 * first use; a connection that cannot go is closed, with a warning). */
static void stash_accept_queue(int fd, struct fd_entry *e, int pair[2])
{
	for (int c; (c = STACK(st.accept(handle_of(e), NULL, NULL))) >= 0;) {
		if (pair[0] < 0 && (stash_count == MAX_STASHES ||
				    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0))
			pair[0] = pair[1] = -1;
		int nfd = pair[0] < 0 ? -1 : LIBC(socket)(family_of(e), SOCK_STREAM, 0);
		int rc = nfd < 0 ? -ENOBUFS : hand_over_connection(c, nfd);
		if (rc != 0) {
			if (nfd >= 0)
				LIBC(close)(nfd);
			STACK(st.close(c));
		} else
			rc = stash(pair[1], nfd); /* closes nfd: the kernel ends the connection if it could not be parked */
		if (rc != 0)
			fprintf(stderr, "onload: a connection waiting on fd %d could not go to the kernel (%s): it is closed\n",
				fd, strerror(-rc));
	}
}

/* A listener whose stack side is gone (release_listener), waiting for its placeholder to listen (listen_in_place):
 * the listeners of an SO_REUSEPORT group all go before any of them can bind the port. */
struct released_listener {
	int fd;
	uint32_t address;
	uint16_t port;
	int stashed;   /* its stash's index, or -1 */
	int listening; /* its placeholder listened before the hand-over (listen_early) */
};

/* The placeholder of listener fd binds and listens on its address and port: 0, or a negated errno. */
static int placeholder_listen(int fd, struct fd_entry *e, uint32_t address, uint16_t port)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	fill_sockaddr((struct sockaddr *)&sa, &len, family_of(e), address, port);
	/* Its connections handed over hold the port too (with SO_REUSEADDR, as a kernel listener's own would). */
	int on = 1;
	LIBC(setsockopt)(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
	if (LIBC(bind)(fd, (struct sockaddr *)&sa, len) != 0 || LIBC(listen)(fd, conn_of(e)->backlog) != 0)
		return -errno;
	return 0;
}

/* A listener staying on the stack after its placeholder listened early: a new placeholder takes the fd (flags kept),
 * so that the kernel does not listen on the port for a socket the program still has on the stack. */
static void unlisten(int fd, struct fd_entry *e)
{
	int status = LIBC(fcntl)(fd, F_GETFL), fd_flags = LIBC(fcntl)(fd, F_GETFD);
	int nfd = LIBC(socket)(family_of(e), SOCK_STREAM, 0);
	if (nfd < 0 || LIBC(dup3)(nfd, fd, fd_flags & FD_CLOEXEC ? O_CLOEXEC : 0) < 0)
		fprintf(stderr, "onload: fd %d: its placeholder could not stop listening: %s\n", fd, strerror(errno));
	else if (status >= 0)
		LIBC(fcntl)(fd, F_SETFL, status);
	if (nfd >= 0)
		LIBC(close)(nfd);
}

/* The kernel listens on the port in the listener's place before the stack lets the port's frames go to it, so no
 * SYN meets the kernel with nobody listening there (a reset: ECONNREFUSED). Until the hand-over the kernel listener
 * receives nothing: the port's frames are still steered to the stack. 1 when it listens, 0 when it could not (a
 * member of an SO_REUSEPORT group without SO_REUSEPORT, say): it binds after the hand-over then, as before. */
static int listen_early(int fd, struct fd_entry *e, uint32_t address, uint16_t port)
{
	if (STACK(st.share_listener_port(handle_of(e))) != 0)
		return 0;
	return placeholder_listen(fd, e, address, port) == 0;
}

/* Listener fd's queued connections stashed and its stack side gone: the port is free once the last listener of its
 * group has gone too. Returns 0, or a negated errno with the listener left on the stack. */
static int release_listener(int fd, struct fd_entry *e, struct released_listener *r)
{
	int h = handle_of(e);
	r->fd = fd;
	r->stashed = -1;
	if (STACK(st.name(h, 0, &r->address, &r->port)) != 0)
		return -EINVAL;
	r->listening = listen_early(fd, e, r->address, r->port);
	/* Connections waiting to be accepted: accepted here, handed over and stashed for the next accept anywhere.
	 * -EAGAIN: handshakes the stack waited for completed meanwhile, and wait too. */
	int pair[2] = { -1, -1 }, rc;
	do
		stash_accept_queue(fd, e, pair);
	while ((rc = STACK(st.handover_listener(h))) == -EAGAIN);
	if (pair[0] >= 0) {
		r->stashed = stash_count++;
		stashes[r->stashed].listener = fd;
		stashes[r->stashed].pair = pair[0];
		stashes[r->stashed].writer = pair[1];
	}
	if (rc < 0 && r->listening)
		unlisten(fd, e);
	return rc < 0 ? rc : 0;
}

/* The placeholder of a released listener listens on its address and port in the stack's place. */
static int listen_in_place(const struct released_listener *r)
{
	struct fd_entry *e = &fd_table[r->fd];
	int rc = r->listening ? 0 : placeholder_listen(r->fd, e, r->address, r->port);
	if (rc != 0)
		fprintf(stderr, "onload: fd %d: the kernel could not listen on port %u in the stack's place: %s\n", r->fd,
			r->port, strerror(-rc));
	/* An epoll set waiting on the listener hears of its stashed connections through the stash's read end. */
	forget_on_stack(r->fd, e, r->stashed >= 0 ? stashes[r->stashed].pair : -1);
	return rc;
}

/*
 * UDP socket fd leaves the stack for the kernel socket that held its port all along, which takes the program's fd
 * (dup3: the same fd flags, its O_NONBLOCK and buffer sizes carried over) and is connected to the same peer: bound
 * throughout and a member of the socket's groups, it misses no datagram. A dual-stack AF_INET6 socket keeps its
 * family: its placeholder binds the port instead, once it is free (a datagram arriving in between is refused).
 * Datagrams queued on the stack are lost (said once).
 */
static int hand_over_udp(int fd, struct fd_entry *e)
{
	int h = handle_of(e);
	uint32_t address, peer = 0;
	uint16_t port, peer_port = 0;
	if (STACK(st.udp_name(h, 0, &address, &port)) != 0)
		return -EINVAL;
	if (STACK(st.udp_name(h, 1, &peer, &peer_port)) != 0)
		peer_port = 0;
	int status = LIBC(fcntl)(fd, F_GETFL), fd_flags = LIBC(fcntl)(fd, F_GETFD), dropped = 0;
	int kfd = STACK(st.udp_handover(h, &dropped));
	if (kfd < 0)
		return kfd;
	struct sockaddr_storage sa;
	socklen_t len = sizeof sa;
	int rc = 0;
	if (family_of(e) == AF_INET6) {
		LIBC(close)(kfd);
		fill_sockaddr((struct sockaddr *)&sa, &len, family_of(e), address, port);
		rc = LIBC(bind)(fd, (struct sockaddr *)&sa, len) == 0 ? 0 : -errno;
	} else {
		static const int carried[] = { SO_RCVBUF, SO_SNDBUF, SO_BROADCAST };
		for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++) {
			int v;
			socklen_t vlen = sizeof v;
			if (LIBC(getsockopt)(fd, SOL_SOCKET, carried[i], &v, &vlen) == 0) {
				if (carried[i] != SO_BROADCAST)
					v /= 2; /* Linux doubles what it is given, and reports the doubled size */
				LIBC(setsockopt)(kfd, SOL_SOCKET, carried[i], &v, sizeof v);
			}
		}
		if (LIBC(dup3)(kfd, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
			rc = -errno;
		LIBC(close)(kfd);
		LIBC(fcntl)(fd, F_SETFL, status);
	}
	if (rc == 0 && peer_port != 0) {
		len = sizeof sa;
		fill_sockaddr((struct sockaddr *)&sa, &len, family_of(e), peer, peer_port);
		rc = LIBC(connect)(fd, (struct sockaddr *)&sa, len) == 0 ? 0 : -errno;
	}
	forget_on_stack(fd, e, -1); /* after dup3: an epoll set takes the socket fd now names */
	if (rc != 0)
		fprintf(stderr, "onload: fd %d: the kernel could not take UDP port %u from the stack: %s\n", fd, port,
			strerror(-rc));
	if (dropped > 0)
		fprintf(stderr, "onload: fd %d: %d datagrams queued on the stack were lost handing it to the kernel\n", fd,
			dropped);
	return rc;
}

/*
 * Socket fd to the kernel, if it belongs to this pass (0: connections and UDP sockets, 1: listeners, which go only
 * when nothing of theirs is left on the stack, and are only released here, into *released, to listen once all are).
 * Returns 1 when it went, 0 when it is not this pass's or had nothing to carry (never bound or connected: its
 * placeholder is all there is), or a negated errno when it stays.
 */
static int hand_over(int fd, struct fd_entry *e, int pass, const char *when, struct released_listener *released)
{
	int h = handle_of(e);
	uint32_t address;
	uint16_t port = 0;
	if (e->kind == KIND_UDP) {
		if (pass != 0)
			return 0;
		if (STACK(st.udp_name(h, 0, &address, &port)) == 0 && port == 0) {
			hand_to_kernel(fd, e, when);
			return 0;
		}
		int rc = hand_over_udp(fd, e);
		return rc < 0 ? rc : 1;
	}
	struct tcp_info info; /* its first byte is the state, in Linux's numbering */
	if (STACK(st.tcp_info(h, &info, (int)sizeof info)) < 1)
		return -EBADF;
	int listening = info.tcpi_state == TCP_LISTEN;
	if (listening != pass)
		return 0;
	if (listening) {
		int rc = released != NULL ? release_listener(fd, e, released) : -ENOMEM;
		return rc < 0 ? rc : 1;
	}
	if (info.tcpi_state == TCP_CLOSE && STACK(st.name(h, 0, &address, &port)) == 0 && port == 0) {
		hand_to_kernel(fd, e, when);
		return 0;
	}
	int rc = hand_over_connection(h, fd);
	if (rc != 0)
		return rc;
	forget_on_stack(fd, e, -1);
	return 1;
}

/* Hands the accelerated sockets to the kernel (only those an exec keeps, if exec_only); says on stderr how many
 * went and whether some could not. */
static void hand_over_all(const char *when, int exec_only)
{
	if (stack_state != STACK_READY || getpid() != stack_owner)
		return;
	int moved = 0, stayed = 0, released = 0, room = 64;
	struct released_listener *listeners = malloc((size_t)room * sizeof *listeners);
	for (int pass = 0; pass < 2; pass++)
		for (int fd = 0; fd < fd_table_size; fd++) {
			struct fd_entry *e = &fd_table[fd];
			if (e->handle_plus1 == 0 || (exec_only && !inheritable(fd, e)))
				continue;
			if (listeners != NULL && released == room) {
				struct released_listener *more = realloc(listeners, (size_t)(room *= 2) * sizeof *listeners);
				if (more == NULL)
					break;
				listeners = more;
			}
			int rc = hand_over(fd, e, pass, when, listeners != NULL ? &listeners[released] : NULL);
			if (rc < 0) {
				stayed++;
				debug("%s: fd %d stays on the stack: %s", when, fd, strerror(-rc));
			} else {
				moved += rc;
				released += pass == 1 && rc > 0;
			}
		}
	for (int i = 0; i < released; i++)
		listen_in_place(&listeners[i]);
	free(listeners);
	if (moved + stayed > 0)
		fprintf(stderr, "onload: %s: %d accelerated sockets handed to the kernel, to be shared%s\n", when, moved,
			stayed > 0 ? "; some could not be (opening, closing or in use on a listener's port) and stay here" : "");
}

static __thread int in_vfork; /* fork() is vfork's: hand over only what an exec keeps */

static void before_fork(void)
{
	if (!in_stack)
		hand_over_all(in_vfork ? "vfork" : "fork", in_vfork);
}

static void in_forked_child(void)
{
	if (stack_state != STACK_READY)
		return;
	stack_state = STACK_FORKED;
	for (int fd = 0; fd < fd_table_size; fd++) {
		if (fd_table[fd].ep != NULL)
			ep_forget(fd); /* the kernel part of an epoll set stays; its accelerated members do not */
		if (fd_table[fd].handle_plus1 != 0) {
			fd_table[fd].handle_plus1 = 0;
			fd_table[fd].gen++;
			fd_table[fd].forked = 1;
		}
	}
}

/*
 * vfork(): the child runs in the parent's memory until it execs or exits, so a close() it made of an inherited
 * accelerated fd would close the parent's stack socket. vfork becomes fork (the child gets a copy, and
 * in_forked_child keeps it off the parent's stack), and the parent waits, as vfork's does, until the child has
 * exec'd or exited: a close-on-exec pipe's write end, held only by the child, closes then. (The real vfork cannot be
 * called from here: its child would return from this frame and overwrite the parent's.)
 */
EXPORT pid_t vfork(void)
{
	int gate[2];
	in_vfork = 1;
	if (pipe2(gate, O_CLOEXEC) != 0) {
		pid_t pid = fork();
		in_vfork = 0;
		return pid;
	}
	pid_t pid = fork();
	in_vfork = 0;
	if (pid == 0) {
		LIBC(close)(gate[0]);
		return 0; /* gate[1] goes at exec (close-on-exec) or exit */
	}
	LIBC(close)(gate[1]);
	if (pid > 0) {
		char byte;
		while (LIBC(read)(gate[0], &byte, 1) < 0 && errno == EINTR)
			;
	}
	LIBC(close)(gate[0]);
	return pid;
}

/*
 * The stashes an exec keeps (their listener has no FD_CLOEXEC): their socketpair fds lose FD_CLOEXEC, and their
 * numbers reach the new program's shim in ONLOAD_STASHES=LISTENER:READ:WRITE,... (adopt_stashes). Returns the
 * variable, or NULL when there is none.
 */
static const char *export_stashes(void)
{
	static char value[32 + MAX_STASHES * 36];
	int at = snprintf(value, sizeof value, "ONLOAD_STASHES=");
	int kept = 0;
	for (int i = 0; i < stash_count; i++) {
		if (LIBC(fcntl)(stashes[i].listener, F_GETFD) & FD_CLOEXEC)
			continue;
		LIBC(fcntl)(stashes[i].pair, F_SETFD, 0);
		LIBC(fcntl)(stashes[i].writer, F_SETFD, 0);
		at += snprintf(value + at, sizeof value - (size_t)at, "%s%d:%d:%d", kept++ ? "," : "", stashes[i].listener,
			       stashes[i].pair, stashes[i].writer);
	}
	return kept > 0 ? value : NULL;
}

/* At load: the stashes the program that exec'd this one kept (export_stashes). */
static void adopt_stashes(void)
{
	const char *v = getenv("ONLOAD_STASHES");
	for (const char *p = v; p != NULL && *p != '\0' && stash_count < MAX_STASHES;) {
		int listener, pair, writer, used;
		if (sscanf(p, "%d:%d:%d%n", &listener, &pair, &writer, &used) != 3)
			break;
		stashes[stash_count].listener = listener;
		stashes[stash_count].pair = pair;
		stashes[stash_count++].writer = writer;
		LIBC(fcntl)(pair, F_SETFD, FD_CLOEXEC);
		LIBC(fcntl)(writer, F_SETFD, FD_CLOEXEC);
		p += used;
		if (*p == ',')
			p++;
	}
	if (v != NULL)
		unsetenv("ONLOAD_STASHES");
}

extern char **environ;

/*
 * Before an exec: what the new program keeps goes to the kernel, and the environment it gets (envp; NULL: environ)
 * carries the stashes it keeps. Returns the environment to pass: envp itself, or a copy with ONLOAD_STASHES, which
 * *copy holds for the caller to free should the exec fail.
 */
static char *const *before_exec(char *const envp[], char ***copy)
{
	*copy = NULL;
	hand_over_all("exec", 1);
	const char *stashes_var = stash_count > 0 ? export_stashes() : NULL;
	if (envp == NULL) {
		if (stashes_var != NULL)
			putenv((char *)stashes_var);
		return NULL;
	}
	if (stashes_var == NULL)
		return envp;
	size_t n = 0;
	while (envp[n] != NULL)
		n++;
	char **env = malloc((n + 2) * sizeof *env);
	if (env == NULL)
		return envp;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], "ONLOAD_STASHES=", 15) != 0)
			env[k++] = envp[i];
	env[k++] = (char *)stashes_var;
	env[k] = NULL;
	*copy = env;
	return env;
}

/* The exec family and posix_spawn: what the new program keeps goes to the kernel first. glibc's execl* and
 * execvp reach execve inside libc, so each is interposed. */
#define REAL(name, type) ((type)dlsym(RTLD_NEXT, #name))

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	char **copy;
	char *const *env = before_exec(envp, &copy);
	int rc = REAL(execve, int (*)(const char *, char *const[], char *const[]))(path, argv, env);
	free(copy);
	return rc;
}

EXPORT int execv(const char *path, char *const argv[])
{
	char **copy;
	before_exec(NULL, &copy);
	return REAL(execv, int (*)(const char *, char *const[]))(path, argv);
}

EXPORT int execvp(const char *file, char *const argv[])
{
	char **copy;
	before_exec(NULL, &copy);
	return REAL(execvp, int (*)(const char *, char *const[]))(file, argv);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	char **copy;
	char *const *env = before_exec(envp, &copy);
	int rc = REAL(execvpe, int (*)(const char *, char *const[], char *const[]))(file, argv, env);
	free(copy);
	return rc;
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	char **copy;
	char *const *env = before_exec(envp, &copy);
	int rc = REAL(fexecve, int (*)(int, char *const[], char *const[]))(fd, argv, env);
	free(copy);
	return rc;
}

/* execl, execlp, execle: their arguments as an array (and execle's environment after the NULL). */
#define ARGV_FROM_VA(first, ap, argv, extra_envp) \
	size_t argc_ = 1; \
	va_start(ap, first); \
	while (va_arg(ap, char *) != NULL) \
		argc_++; \
	va_end(ap); \
	char **argv = alloca((argc_ + 1) * sizeof(char *)); \
	va_start(ap, first); \
	argv[0] = (char *)first; \
	for (size_t i_ = 1; i_ <= argc_; i_++) \
		argv[i_] = va_arg(ap, char *); \
	extra_envp; \
	va_end(ap)

EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	ARGV_FROM_VA(arg, ap, argv, (void)0);
	return execv(path, argv);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	ARGV_FROM_VA(arg, ap, argv, (void)0);
	return execvp(file, argv);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	char **envp;
	ARGV_FROM_VA(arg, ap, argv, envp = va_arg(ap, char **));
	return execve(path, argv, envp);
}

typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
			char *const[], char *const[]);

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
		       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	char **copy;
	char *const *env = before_exec(envp, &copy);
	int rc = REAL(posix_spawn, spawn_fn)(pid, path, actions, attr, argv, env);
	free(copy);
	return rc;
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
			const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	char **copy;
	char *const *env = before_exec(envp, &copy);
	int rc = REAL(posix_spawnp, spawn_fn)(pid, file, actions, attr, argv, env);
	free(copy);
	return rc;
}

static void warn_forked(int fd)
{
	fd_table[fd].forked = 0; /* once per fd */
	fprintf(stderr, "onload: fd %d was accelerated in the parent (pid %d): a forked child cannot use it yet, "
			"calls on it reach an unconnected kernel socket\n", fd, (int)stack_owner);
}

/* ------------------------------------------------------------------------------- signals */

/*
 * The program's signal handlers run through a trampoline, for two reasons:
 *  - A handler may make socket calls. Run while its thread is inside the stack (holding the stack's lock, or
 *    waiting for it), it would deadlock on that lock or see the stack half-way through a change. The trampoline
 *    defers it: the signal is noted, and the handler runs as the thread leaves the stack (STACK()), with the
 *    siginfo it came with.
 *  - A blocking call on an accelerated socket waits in poll(), which a signal always interrupts. The kernel would
 *    restart the call when the handler was installed with SA_RESTART; the trampoline notes the flag so that the
 *    shim's wait can do the same (wait_for).
 * Only asynchronous signals are wrapped: faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) and SIGABRT
 * go straight to their handlers, and the .NET runtime inside the stack keeps its own (runtime_keeps).
 */

#define MAX_WRAPPED_SIGNAL 32

static struct sigaction program_action[MAX_WRAPPED_SIGNAL]; /* what the program asked for, as it reads back */
static unsigned char wrapped[MAX_WRAPPED_SIGNAL];            /* the kernel holds the trampoline for it */
static __thread siginfo_t deferred_info[MAX_WRAPPED_SIGNAL];
static pthread_mutex_t signal_lock = PTHREAD_MUTEX_INITIALIZER;

static int wrappable(int sig)
{
	return sig > 0 && sig < MAX_WRAPPED_SIGNAL && sig != SIGKILL && sig != SIGSTOP && sig != SIGSYS &&
	       !runtime_keeps(sig);
}

static void call_program_handler(int sig, siginfo_t *info, void *context)
{
	struct sigaction a = program_action[sig];
	if (a.sa_flags & SA_RESETHAND) /* the kernel reset its disposition on delivery: so does the program's view */
		program_action[sig].sa_handler = SIG_DFL;
	last_handler_restarts = (a.sa_flags & SA_RESTART) != 0;
	if (a.sa_flags & SA_SIGINFO)
		a.sa_sigaction(sig, info, context);
	else if (a.sa_handler != SIG_IGN && a.sa_handler != SIG_DFL)
		a.sa_handler(sig);
}

static void trampoline(int sig, siginfo_t *info, void *context)
{
	if (in_stack) {
		deferred_info[sig] = *info;
		deferred_signals |= 1u << sig;
		return;
	}
	int saved_errno = errno;
	call_program_handler(sig, info, context);
	errno = saved_errno;
}

static void run_deferred_signals(void)
{
	int saved_errno = errno;
	while (deferred_signals != 0) {
		int sig = __builtin_ctz(deferred_signals);
		deferred_signals &= ~(1u << sig);
		/* The handler runs with its own mask and the signal blocked, as if it had just been delivered. */
		sigset_t mask = program_action[sig].sa_mask, old;
		if (!(program_action[sig].sa_flags & SA_NODEFER))
			sigaddset(&mask, sig);
		pthread_sigmask(SIG_BLOCK, &mask, &old);
		call_program_handler(sig, &deferred_info[sig], NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	errno = saved_errno;
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	if (in_stack || !wrappable(sig))
		return LIBC(sigaction)(sig, act, old);
	pthread_mutex_lock(&signal_lock);
	struct sigaction kernel_old;
	int rc;
	if (act != NULL && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN) {
		struct sigaction t = *act;
		t.sa_sigaction = trampoline;
		t.sa_flags = (act->sa_flags | SA_SIGINFO) & ~SA_RESETHAND; /* the trampoline resets the program's view */
		program_action[sig] = *act;
		rc = LIBC(sigaction)(sig, &t, &kernel_old);
		if (rc == 0)
			wrapped[sig] = 1;
	} else {
		rc = LIBC(sigaction)(sig, act, &kernel_old);
		if (rc == 0 && act != NULL)
			wrapped[sig] = 0;
	}
	if (rc == 0 && old != NULL) {
		/* The program reads back what it set, not the trampoline. */
		*old = kernel_old.sa_sigaction == trampoline ? program_action[sig] : kernel_old;
	}
	if (rc == 0 && act != NULL && !wrapped[sig])
		program_action[sig] = *act;
	pthread_mutex_unlock(&signal_lock);
	return rc;
}

/* glibc's signal() reaches its own sigaction without the PLT: it is interposed too, with its BSD semantics. */
EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	struct sigaction a = { .sa_handler = handler, .sa_flags = SA_RESTART }, old;
	sigemptyset(&a.sa_mask);
	if (sigaction(sig, &a, &old) != 0)
		return SIG_ERR;
	return old.sa_handler;
}

__attribute__((constructor)) static void onload_preload_init(void)
{
	pthread_once(&libc_once, resolve_libc);
	opt_no_fail = env_long("ONLOAD_NO_FAIL", 1) != 0;
	opt_spin_ns = env_long("ONLOAD_SPIN_US", 100) * 1000L;
	opt_debug = env_long("ONLOAD_DEBUG", 0) != 0;
	opt_exit_linger_ms = (int)env_long("ONLOAD_EXIT_LINGER_MS", 10000);
	struct rlimit rl;
	long size = 65536;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur > size)
		size = rl.rlim_cur > (1u << 20) ? (1L << 20) : (long)rl.rlim_cur;
	/* Pages are touched only where fds are: a large table costs address space, not memory. */
	void *table = mmap(NULL, (size_t)size * sizeof(struct fd_entry), PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (table == MAP_FAILED) {
		fprintf(stderr, "onload: no memory for the fd table: sockets stay on the kernel\n");
		return;
	}
	void *conns = mmap(NULL, (size_t)size * sizeof(struct conn_state), PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (conns == MAP_FAILED) {
		fprintf(stderr, "onload: no memory for the connection table: sockets stay on the kernel\n");
		return;
	}
	void *udp_conns = mmap(NULL, (size_t)size * sizeof(struct conn_state), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (udp_conns == MAP_FAILED) {
		fprintf(stderr, "onload: no memory for the UDP socket table: sockets stay on the kernel\n");
		return;
	}
	conn_tables[KIND_TCP] = conns;
	conn_tables[KIND_UDP] = udp_conns;
	fd_table = table;
	fd_table_size = (int)size;
	pthread_atfork(before_fork, NULL, in_forked_child);
	adopt_stashes();
	debug("preloaded (pid %d, fd table %ld)", (int)getpid(), size);
}

#include "onload_ext.c"
