/*
 * inet6.h: AF_INET6 addresses for the preload test helpers (inet6_calls.c, udp6_calls.c): made from text, v4-mapped
 * from an IPv4 address, and shown as [ADDRESS]:PORT. Include after check.h.
 */
#ifndef ONLOAD_TESTS_INET6_H
#define ONLOAD_TESTS_INET6_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

static struct sockaddr_in6 v6(const char *text, int port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
	CHECK(inet_pton(AF_INET6, text, &a.sin6_addr) == 1, "bad IPv6 address %s", text);
	return a;
}

static struct sockaddr_in6 mapped(const char *ipv4, int port)
{
	char text[64];
	snprintf(text, sizeof text, "::ffff:%s", ipv4);
	return v6(text, port);
}

static const char *show(const struct sockaddr_in6 *a)
{
	static char text[INET6_ADDRSTRLEN + 16];
	char addr[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr);
	snprintf(text, sizeof text, "[%s]:%d", addr, ntohs(a->sin6_port));
	return text;
}

#endif
