/*
 * ext_calls: the C API's calls beyond the socket calls (onload.h), one "ok" line each: onload_is_present, stack
 * naming (ONLOAD_DONT_ACCELERATE for a thread and for the process, saved and restored; one stack per process),
 * onload_thread_set_spin, onload_fd_stat on both kinds of fd. Run linked to libonload_ext.so, and under onload-run,
 * where libonload.so answers the same calls (tests/Onload.Tests/Preload/ExtApiTests.cs).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <pthread.h>
#include <unistd.h>

#include <onload.h>

#include "check.h"

static int on_stack(int fd)
{
	struct onload_stat s;
	int rc = onload_fd_stat(fd, &s);
	CHECK(rc == 0 || rc == 1, "onload_fd_stat");
	return rc;
}

static int new_socket_on_stack(void)
{
	int fd = onload_socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(fd >= 0, "onload_socket");
	int rc = on_stack(fd);
	CHECK(onload_close(fd) == 0, "onload_close");
	return rc;
}

static void *other_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)new_socket_on_stack();
}

int main(void)
{
	CHECK(onload_is_present() == 1, "onload_is_present");
	printf("ok present\n");

	CHECK(onload_set_stackname(ONLOAD_ALL_THREADS, ONLOAD_SCOPE_PROCESS, "ext-calls") == 0, "name the stack");
	CHECK(onload_set_stackname(ONLOAD_THIS_THREAD, ONLOAD_SCOPE_THREAD, "another") == -1 && errno == EBUSY,
	      "a second name: EBUSY");
	CHECK(onload_set_stackname(ONLOAD_THIS_THREAD, ONLOAD_SCOPE_GLOBAL, "ext-calls") == -1 && errno == EOPNOTSUPP,
	      "a stack shared between processes: EOPNOTSUPP");
	int fd = onload_socket(AF_INET, SOCK_STREAM, 0);
	struct onload_stat s;
	CHECK(onload_fd_stat(fd, &s) == 1 && strcmp(s.stack_name, "ext-calls") == 0 && s.stack_id == getpid() &&
	      s.protocol == IPPROTO_TCP && s.endpoint_state == 7, "fd_stat of a new TCP socket (TCP_CLOSE)");
	onload_close(fd);
	printf("ok named stack\n");

	CHECK(onload_stackname_save() == 0, "save");
	CHECK(onload_set_stackname(ONLOAD_THIS_THREAD, ONLOAD_SCOPE_THREAD, ONLOAD_DONT_ACCELERATE) == 0, "this thread: kernel");
	CHECK(new_socket_on_stack() == 0, "this thread's new socket is the kernel's");
	pthread_t t;
	void *r;
	CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0 && pthread_join(t, &r) == 0, "thread");
	CHECK((intptr_t)r == 1, "another thread's new socket is the stack's");
	CHECK(onload_stackname_restore() == 0, "restore");
	CHECK(new_socket_on_stack() == 1, "after restore, this thread's new socket is the stack's again");
	CHECK(onload_stackname_restore() == -1 && errno == ENOENT, "nothing left to restore: ENOENT");
	CHECK(onload_set_stackname(ONLOAD_ALL_THREADS, ONLOAD_SCOPE_PROCESS, ONLOAD_DONT_ACCELERATE) == 0, "process: kernel");
	CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0 && pthread_join(t, &r) == 0, "thread");
	CHECK((intptr_t)r == 0, "with the process kept on the kernel, a thread's new socket is the kernel's");
	CHECK(onload_set_stackname(ONLOAD_ALL_THREADS, ONLOAD_SCOPE_PROCESS, "") == 0, "process: the default");
	printf("ok dont accelerate\n");

	CHECK(onload_thread_set_spin(ONLOAD_SPIN_ALL, 0) == 0 && onload_thread_set_spin(ONLOAD_SPIN_RECV, 1) == 0,
	      "spin settings");
	CHECK(onload_thread_set_spin((enum onload_spin_type)99, 1) == -1 && errno == EINVAL, "an unknown spin type: EINVAL");
	printf("ok spin\n");

	int k = socket(AF_INET, SOCK_DGRAM, 0);
	int want = getenv("LD_PRELOAD") != NULL ? 1 : 0; /* under onload-run socket() is the stack's too */
	CHECK(on_stack(k) == want, "socket() is %s", want ? "the stack's under onload-run" : "the kernel's");
	close(k);
	CHECK(onload_fd_stat(1000000, &s) == -1 && errno == EBADF, "fd_stat of a closed fd: EBADF");
	printf("ok fd_stat\n");
	printf("ok done\n");
	return 0;
}
