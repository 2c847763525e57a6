# Build, test and package the Onload user-level stack.
#
#   make                 deps, restore, build Onload.sln (Release), publish into dist/
#   make test            everything above, then the header checks, the C ABI smoke test and the
#                        .NET tests; ends with "N passed, N failed, N skipped"
#   make demo            ping and UDP echo against dist/bin/onload-echo across a veth pair (root)
#   make bench           BenchmarkDotNet micro-benchmarks (BENCH_ARGS="--filter *Ring*" to choose), then
#                        bench-latency, bench-tcp, bench-driverlink, bench-sockperf, bench-rates and bench-web
#   make bench-quick     the same, short (micro-benchmarks in-process, every other row 2 s): proves they run
#   make bench-latency   UDP ping-pong latency, kernel (sockperf) against the stack over AF_PACKET, AF_XDP and
#                        shared memory (perf/latency.sh, root); table in perf/results/latency.md
#   make bench-tcp       TCP against the kernel over one veth pair: ping-pong latency, bulk throughput and
#                        connection set-up rate, kernel beside stack with ratios (perf/tcp.sh, root);
#                        table in perf/results/tcp.md
#   make bench-driverlink  UDP ping-pong latency of driverlink's exclusive and shared modes beside the kernel and
#                        direct AF_XDP (perf/driverlink.sh, root); table in perf/results/driverlink.md
#   make bench-sockperf  issue 8's latency rows: sockperf on both ends, UDP and TCP, 64 B and 1 KiB, kernel over
#                        veth, kernel busy-polling, sockperf under onload-run on both ends, shm VNICs, loopback;
#                        ratios to the kernel (perf/sockperf.sh, root); perf/results/sockperf.md, .json, *.png
#   make bench-rates     issue 8's rates: single-stream TCP throughput (kernel with offloads off and on, iperf3
#                        under onload-run, the stack's own source and sink over veth and shm, loopback), UDP
#                        message rate, TCP connection rate, and the accelerated servers' allocation
#                        (perf/rates.sh, root); perf/results/rates.md, .json
#   make bench-web       issue 9's web figures: wrk against onload-web-sample on kernel sockets and on the stack
#                        (driverlink exclusive and shared, direct AF_XDP), requests/s, latency median and p99, ratios,
#                        and the server's allocation per request (perf/web.sh, root); perf/results/web.md, .json
#   make sweep           the deterministic simulation sweep: 2,000 seeds of lossy, reordering, corrupting links
#                        x {SACK + CUBIC, NewReno without SACK}, every byte checked (tests/Onload.Sweep; not part
#                        of `make test`); report in perf/results/sweep.md. SWEEP_ARGS="--seeds 10000",
#                        "--replay SEED", ... (--help lists them)
#   make fuzz            coverage-guided fuzzing (SharpFuzz + AFL++, tests/fuzz/run.sh; root for the seed capture): the
#                        frame parser, IPv4 reassembly, TCP input of a listener and of an established connection, the
#                        driverlink decoder, 60 s each (FUZZ_ARGS="--seconds 600 frame"); perf/results/fuzz.md
#   make soak            an hour of mixed traffic through 2% loss (not in CI; perf/soak.sh, SOAK_SECONDS=3600): every
#                        byte checked, every row and buffer back after each round, memory flat (SoakTests)
#   make hostile-report  issue 10's report, docs/HOSTILE.md: the fuzzing table and every test in the NUnit category
#                        "hostile" with what it saw (tests/hostile/report.sh; HOSTILE_SECONDS of fuzzing per target)
#   make install         copy dist/ to $(PREFIX) (bin, lib, include); DESTDIR is honoured
#   make clean           remove dist/ and every bin/ and obj/
#
# dist/ after `make`:
#   dist/bin/onload-echo            NativeAOT build of apps/echo
#   dist/bin/onload-pingpong        NativeAOT build of apps/pingpong (the latency client and server)
#   dist/bin/onload-pipe-echo       NativeAOT build of apps/pipe-echo: TCP and UDP echo through the managed API
#                                   (Onload.Sockets' ITransport), on the Onload stack or kernel sockets (--transport)
#   dist/bin/onload-driverd         NativeAOT build of apps/driverd (the primary driver daemon)
#   dist/lib/systemd/system/onload-driverd.service   its unit for a service manager
#   dist/bin/onload-tcpdump         NativeAOT build of apps/tcpdump: runs a program with its stack's frames captured
#                                   to pcap (ONLOAD_CAPTURE) and vetoed by rules (ONLOAD_VETO); -r prints a capture
#   dist/bin/onload-stackdump       NativeAOT build of apps/stackdump: the stacks of the programs running under onload-run
#                                   in this network namespace (VNIC, link, sockets, counters), human or --json
#   dist/bin/onload-web-sample      NativeAOT build of apps/web-sample: an ASP.NET Core minimal-API app that Kestrel serves
#                                   from the stack (preload/kestrel, --transport onload) or kernel sockets (--transport kernel)
#   dist/bin/abi_smoke              C program that dlopen()s the stack library and checks its exports
#   dist/lib/libonload_stack.so     the stack as a C shared library (NativeAOT build of preload/native)
#   dist/include/onload_stack.h     its header
#   dist/lib/libonload_ext.so       the onload_* C API for programs that link the stack (preload/shim, ONLOAD_EXT_ONLY):
#                                   per-socket acceleration, stack naming, spin, onload_fd_stat, zero-copy TCP
#   dist/include/onload.h           its header; dist/lib/pkgconfig/onload.pc (`pkg-config onload`)
#   dist/bin/onload-ext-echo        C sample linking libonload_ext.so (apps/ext-echo): a TCP echo server on the stack
#                                   beside one on the kernel, echoing through zero-copy receive and send
#   dist/lib/libonload.so           the LD_PRELOAD interposer (preload/shim): TCP and UDP of unmodified programs on the stack
#   dist/bin/onload-run             runs a program with libonload.so preloaded (apps/onload-run)
#   dist/lib/onload/profiles/*.opf  its --profile settings (latency, throughput, default)
#   dist/share/man/man1/onload-run.1   its manual page
#   dist/tests/epoll_echo           test helper (preload/tests): an epoll echo server over sockets, a pipe, an
#                                   eventfd and a timerfd, run under onload-run by the preload tests (not installed)
#   dist/tests/udp_calls            test helper: the UDP calls (sendmmsg/recvmmsg, MSG_TRUNC, MSG_PEEK, FIONREAD,
#                                   ECONNREFUSED, multicast...) against a kernel echo server
#   dist/tests/io_calls             test helper: readv/writev, sendmsg/recvmsg, MSG_PEEK, ioctl, dup*, ppoll/pselect and
#                                   the _FORTIFY_SOURCE __*_chk routes on one accelerated connection
#   dist/tests/errno_probe          test helper: failing socket calls, one line each, compared between the kernel
#                                   and onload-run (and its peer server)
#   dist/tests/signal_writer        test helper: a signal handler writing to the socket the main thread streams through
#   dist/tests/fork_probe           test helper: a fork mid-stream on an accelerated connection; the child exits or
#                                   uses the inherited connection, the parent checks every echoed byte
#   dist/tests/fork_server          test helper: listen, fork workers that accept (a pre-forking server)
#   dist/tests/fork_per_connection  test helper: accept, fork a child per connection, the parent closes its copy
#   dist/tests/pattern_client       test helper: a kernel client streaming a checked pattern through those servers
#   dist/tests/exec_inherit         test helper: a connection inherited across fork+exec, vfork+exec, posix_spawn, exec
#   dist/tests/udp_fork             test helper: a UDP server whose forked child answers on the inherited socket
#   dist/tests/reuseport            test helper: a listener (or UDP socket) per thread on one port with SO_REUSEPORT,
#                                   echoing, and its kernel clients
#   dist/tests/tcp_crr              perf/tcp_crr.c, the connection-rate client and server, for the tests
#   dist/tests/inet6_calls          test helper: AF_INET6 sockets, v4-mapped names, IPV6_V6ONLY and the IPv6 hand-off
#   dist/tests/udp6_calls           test helper: AF_INET6 UDP sockets, v4-mapped addresses, IPV6_V6ONLY, the IPv6 hand-off
#   dist/tests/epoll_late_member   test helper: a thread asleep in epoll_wait on an empty set while another adds a
#                                   connecting socket to it
#   dist/tests/dotnet-sockets/      test helper (tests/Onload.DotnetSockets, framework-dependent, run with `dotnet`):
#                                   a TcpListener echo server and an HttpClient GET, run under onload-run with the JIT
#   dist/tests/epoll_rearm          test helper: a thread asleep in epoll_wait wakes when another re-arms a ONESHOT member
#   dist/tests/per_message_calls    test helper: a TCP or UDP ping-pong client making ioctl, getsockopt and setsockopt
#                                   calls around every message (the stack must allocate nothing for them)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := all
# NativeAOT publishes are heavy on a 2-core machine: never run two at once, whatever -j says.
.NOTPARALLEL:
.DELETE_ON_ERROR:

CONFIG    ?= Release
RID       ?= linux-x64
DOTNET    ?= dotnet
# make's built-in defaults (cc, g++) give way to gcc and g++; CC=clang etc. still override.
ifeq ($(origin CC),default)
CC        := gcc
endif
ifeq ($(origin CXX),default)
CXX       := g++
endif
PREFIX    ?= /usr/local
DESTDIR   ?=
BENCH_ARGS ?=

DIST      := dist
PUBLISH   := obj/publish
SLN       := Onload.sln

# Debian packages the build, the tests and the demo use (the .NET SDK is not one of them).
DEB_PACKAGES := pkg-config iproute2 iputils-ping socat ethtool tcpdump tshark sockperf gcc g++ make nftables curl iperf3 python3 jq wrk hping3 python3-scapy

export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE := 1

DOTNET_FLAGS := --nologo -c $(CONFIG)
C_WARN       := -Wall -Wextra -Werror -pedantic

# Inputs of a .NET project: its sources and project files, and its directories (so that deleting
# or renaming a file counts as a change). $(call dotnet_inputs,DIR...)
dotnet_inputs = $(shell find $(1) \( -name bin -o -name obj \) -prune -o \
	\( -type d -o -type f \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.targets' \
	   -o -name '*.json' -o -name '*.resx' \) \) -print 2>/dev/null)
ROOT_INPUTS   := $(wildcard Directory.Build.props Directory.Build.targets Directory.Packages.props \
	global.json nuget.config NuGet.config)
STACK_INPUTS  := $(call dotnet_inputs,stack vnic) $(ROOT_INPUTS)
DRIVERLINK_INPUTS := $(STACK_INPUTS) $(call dotnet_inputs,driverlink-client)
ECHO_INPUTS   := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,apps/echo)
PINGPONG_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,apps/pingpong)
PIPE_ECHO_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,preload/managed apps/pipe-echo)
DRIVERD_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,apps/driverd)
TCPDUMP_INPUTS := $(STACK_INPUTS) $(call dotnet_inputs,apps/tcpdump)
STACKDUMP_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,apps/stackdump) preload/native/Dump/StackDumpDocument.cs
NATIVE_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,preload/native)
WEB_SAMPLE_INPUTS := $(DRIVERLINK_INPUTS) $(call dotnet_inputs,preload/managed preload/kestrel apps/web-sample)
DOTNET_SOCKETS_INPUTS := $(call dotnet_inputs,tests/Onload.DotnetSockets) $(ROOT_INPUTS)

DIST_FILES := $(DIST)/bin/onload-echo $(DIST)/bin/onload-pingpong $(DIST)/bin/onload-pipe-echo $(DIST)/bin/onload-driverd $(DIST)/bin/onload-tcpdump \
	$(DIST)/bin/onload-stackdump $(DIST)/bin/onload-web-sample \
	$(DIST)/lib/systemd/system/onload-driverd.service $(DIST)/lib/libonload_stack.so $(DIST)/include/onload_stack.h \
	$(DIST)/bin/abi_smoke $(DIST)/lib/libonload.so $(DIST)/bin/onload-run $(DIST)/tests/epoll_echo $(DIST)/tests/io_calls \
	$(DIST)/tests/inet6_calls $(DIST)/tests/udp_calls $(DIST)/tests/udp6_calls \
	$(DIST)/lib/libonload_ext.so $(DIST)/include/onload.h $(DIST)/lib/pkgconfig/onload.pc $(DIST)/bin/onload-ext-echo \
	$(DIST)/tests/zc_probe $(DIST)/tests/ext_calls

ONLOAD_RUN_PROFILES := $(patsubst apps/onload-run/profiles/%,$(DIST)/lib/onload/profiles/%,$(wildcard apps/onload-run/profiles/*.opf))
DIST_FILES += $(ONLOAD_RUN_PROFILES) $(DIST)/share/man/man1/onload-run.1 $(DIST)/tests/errno_probe $(DIST)/tests/signal_writer \
	$(DIST)/tests/fork_probe $(DIST)/tests/dotnet-sockets/onload-dotnet-sockets.dll $(DIST)/tests/epoll_late_member \
	$(DIST)/tests/epoll_rearm $(DIST)/tests/vfork_probe $(DIST)/tests/fork_server \
	$(DIST)/tests/fork_per_connection $(DIST)/tests/pattern_client $(DIST)/tests/exec_inherit $(DIST)/tests/udp_fork \
	$(DIST)/tests/reuseport $(DIST)/tests/tcp_crr $(DIST)/tests/per_message_calls

.PHONY: soak fuzz hostile-report all deps restore build publish test check-header demo bench bench-quick bench-latency bench-tcp bench-driverlink bench-sockperf bench-rates bench-web sweep install clean

all: deps build publish

# ---------------------------------------------------------------------------------------------
# deps: Debian packages (one apt-get update + install, and only when something is missing) and
# the .NET SDK (which this does not install).
deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  status=$$(dpkg -s "$$p" 2>/dev/null | sed -n 's/^Status: //p'); \
	  [ "$$status" = "install ok installed" ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(DOTNET) >/dev/null 2>&1 || { \
	  echo "error: '$(DOTNET)' not found on PATH. This project needs the .NET 10 SDK:" >&2; \
	  echo "       install it (https://learn.microsoft.com/dotnet/core/install/linux) and retry." >&2; \
	  exit 1; }
	@$(DOTNET) --list-sdks 2>/dev/null | grep '^10\.' >/dev/null || { \
	  echo "error: no .NET 10 SDK found; '$(DOTNET) --list-sdks' says:" >&2; \
	  $(DOTNET) --list-sdks >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# One restore, with the runtime identifier that the NativeAOT publishes need, so that build and
# publish share one set of assets files (restoring with and without -r in turn would rewrite them
# every time). Everything after it runs with --no-restore.
restore:
	$(DOTNET) restore $(SLN) -r $(RID) --nologo -v quiet

# The IL build of every project. PublishAot only acts at publish: nothing is AOT-compiled here.
build: restore
	$(DOTNET) build $(SLN) $(DOTNET_FLAGS) --no-restore -v minimal

publish: $(DIST_FILES)

$(DIST)/bin/onload-echo: $(ECHO_INPUTS) | restore
	@echo "publish: apps/echo -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/echo; \
	$(DOTNET) publish apps/echo/Onload.Echo.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/echo -v minimal; \
	install -D -m 0755 $(PUBLISH)/echo/onload-echo $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/bin/onload-pingpong: $(PINGPONG_INPUTS) | restore
	@echo "publish: apps/pingpong -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/pingpong; \
	$(DOTNET) publish apps/pingpong/Onload.PingPong.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/pingpong -v minimal; \
	install -D -m 0755 $(PUBLISH)/pingpong/onload-pingpong $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/bin/onload-pipe-echo: $(PIPE_ECHO_INPUTS) | restore
	@echo "publish: apps/pipe-echo -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/pipe-echo; \
	$(DOTNET) publish apps/pipe-echo/Onload.PipeEcho.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/pipe-echo -v minimal; \
	install -D -m 0755 $(PUBLISH)/pipe-echo/onload-pipe-echo $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/bin/onload-driverd: $(DRIVERD_INPUTS) | restore
	@echo "publish: apps/driverd -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/driverd; \
	$(DOTNET) publish apps/driverd/Onload.Driverd.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/driverd -v minimal; \
	install -D -m 0755 $(PUBLISH)/driverd/onload-driverd $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/lib/systemd/system/onload-driverd.service: apps/driverd/onload-driverd.service
	install -D -m 0644 $< $@

$(DIST)/bin/onload-tcpdump: $(TCPDUMP_INPUTS) | restore
	@echo "publish: apps/tcpdump -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/tcpdump; \
	$(DOTNET) publish apps/tcpdump/Onload.Tcpdump.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/tcpdump -v minimal; \
	install -D -m 0755 $(PUBLISH)/tcpdump/onload-tcpdump $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/bin/onload-stackdump: $(STACKDUMP_INPUTS) | restore
	@echo "publish: apps/stackdump -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/stackdump; \
	$(DOTNET) publish apps/stackdump/Onload.StackDump.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/stackdump -v minimal; \
	install -D -m 0755 $(PUBLISH)/stackdump/onload-stackdump $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/bin/onload-web-sample: $(WEB_SAMPLE_INPUTS) | restore
	@echo "publish: apps/web-sample -> $@ (NativeAOT)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/web-sample; \
	$(DOTNET) publish apps/web-sample/Onload.WebSample.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/web-sample -v minimal; \
	install -D -m 0755 $(PUBLISH)/web-sample/onload-web-sample $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/lib/libonload_stack.so: $(NATIVE_INPUTS) | restore
	@echo "publish: preload/native -> $@ (NativeAOT shared library)"
	@start=$$(date +%s); \
	rm -rf $(PUBLISH)/native; \
	$(DOTNET) publish preload/native/Onload.Native.csproj $(DOTNET_FLAGS) -r $(RID) --no-restore \
	  -o $(PUBLISH)/native -v minimal; \
	install -D -m 0755 $(PUBLISH)/native/libonload_stack.so $@; \
	echo "publish: $@ took $$(( $$(date +%s) - start ))s"

$(DIST)/include/onload_stack.h: preload/include/onload_stack.h
	install -D -m 0644 $< $@

$(DIST)/bin/abi_smoke: preload/tests/abi_smoke.c preload/include/onload_stack.h
	@mkdir -p $(@D)
	$(CC) -std=c11 $(C_WARN) -O2 -Ipreload/include -o $@ $< -ldl

# The interposer is plain C with GNU extensions (statement expressions, __typeof__), hence gnu11 and no -pedantic.
# Only the interposed functions are exported (-fvisibility=hidden).
$(DIST)/lib/libonload.so: preload/shim/onload_preload.c preload/shim/onload_ext.c preload/include/onload_stack.h \
		preload/include/onload.h
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC -shared -fvisibility=hidden -Ipreload/include -o $@ $< -ldl -lpthread

# The same source without the libc names (ONLOAD_EXT_ONLY): only the versioned onload_* API is exported.
$(DIST)/lib/libonload_ext.so: preload/shim/onload_preload.c preload/shim/onload_ext.c preload/shim/onload_ext.map \
		preload/include/onload_stack.h preload/include/onload.h
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC -shared -fvisibility=hidden -DONLOAD_EXT_ONLY \
	  -Wl,--version-script=preload/shim/onload_ext.map -Wl,-soname,libonload_ext.so -Ipreload/include -o $@ $< -ldl -lpthread

$(DIST)/include/onload.h: preload/include/onload.h
	install -D -m 0644 $< $@

# Relative to the .pc file, so the same file serves dist/ and an installed tree.
$(DIST)/lib/pkgconfig/onload.pc: preload/shim/onload.pc
	install -D -m 0644 $< $@

# Programs linking libonload_ext.so, built as a user would: flags from pkg-config, the library found beside them.
EXT_CFLAGS = $$(PKG_CONFIG_PATH=$(DIST)/lib/pkgconfig pkg-config --cflags onload)
EXT_LIBS   = $$(PKG_CONFIG_PATH=$(DIST)/lib/pkgconfig pkg-config --libs onload) -Wl,-rpath,'$$ORIGIN/../lib' -lpthread
$(DIST)/bin/onload-ext-echo: apps/ext-echo/onload_ext_echo.c $(DIST)/lib/libonload_ext.so $(DIST)/include/onload.h \
		$(DIST)/lib/pkgconfig/onload.pc
	$(CC) -std=c11 $(C_WARN) -D_GNU_SOURCE -O2 $(EXT_CFLAGS) -o $@ $< $(EXT_LIBS)
$(DIST)/tests/zc_probe $(DIST)/tests/ext_calls: $(DIST)/tests/%: preload/tests/%.c preload/tests/check.h $(DIST)/lib/libonload_ext.so $(DIST)/include/onload.h \
		$(DIST)/lib/pkgconfig/onload.pc
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(C_WARN) -O2 $(EXT_CFLAGS) -o $@ $< $(EXT_LIBS)

# The C test helpers: preload/tests/NAME.c → dist/tests/NAME. io_calls and udp_calls are fortified on purpose, so
# that read, recv, recvfrom, poll and ppoll reach the shim as glibc's __*_chk variants.
$(DIST)/tests/io_calls $(DIST)/tests/udp_calls: TEST_CFLAGS := -D_FORTIFY_SOURCE=2
$(DIST)/tests/%: preload/tests/%.c preload/tests/check.h preload/tests/inet6.h
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(C_WARN) -O2 $(TEST_CFLAGS) -o $@ $< -lpthread

$(DIST)/tests/tcp_crr: perf/tcp_crr.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(C_WARN) -O2 -o $@ $<

# Framework-dependent on purpose: the preload tests run it with `dotnet`, so the JIT and CoreCLR's own threads and
# signal handlers meet the shim (a NativeAOT program would not show them).
$(DIST)/tests/dotnet-sockets/onload-dotnet-sockets.dll: $(DOTNET_SOCKETS_INPUTS) | restore
	rm -rf $(@D)
	$(DOTNET) publish tests/Onload.DotnetSockets/Onload.DotnetSockets.csproj $(DOTNET_FLAGS) -r $(RID) --self-contained false \
	  --no-restore -o $(@D) -v minimal

$(DIST)/bin/onload-run: apps/onload-run/onload-run
	install -D -m 0755 $< $@

$(DIST)/lib/onload/profiles/%.opf: apps/onload-run/profiles/%.opf
	install -D -m 0644 $< $@

$(DIST)/share/man/man1/%.1: apps/onload-run/%.1
	install -D -m 0644 $< $@

# ---------------------------------------------------------------------------------------------
test: all check-header
	CONFIG=$(CONFIG) DIST=$(DIST) tests/run-tests.sh

# The header must compile alone, as C11 and as C++17, without a warning.
check-header: preload/include/onload_stack.h preload/include/onload.h
	@for h in onload_stack.h onload.h; do \
	  echo "#include \"$$h\"" | $(CC) -std=c11 $(C_WARN) -Ipreload/include -fsyntax-only -x c - && \
	  echo "#include \"$$h\"" | $(CXX) -std=c++17 $(C_WARN) -Ipreload/include -fsyntax-only -x c++ - && \
	  echo "check-header: $$h is clean C11 and C++17"; \
	done

demo: all
	apps/demo.sh

FUZZ_ARGS ?=
fuzz: deps restore
	tests/fuzz/run.sh $(FUZZ_ARGS)

soak: deps
	perf/soak.sh $(SOAK_SECONDS)

HOSTILE_SECONDS ?= 60
hostile-report: all
	tests/hostile/report.sh $(HOSTILE_SECONDS)

# BenchmarkDotNet builds and runs each benchmark in a process of its own from perf/'s sources,
# so it runs through `dotnet run` rather than from dist/. (`dotnet run` would pass --nologo on to
# the program: hence no $(DOTNET_FLAGS) here.) The latency harness runs dist/bin/onload-pingpong
# against sockperf in namespaces it creates (root); LATENCY_ARGS passes options to it
# (perf/latency.sh --help). perf/tcp.sh runs the TCP rows likewise; TCP_ARGS passes options to it, and so
# do DRIVERLINK_ARGS to perf/driverlink.sh, SOCKPERF_ARGS to perf/sockperf.sh, RATES_ARGS to perf/rates.sh and
# WEB_ARGS to perf/web.sh.
LATENCY_ARGS ?=
TCP_ARGS ?=
DRIVERLINK_ARGS ?=
SOCKPERF_ARGS ?=
RATES_ARGS ?=
WEB_ARGS ?=
# What perf/sockperf.sh and perf/rates.sh run: the stack's tools from this build.
SOCKPERF_ENV = PINGPONG=$(DIST)/bin/onload-pingpong ONLOAD_RUN=$(DIST)/bin/onload-run \
  DRIVERD=$(DIST)/bin/onload-driverd STACKDUMP=$(DIST)/bin/onload-stackdump
# What perf/web.sh runs.
WEB_ENV = WEB_SAMPLE=$(DIST)/bin/onload-web-sample DRIVERD=$(DIST)/bin/onload-driverd

bench: all
	$(DOTNET) run -c $(CONFIG) --no-restore --project perf/Onload.Perf.csproj -- $(BENCH_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong perf/latency.sh $(LATENCY_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong perf/tcp.sh $(TCP_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong DRIVERD=$(DIST)/bin/onload-driverd perf/driverlink.sh $(DRIVERLINK_ARGS)
	$(SOCKPERF_ENV) perf/sockperf.sh $(SOCKPERF_ARGS)
	$(SOCKPERF_ENV) perf/rates.sh $(RATES_ARGS)
	$(WEB_ENV) perf/web.sh $(WEB_ARGS)

bench-quick: all
	$(DOTNET) run -c $(CONFIG) --no-restore --project perf/Onload.Perf.csproj -- --quick $(BENCH_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong perf/latency.sh --quick $(LATENCY_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong perf/tcp.sh --quick $(TCP_ARGS)
	PINGPONG=$(DIST)/bin/onload-pingpong DRIVERD=$(DIST)/bin/onload-driverd perf/driverlink.sh --quick $(DRIVERLINK_ARGS)
	$(SOCKPERF_ENV) perf/sockperf.sh --quick $(SOCKPERF_ARGS)
	$(SOCKPERF_ENV) perf/rates.sh --quick $(RATES_ARGS)
	$(WEB_ENV) perf/web.sh --quick $(WEB_ARGS)

bench-latency: all
	PINGPONG=$(DIST)/bin/onload-pingpong perf/latency.sh $(LATENCY_ARGS)

bench-tcp: all
	PINGPONG=$(DIST)/bin/onload-pingpong perf/tcp.sh $(TCP_ARGS)

bench-driverlink: all
	PINGPONG=$(DIST)/bin/onload-pingpong DRIVERD=$(DIST)/bin/onload-driverd perf/driverlink.sh $(DRIVERLINK_ARGS)

bench-sockperf: all
	$(SOCKPERF_ENV) perf/sockperf.sh $(SOCKPERF_ARGS)

bench-rates: all
	$(SOCKPERF_ENV) perf/rates.sh $(RATES_ARGS)

bench-web: all
	$(WEB_ENV) perf/web.sh $(WEB_ARGS)

# The sweep is in virtual time and needs only the IL build. Exits non-zero when a transfer was damaged,
# stalled or failed other than with ETIMEDOUT.
SWEEP_ARGS ?=

sweep: build
	$(DOTNET) tests/Onload.Sweep/bin/$(CONFIG)/net10.0/onload-sweep.dll $(SWEEP_ARGS)

# ---------------------------------------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(DIST)/bin/* $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 $(DIST)/lib/*.so $(DESTDIR)$(PREFIX)/lib/
	install -D -m 0644 $(DIST)/lib/systemd/system/onload-driverd.service $(DESTDIR)$(PREFIX)/lib/systemd/system/onload-driverd.service
	install -m 0644 $(DIST)/include/* $(DESTDIR)$(PREFIX)/include/
	install -D -m 0644 $(DIST)/lib/pkgconfig/onload.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/onload.pc
	install -d $(DESTDIR)$(PREFIX)/lib/onload/profiles $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 $(DIST)/lib/onload/profiles/*.opf $(DESTDIR)$(PREFIX)/lib/onload/profiles/
	install -m 0644 $(DIST)/share/man/man1/* $(DESTDIR)$(PREFIX)/share/man/man1/

clean:
	rm -rf $(DIST) obj
	find stack vnic preload apps perf tests driverlink-client \
	  \( -name bin -o -name obj \) -type d -prune -exec rm -rf {} +
