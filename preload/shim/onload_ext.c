/*
 * onload_ext.c: the onload_* C API (preload/include/onload.h), part of both libraries built from
 * onload_preload.c, which includes this file at its end: libonload.so (LD_PRELOAD: every socket call is already
 * the stack's, and these names are the same functions) and libonload_ext.so (ONLOAD_EXT_ONLY: only these names
 * reach the stack). Beside the socket calls: onload_is_present, stack naming, the per-thread spin setting,
 * onload_fd_stat, and zero-copy TCP receive and send over the stack's own rings.
 */
#include <ifaddrs.h>
#include <netinet/in.h>

#include "onload.h"

#define API __attribute__((visibility("default")))

/* The socket calls: the same functions as the libc names, under the API's names. glibc declares some of them leaf
 * and nothrow; these claim neither (they call back into the program's signal handlers, for one). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define ONLOAD_NAME(name) extern __typeof__(name) onload_##name API __attribute__((alias(#name)));
ONLOAD_NAME(socket)
ONLOAD_NAME(bind)
ONLOAD_NAME(listen)
ONLOAD_NAME(accept)
ONLOAD_NAME(accept4)
ONLOAD_NAME(connect)
ONLOAD_NAME(close)
ONLOAD_NAME(shutdown)
ONLOAD_NAME(getsockname)
ONLOAD_NAME(getpeername)
ONLOAD_NAME(setsockopt)
ONLOAD_NAME(getsockopt)
ONLOAD_NAME(fcntl)
ONLOAD_NAME(ioctl)
ONLOAD_NAME(read)
ONLOAD_NAME(write)
ONLOAD_NAME(readv)
ONLOAD_NAME(writev)
ONLOAD_NAME(recv)
ONLOAD_NAME(send)
ONLOAD_NAME(recvfrom)
ONLOAD_NAME(sendto)
ONLOAD_NAME(recvmsg)
ONLOAD_NAME(sendmsg)
ONLOAD_NAME(poll)
ONLOAD_NAME(select)
ONLOAD_NAME(epoll_create1)
ONLOAD_NAME(epoll_ctl)
ONLOAD_NAME(epoll_wait)
ONLOAD_NAME(epoll_pwait)
ONLOAD_NAME(dup)
ONLOAD_NAME(dup2)
ONLOAD_NAME(dup3)
#undef ONLOAD_NAME
#pragma GCC diagnostic pop

#ifdef ONLOAD_EXT_ONLY
/*
 * Without onload-run nobody chose the interface or the daemon: as onload-run would, the only interface with a
 * global IPv4 address, and the onload-driverd installed beside this library. Set before the stack first loads.
 */
static void choose_defaults(void)
{
	if (getenv("ONLOAD_INTERFACE") == NULL) {
		struct ifaddrs *list;
		char chosen[IF_NAMESIZE] = "";
		int candidates = 0;
		if (getifaddrs(&list) == 0) {
			for (struct ifaddrs *a = list; a != NULL; a = a->ifa_next) {
				if (a->ifa_addr == NULL || a->ifa_addr->sa_family != AF_INET)
					continue;
				uint32_t ip = ntohl(((const struct sockaddr_in *)(const void *)a->ifa_addr)->sin_addr.s_addr);
				if ((ip >> 24) == 127 || (ip >> 16) == 0xa9fe) /* loopback, link-local */
					continue;
				if (strcmp(chosen, a->ifa_name) != 0) {
					candidates++;
					snprintf(chosen, sizeof chosen, "%s", a->ifa_name);
				}
			}
			freeifaddrs(list);
		}
		if (candidates == 1)
			setenv("ONLOAD_INTERFACE", chosen, 0);
	}
	if (getenv("ONLOAD_DRIVERD") == NULL) {
		char path[4096];
		stack_library_path(path, sizeof path); /* <prefix>/lib/libonload_stack.so */
		char *slash = strrchr(path, '/');
		if (slash != NULL) {
			*slash = '\0';
			slash = strrchr(path, '/');
			if (slash != NULL) {
				snprintf(slash, sizeof path - (size_t)(slash - path), "/bin/onload-driverd");
				if (access(path, X_OK) == 0)
					setenv("ONLOAD_DRIVERD", path, 0);
			}
		}
	}
}
#else
static void choose_defaults(void) {}
#endif

/* Before main, so before the stack can first load and read them. */
__attribute__((constructor)) static void onload_ext_init(void)
{
	choose_defaults();
}

API int onload_is_present(void)
{
	return stack_ready();
}

/* ---------------------------------------------------------------------------------------------------- stacks */

static char stack_name[ONLOAD_STACK_NAME_MAX];
static pthread_mutex_t stack_name_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int saved_stack_choice[8];
static __thread int saved_stack_choices;

API int onload_set_stackname(enum onload_stackname_who who, enum onload_stackname_scope scope, const char *name)
{
	if (who != ONLOAD_THIS_THREAD && who != ONLOAD_ALL_THREADS)
		return fail(-EINVAL);
	if (scope == ONLOAD_SCOPE_USER || scope == ONLOAD_SCOPE_GLOBAL)
		return fail(-EOPNOTSUPP); /* no stack is shared between processes */
	if (scope != ONLOAD_SCOPE_NOCHANGE && scope != ONLOAD_SCOPE_THREAD && scope != ONLOAD_SCOPE_PROCESS)
		return fail(-EINVAL);
	int kernel = name != NULL && strcmp(name, ONLOAD_DONT_ACCELERATE) == 0;
	if (!kernel && name != NULL && name[0] != '\0') {
		if (strlen(name) >= ONLOAD_STACK_NAME_MAX)
			return fail(-ENAMETOOLONG);
		pthread_mutex_lock(&stack_name_lock);
		int other = stack_name[0] != '\0' && strcmp(stack_name, name) != 0;
		if (!other)
			snprintf(stack_name, sizeof stack_name, "%s", name);
		pthread_mutex_unlock(&stack_name_lock);
		if (other)
			return fail(-EBUSY); /* one stack per process, and it has another name */
	}
	if (who == ONLOAD_THIS_THREAD)
		thread_stack_choice = kernel ? 2 : 1;
	else
		__atomic_store_n(&process_dont_accelerate, kernel, __ATOMIC_RELAXED);
	return 0;
}

API int onload_stackname_save(void)
{
	if (saved_stack_choices == (int)(sizeof saved_stack_choice / sizeof saved_stack_choice[0]))
		return fail(-ENOSPC);
	saved_stack_choice[saved_stack_choices++] = thread_stack_choice;
	return 0;
}

API int onload_stackname_restore(void)
{
	if (saved_stack_choices == 0)
		return fail(-ENOENT);
	thread_stack_choice = saved_stack_choice[--saved_stack_choices];
	return 0;
}

/* ------------------------------------------------------------------------------------------------- spinning */

API int onload_thread_set_spin(enum onload_spin_type type, int spin)
{
	unsigned bits;
	switch (type) {
	case ONLOAD_SPIN_ALL: bits = (1u << SPIN_RECV) | (1u << SPIN_SEND) | (1u << SPIN_POLL) | (1u << SPIN_EPOLL); break;
	case ONLOAD_SPIN_RECV: bits = 1u << SPIN_RECV; break;
	case ONLOAD_SPIN_SEND: bits = 1u << SPIN_SEND; break;
	case ONLOAD_SPIN_POLL: bits = 1u << SPIN_POLL; break;
	case ONLOAD_SPIN_EPOLL_WAIT: bits = 1u << SPIN_EPOLL; break;
	default: return fail(-EINVAL);
	}
	if (!thread_spin_set) /* the first call starts from what ONLOAD_SPIN_US gives every wait */
		thread_spin_mask = opt_spin_ns > 0 ? ~0u : 0;
	thread_spin_set = 1;
	thread_spin_mask = spin ? (thread_spin_mask | bits) : (thread_spin_mask & ~bits);
	return 0;
}

/* ------------------------------------------------------------------------------------------- onload_fd_stat */

API int onload_fd_stat(int fd, struct onload_stat *stat)
{
	if (fd < 0 || LIBC(fcntl)(fd, F_GETFD) < 0)
		return fail(-EBADF);
	struct fd_entry *e = accelerated(fd);
	if (e == NULL)
		return 0;
	if (stat == NULL)
		return fail(-EFAULT);
	memset(stat, 0, sizeof *stat);
	stat->stack_id = (int32_t)stack_owner;
	pthread_mutex_lock(&stack_name_lock);
	memcpy(stat->stack_name, stack_name, sizeof stat->stack_name);
	pthread_mutex_unlock(&stack_name_lock);
	stat->endpoint_id = handle_of(e);
	stat->protocol = e->kind == KIND_UDP ? IPPROTO_UDP : IPPROTO_TCP;
	if (e->kind == KIND_TCP) {
		uint8_t state = 0; /* struct tcp_info begins with tcpi_state */
		if (STACK(st.tcp_info(handle_of(e), &state, 1)) > 0)
			stat->endpoint_state = state;
	}
	return 1;
}

/* ------------------------------------------------------------------------------------------------ zero-copy */

/*
 * A TCP connection's zero-copy bookkeeping. Lent pieces are kept in stream order from `returned`, the offset (since
 * the first zero-copy call) up to which bytes went back to the stack; a piece's handle is its start + 1, so a
 * handle is never reused and one already returned is known by its start below `returned`. Released pieces leave
 * the front as soon as nothing held is before them. recv() while pieces are out takes the bytes after them as a
 * piece released at once (zc_copy_recv). The send side is one open reservation at most.
 */
struct zc_piece {
	uint64_t start;
	uint32_t len;
	uint32_t held;
};

struct zc_state {
	pthread_mutex_t lock;
	uint64_t returned; /* stream offset: everything before it went back to the stack */
	uint64_t lent_end; /* stream offset after the last piece */
	int n;
	struct zc_piece p[ONLOAD_ZC_MAX_HELD];
	int reserved;     /* onload_zc_send_alloc gave room that onload_zc_send has not taken yet */
	uint64_t reserved_at;
};

static pthread_mutex_t zc_create_lock = PTHREAD_MUTEX_INITIALIZER;

static struct zc_state *zc_of(struct fd_entry *e)
{
	struct conn_state *c = conn_of(e);
	struct zc_state *z = __atomic_load_n(&c->zc, __ATOMIC_ACQUIRE);
	if (z != NULL)
		return z;
	pthread_mutex_lock(&zc_create_lock);
	if ((z = c->zc) == NULL && (z = calloc(1, sizeof *z)) != NULL) {
		pthread_mutex_init(&z->lock, NULL);
		__atomic_store_n(&c->zc, z, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&zc_create_lock);
	return z;
}

/* The connection is closed: its pieces went with it (their handles now say EBADF, the fd being gone). */
static void zc_forget(struct conn_state *c)
{
	struct zc_state *z = c->zc;
	if (z == NULL)
		return;
	c->zc = NULL;
	pthread_mutex_destroy(&z->lock);
	free(z);
}

/* Appends a piece; a released one joins a released piece before it. 0, or -ENOBUFS when ONLOAD_ZC_MAX_HELD are out. */
static int zc_append(struct zc_state *z, uint32_t len, int held)
{
	if (!held && z->n > 0 && !z->p[z->n - 1].held) {
		z->p[z->n - 1].len += len;
	} else {
		if (z->n == ONLOAD_ZC_MAX_HELD)
			return -ENOBUFS;
		z->p[z->n++] = (struct zc_piece){ .start = z->lent_end, .len = len, .held = (uint32_t)held };
	}
	z->lent_end += len;
	return 0;
}

/* Gives the stack back the released pieces at the front. */
static void zc_return_front(struct fd_entry *e, struct zc_state *z)
{
	int i = 0;
	uint64_t bytes = 0;
	while (i < z->n && !z->p[i].held)
		bytes += z->p[i++].len;
	if (i == 0)
		return;
	memmove(z->p, z->p + i, (size_t)(z->n - i) * sizeof z->p[0]);
	z->n -= i;
	z->returned += bytes;
	STACK(st.zc_return(handle_of(e), (int)bytes));
}

static int zc_copy_recv(struct fd_entry *e, void *buf, size_t len)
{
	struct zc_state *z = conn_of(e)->zc;
	if (z == NULL)
		return -EBUSY;
	pthread_mutex_lock(&z->lock);
	size_t got = 0;
	int rc = 0;
	while (got < len) {
		void *p;
		size_t want = len - got > INT_MAX ? INT_MAX : len - got;
		if (z->n == ONLOAD_ZC_MAX_HELD && z->p[z->n - 1].held) { /* no room to note what it would copy */
			rc = -ENOBUFS;
			break;
		}
		rc = STACK(st.zc_lend(handle_of(e), (int)want, &p));
		if (rc <= 0)
			break;
		memcpy((char *)buf + got, p, (size_t)rc);
		zc_append(z, (uint32_t)rc, 0); /* joins the released piece before it, or takes the room checked above */
		got += (size_t)rc;
		zc_return_front(e, z);
	}
	pthread_mutex_unlock(&z->lock);
	return got > 0 ? (int)got : rc;
}

static struct fd_entry *zc_connection(int fd)
{
	struct fd_entry *e = accelerated(fd);
	if (e == NULL || e->kind != KIND_TCP) {
		errno = fd < 0 || LIBC(fcntl)(fd, F_GETFD) < 0 ? EBADF : EOPNOTSUPP;
		return NULL;
	}
	return e;
}

API int onload_zc_recv(int fd, struct onload_zc_iovec *iov, int max, int flags)
{
	struct fd_entry *e = zc_connection(fd);
	if (e == NULL)
		return -1;
	if (iov == NULL || max <= 0)
		return fail(-EINVAL);
	struct zc_state *z = zc_of(e);
	if (z == NULL)
		return fail(-ENOMEM);
	int nonblock = nonblocking(e) || (flags & MSG_DONTWAIT);
	for (;;) {
		int count = 0, rc = 0;
		pthread_mutex_lock(&z->lock);
		while (count < max && z->n < ONLOAD_ZC_MAX_HELD) {
			void *p;
			rc = STACK(st.zc_lend(handle_of(e), INT_MAX, &p));
			if (rc <= 0)
				break;
			iov[count] = (struct onload_zc_iovec){ .iov_base = p, .iov_len = (size_t)rc, .buf = z->lent_end + 1 };
			zc_append(z, (uint32_t)rc, 1);
			count++;
		}
		int full = z->n == ONLOAD_ZC_MAX_HELD;
		pthread_mutex_unlock(&z->lock);
		if (count > 0)
			return count;
		if (full)
			return fail(-ENOBUFS);
		if (rc == 0)
			return 0; /* end of stream */
		if (rc != -EAGAIN)
			return fail(rc);
		if (await_ready(fd, e, nonblock, 0) < 0)
			return -1;
	}
}

API int onload_zc_release(int fd, const onload_zc_handle *bufs, int count)
{
	struct fd_entry *e = zc_connection(fd);
	if (e == NULL)
		return -1;
	if (count < 0 || (bufs == NULL && count > 0))
		return fail(-EINVAL);
	struct zc_state *z = conn_of(e)->zc;
	if (z == NULL)
		return count == 0 ? 0 : fail(-EINVAL);
	int rc = 0;
	pthread_mutex_lock(&z->lock);
	for (int k = 0; k < count && rc == 0; k++) {
		uint64_t start = bufs[k] - 1;
		rc = -EINVAL;
		if (bufs[k] == 0 || start < z->returned || start >= z->lent_end)
			break;
		int lo = 0, hi = z->n - 1; /* pieces are in stream order */
		while (lo <= hi) {
			int mid = (lo + hi) / 2;
			if (z->p[mid].start == start) {
				if (z->p[mid].held) {
					z->p[mid].held = 0;
					rc = 0;
				}
				break;
			}
			if (z->p[mid].start < start)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
	}
	zc_return_front(e, z);
	pthread_mutex_unlock(&z->lock);
	return rc < 0 ? fail(rc) : 0;
}

API int onload_zc_send_alloc(int fd, struct iovec *buf, int flags)
{
	struct fd_entry *e = zc_connection(fd);
	if (e == NULL)
		return -1;
	if (buf == NULL)
		return fail(-EFAULT);
	struct zc_state *z = zc_of(e);
	if (z == NULL)
		return fail(-ENOMEM);
	int nonblock = nonblocking(e) || (flags & MSG_DONTWAIT);
	for (;;) {
		void *p;
		uint64_t at;
		pthread_mutex_lock(&z->lock);
		int rc = z->reserved ? -EBUSY : STACK(st.zc_reserve(handle_of(e), &p, &at));
		if (rc > 0) {
			z->reserved = 1;
			z->reserved_at = at;
		}
		pthread_mutex_unlock(&z->lock);
		if (rc > 0) {
			buf->iov_base = p;
			buf->iov_len = (size_t)rc;
			return 0;
		}
		if (rc != -EAGAIN) {
			if (rc == -EPIPE && !(flags & MSG_NOSIGNAL))
				raise(SIGPIPE);
			return fail(rc);
		}
		if (await_ready(fd, e, nonblock, 1) < 0)
			return -1;
	}
}

API ssize_t onload_zc_send(int fd, size_t len, uint64_t *done_at)
{
	struct fd_entry *e = zc_connection(fd);
	if (e == NULL)
		return -1;
	struct zc_state *z = conn_of(e)->zc;
	if (z == NULL || len > INT_MAX)
		return fail(-EINVAL);
	pthread_mutex_lock(&z->lock);
	int rc = -EINVAL;
	if (z->reserved) { /* the stack closes the reservation whatever it says */
		rc = STACK(st.zc_commit(handle_of(e), (int)len));
		z->reserved = 0;
	}
	uint64_t end = z->reserved_at + len;
	pthread_mutex_unlock(&z->lock);
	if (rc < 0)
		return fail(rc);
	if (done_at != NULL)
		*done_at = end;
	return rc;
}

API int onload_zc_send_completed(int fd, uint64_t *acked)
{
	struct fd_entry *e = zc_connection(fd);
	if (e == NULL)
		return -1;
	if (acked == NULL)
		return fail(-EFAULT);
	int64_t rc = STACK(st.zc_acked(handle_of(e)));
	if (rc < 0)
		return fail((int)rc);
	*acked = (uint64_t)rc;
	return 0;
}
