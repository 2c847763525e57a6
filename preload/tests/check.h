/*
 * check.h: the step check the preload test helpers share (the C programs in preload/tests). A failed step
 * prints its line, what it was and errno, and exits 1; each helper prints "ok WHAT" for the steps that passed.
 */
#ifndef ONLOAD_TESTS_CHECK_H
#define ONLOAD_TESTS_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
