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

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes; changes when an existing export changes. */
#define ONLOAD_STACK_ABI_VERSION 1

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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* ONLOAD_STACK_H */
