/*
 * abi_smoke: loads libonload_stack.so with dlopen(), finds its exports with dlsym(), calls
 * each and checks the answers. Exit status 0 only if every check passed.
 *
 *   abi_smoke path/to/libonload_stack.so
 *
 * To cover a new export: write a check_<name>() below that returns 0 when sane and
 * prints why not otherwise, and add it to the checks[] table.
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "onload_stack.h"

static void *lib;

/* dlsym() into a typed function pointer; NULL (with a message) if it is missing. */
static void *lookup(const char *name)
{
    void *sym;

    dlerror();
    sym = dlsym(lib, name);
    if (sym == NULL) {
        const char *err = dlerror();
        fprintf(stderr, "  missing export %s: %s\n", name, err ? err : "NULL symbol");
    }
    return sym;
}

/* ISO C forbids converting void * to a function pointer; POSIX guarantees it works. */
#define LOOKUP(var, name)                                                  \
    do {                                                                         \
        void *sym_ = lookup(name);                                               \
        if (sym_ == NULL)                                                        \
            return 1;                                                            \
        memcpy(&(var), &sym_, sizeof(var));                                      \
    } while (0)

static int check_abi_version(void)
{
    onload_stack_abi_version_fn abi_version;
    int v;

    LOOKUP(abi_version, "onload_stack_abi_version");
    v = abi_version();
    printf("  onload_stack_abi_version() = %d (header: %d)\n", v, ONLOAD_STACK_ABI_VERSION);
    if (v != ONLOAD_STACK_ABI_VERSION) {
        fprintf(stderr, "  ABI version mismatch\n");
        return 1;
    }
    return 0;
}

static int check_version(void)
{
    onload_stack_version_fn version;
    char buf[256];
    char small[8];
    int n, m, i;

    LOOKUP(version, "onload_stack_version");

    n = version(NULL, 0);
    if (n <= 0 || n >= (int)sizeof(buf)) {
        fprintf(stderr, "  onload_stack_version(NULL, 0) = %d: want a length in 1..%d\n", n,
                (int)sizeof(buf) - 1);
        return 1;
    }

    memset(buf, 'X', sizeof(buf));
    m = version(buf, (int)sizeof(buf));
    printf("  onload_stack_version() = %d \"%s\"\n", m, m == n ? buf : "?");
    if (m != n || buf[n] != '\0' || (int)strlen(buf) != n) {
        fprintf(stderr, "  version string not NUL-terminated at its length %d\n", n);
        return 1;
    }
    if (strncmp(buf, "onload-stack ", 13) != 0) {
        fprintf(stderr, "  version string does not start with \"onload-stack \"\n");
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (buf[i] < 0x20 || buf[i] > 0x7e) {
            fprintf(stderr, "  version string has a non-printable byte at %d\n", i);
            return 1;
        }
    }

    /* Truncation: snprintf semantics. */
    memset(small, 'X', sizeof(small));
    m = version(small, (int)sizeof(small));
    if (m != n || small[sizeof(small) - 1] != '\0' || strncmp(small, buf, sizeof(small) - 1) != 0) {
        fprintf(stderr, "  truncated onload_stack_version(buf, %d) = %d \"%.*s\": wrong\n",
                (int)sizeof(small), m, (int)sizeof(small), small);
        return 1;
    }

    /* Bad arguments. */
    m = version(buf, -1);
    if (m != -EINVAL) {
        fprintf(stderr, "  onload_stack_version(buf, -1) = %d, want %d\n", m, -EINVAL);
        return 1;
    }
    m = version(NULL, 16);
    if (m != -EINVAL) {
        fprintf(stderr, "  onload_stack_version(NULL, 16) = %d, want %d\n", m, -EINVAL);
        return 1;
    }
    return 0;
}

static int check_selftest(void)
{
    onload_stack_selftest_fn selftest;
    int n, again;

    LOOKUP(selftest, "onload_stack_selftest");
    n = selftest(42, 500);
    printf("  onload_stack_selftest(42, 500) = %d datagrams intact of 1000\n", n);
    /* 5% loss and 5% corruption each way: most, not all, arrive. */
    if (n < 800 || n > 1000) {
        fprintf(stderr, "  want 800..1000 intact datagrams\n");
        return 1;
    }
    again = selftest(42, 500);
    if (again != n) {
        fprintf(stderr, "  same seed gave %d, then %d: the simulation must repeat exactly\n", n, again);
        return 1;
    }
    if (selftest(42, 0) != -EINVAL) {
        fprintf(stderr, "  onload_stack_selftest(42, 0) should be -EINVAL\n");
        return 1;
    }
    return 0;
}

/* The socket layer's exports are there (calling them would start a stack: the preload tests do). */
static int check_socket_exports(void)
{
    static const char *const names[] = {
        "onload_sock_init", "onload_sock_start_failure", "onload_sock_local_address", "onload_sock_open",
        "onload_sock_bind", "onload_sock_listen", "onload_sock_accept", "onload_sock_connect",
        "onload_sock_send", "onload_sock_recv", "onload_sock_shutdown", "onload_sock_close",
        "onload_sock_name", "onload_sock_take_error", "onload_sock_tcp_info", "onload_sock_tcp_setopt", "onload_sock_tcp_getopt",
        "onload_sock_poll", "onload_sock_wait_begin", "onload_sock_wait_end", "onload_sock_drain", "onload_sock_peek",
        "onload_sock_queued",
        "onload_sock_udp_open", "onload_sock_udp_bind", "onload_sock_udp_connect", "onload_sock_udp_disconnect",
        "onload_sock_udp_send", "onload_sock_udp_recv", "onload_sock_udp_next_length", "onload_sock_udp_close",
        "onload_sock_udp_name", "onload_sock_udp_take_error", "onload_sock_udp_setopt",
    };
    size_t i;
    int missing = 0;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        missing += lookup(names[i]) == NULL;
    return missing;
}

static const struct {
    const char *name;
    int (*run)(void);
} checks[] = {
    { "abi_version", check_abi_version },
    { "version", check_version },
    { "selftest", check_selftest },
    { "sock_exports", check_socket_exports },
};

int main(int argc, char **argv)
{
    size_t i;
    int failed = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s path/to/libonload_stack.so\n", argc > 0 ? argv[0] : "abi_smoke");
        return 2;
    }

    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "abi_smoke: dlopen(%s): %s\n", argv[1], dlerror());
        return 1;
    }
    printf("abi_smoke: loaded %s\n", argv[1]);

    for (i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        int rc = checks[i].run();
        printf("abi_smoke: %-12s %s\n", checks[i].name, rc == 0 ? "ok" : "FAILED");
        failed += rc != 0;
    }

    /* A NativeAOT library can't be unloaded safely: leave it mapped. */
    printf("abi_smoke: %d of %d checks failed\n", failed, (int)(sizeof(checks) / sizeof(checks[0])));
    return failed == 0 ? 0 : 1;
}
