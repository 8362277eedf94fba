# bgjob: build, test, demo, install.
#
#   make            library (.so with SONAME libbgjob.so.0, .a) and include/bgjob.h
#   make demo       build everything and run the demo driver
#   make test       every test: Rust, the C harness (prove, with a short stress run),
#                   the examples, the Python binding (pytest, in a venv made under target/)
#   make bench      bgjob against GLib's GTask and raw pthreads (benches/, slow)
#   make check-asan the C harness and stress built with ASan+UBSan; zero reports
#   make check-valgrind  the C harness and stress under memcheck; zero errors/leaks
#   make check-static    programs linked with libbgjob.a (its load-time constructors kept)
#   make stress     the concurrent stress test and the fuzzer, long (STRESS_OPS, STRESS_SEED;
#                   FUZZ_OPS, FUZZ_SEED, FUZZ_ONLY, FUZZ_THREADS)
#   make fuzz       the adversarial scenario fuzzer alone, long (same FUZZ_* variables)
#   make loom       the loom models of core's own synchronisation
#   make install    PREFIX, LIBDIR, INCLUDEDIR, DESTDIR in their GNU meanings

CARGO      ?= cargo
CC         ?= cc
PROVE      ?= prove
PREFIX     ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
LIBDIR     ?= $(EXEC_PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR    ?=

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI     := 0
RELEASE := target/release
SO      := $(RELEASE)/libbgjob.so
SONAME  := libbgjob.so.$(ABI)
STATIC  := $(RELEASE)/libbgjob.a
OUT     := target/c

CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Wpedantic -Werror
CPPFLAGS += -Iinclude -D_GNU_SOURCE
LDLIBS  := -L$(RELEASE) -lbgjob -lpthread -Wl,-rpath,$(abspath $(RELEASE))
# What a static link of the Rust library needs (rustc --print native-static-libs).
STATIC_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc

TEST_SRCS := $(sort $(wildcard ffi-tests/test_*.c))
TESTS     := $(patsubst ffi-tests/%.c,$(OUT)/tests/%,$(TEST_SRCS))
TEST_LIB  := ffi-tests/tap.c ffi-tests/util.c
TEST_HDRS := $(wildcard ffi-tests/*.h)
EXAMPLES  := $(patsubst examples/%.c,$(OUT)/examples/%,$(wildcard examples/*.c))
BENCHES   := $(patsubst benches/%.c,$(OUT)/bench/%,$(filter-out benches/bench.c,$(wildcard benches/*.c)))

# The virjob.h tests run twice: built with libvirt's headers (Debian's
# libvirt-dev, installed by `make deps` when missing) and without them
# (VIRJOB_NO_LIBVIRT: virjob.h's own compatible declarations).
VIRJOB_TEST_SRCS := $(sort $(wildcard ffi-tests/test_virjob*.c))
VIRJOB_TESTS     := $(patsubst ffi-tests/%.c,$(OUT)/tests/%,$(VIRJOB_TEST_SRCS))
VIRJOB_TESTS_OWN := $(patsubst ffi-tests/%.c,$(OUT)/tests-own-types/%,$(VIRJOB_TEST_SRCS))
TESTS            += $(VIRJOB_TESTS_OWN)
LIBVIRT_CFLAGS = $$(pkg-config --cflags libvirt)
LIBVIRT_LIBS   = $$(pkg-config --libs libvirt)

# The Python binding is tested as users get it: `pip install ./python` into a
# venv of its own (with pytest); the wheel pip builds holds a stripped copy of
# the library (python/setup.py runs cargo), but the suite loads this tree's
# build via BGJOB_LIBRARY, and checks the bundled copy on its own.
PYTHON    ?= python3
VENV      := target/venv
# Every Python the package claims (pyproject's requires-python) that this
# machine has -- on PATH as pythonX.Y, or under pyenv -- runs the suite, each
# in a venv of its own (target/venv-X.Y); the others are named as skipped.
PY_CLAIMED := 3.9 3.10 3.11 3.12 3.13
PY_SRCS   := $(wildcard python/bgjob/*.py) python/pyproject.toml python/setup.py python/README.md

# $(call need,TOOL,DEBIAN-PACKAGE): stop with the exact install line when missing.
need = @command -v $(1) >/dev/null 2>&1 || { echo "bgjob: '$(1)' is missing; install it with: apt-get install -y $(2)" >&2; exit 1; }

RUST_SRCS := $(shell find src -name '*.rs') build.rs cbindgen.toml cbindgen-virjob.toml Cargo.toml

.PHONY: all lib deps deps-glib deps-libvirt deps-jansson deps-qemu demo demo-python test test-rust test-c test-examples test-python test-python-all python-typecheck python-venv bench bench-smoke check-header check-virjob-header check-py-enums py-enums check-outside-refs check-install fmt-check clippy install uninstall clean \
	check-asan check-valgrind check-static stress fuzz loom

all: lib

lib: $(RELEASE)/$(SONAME)

# One cargo run builds the .so, the .a and (build.rs) include/bgjob.h and
# include/virjob.h. The SONAME link lets programs linked here find the library
# through their rpath.
$(SO) $(STATIC) include/bgjob.h include/virjob.h &: $(RUST_SRCS)
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "bgjob: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
	$(CARGO) build --release --lib
	@touch $(SO) $(STATIC) include/bgjob.h include/virjob.h

$(RELEASE)/$(SONAME): $(SO)
	ln -sf libbgjob.so $@

$(OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h $(RELEASE)/$(SONAME)
	$(call need,$(CC),gcc)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS)

$(VIRJOB_TESTS): $(OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h include/virjob.h $(RELEASE)/$(SONAME) | deps-libvirt
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -DVIRJOB_TEST_EXPECT_LIBVIRT $(LIBVIRT_CFLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS) $(LIBVIRT_LIBS)

$(VIRJOB_TESTS_OWN): $(OUT)/tests-own-types/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h include/virjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -DVIRJOB_NO_LIBVIRT -o $@ $< $(TEST_LIB) $(LDLIBS)

$(OUT)/examples/%: examples/%.c include/bgjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDLIBS)

# The virJob example driver, with libvirt's headers and (-own-types) without.
$(OUT)/examples/virjob_test_driver: examples/virjob_test_driver.c include/bgjob.h include/virjob.h $(RELEASE)/$(SONAME) | deps-libvirt
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -DVIRJOB_EXPECT_LIBVIRT $(LIBVIRT_CFLAGS) -o $@ $< $(LDLIBS)

$(OUT)/examples/virjob_test_driver-own-types: examples/virjob_test_driver.c include/bgjob.h include/virjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -DVIRJOB_NO_LIBVIRT -o $@ $< $(LDLIBS)

# Development files the tests and examples build against: installed here when
# missing (as root, with apt-get), or the exact command to run is printed.
# $(call dev_pkg,PKG-CONFIG-NAME,DEBIAN-PACKAGE,WHAT-FOR)
dev_pkg = @pkg-config --exists $(1) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "bgjob: installing $(2) ($(3))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "bgjob: $(2) is missing ($(3)); run: sudo apt-get install -y $(2)" >&2; exit 1; \
	  fi; }

deps: deps-glib deps-libvirt deps-jansson deps-qemu

deps-glib:
	$(call need,pkg-config,pkg-config)
	$(call dev_pkg,glib-2.0,libglib2.0-dev,GLib for examples/glib_loop.c)

deps-libvirt:
	$(call need,pkg-config,pkg-config)
	$(call dev_pkg,libvirt,libvirt-dev,libvirt's headers for the virjob.h tests and example)

deps-jansson:
	$(call need,pkg-config,pkg-config)
	$(call dev_pkg,jansson,libjansson-dev,the JSON parser of the QEMU block-job example's QMP client)

# qemu-storage-daemon, qemu-img and qemu-io (Debian: qemu-utils) for the QEMU
# block-job example. Never fails: without them the example says SKIPPED and why.
deps-qemu:
	@command -v qemu-storage-daemon >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "bgjob: installing qemu-utils (qemu-storage-daemon for the QEMU block-job example)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-utils >/dev/null \
	      || echo "bgjob: could not install qemu-utils; the QEMU block-job example will be skipped" >&2; \
	  else \
	    echo "bgjob: qemu-storage-daemon is missing; run: sudo apt-get install -y qemu-utils" >&2; \
	  fi; }

# The QEMU block-job example (examples/qemu_blockjobs/): a QMP client (qmp.c),
# qemu-storage-daemon's lifecycle and the image helpers (qsd.c), and a
# self-test that runs the example's block-job scenarios over plain QMP.
QEMU_BJ      := examples/qemu_blockjobs
QEMU_BJ_SRCS := $(QEMU_BJ)/qmp.c $(QEMU_BJ)/qsd.c
QEMU_BJ_HDRS := $(QEMU_BJ)/qmp.h $(QEMU_BJ)/qsd.h

$(OUT)/examples/qmp_selftest: $(QEMU_BJ)/qmp_selftest.c $(QEMU_BJ_SRCS) $(QEMU_BJ_HDRS) | deps-jansson
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $$(pkg-config --cflags jansson) -o $@ $< $(QEMU_BJ_SRCS) $$(pkg-config --libs jansson)

# The driver: each QEMU block job a bgjob external job (driver.c), run through six scenarios.
$(OUT)/examples/qemu_blockjobs: $(QEMU_BJ)/qemu_blockjobs.c $(QEMU_BJ)/driver.c $(QEMU_BJ)/driver.h $(QEMU_BJ_SRCS) $(QEMU_BJ_HDRS) include/bgjob.h $(RELEASE)/$(SONAME) | deps-jansson
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $$(pkg-config --cflags jansson) -o $@ $< $(QEMU_BJ)/driver.c $(QEMU_BJ_SRCS) $$(pkg-config --libs jansson) $(LDLIBS)

$(OUT)/examples/glib_loop: examples/glib_loop.c include/bgjob.h $(RELEASE)/$(SONAME) | deps-glib
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $$(pkg-config --cflags glib-2.0) -o $@ $< $(LDLIBS) $$(pkg-config --libs glib-2.0)

# The benchmarks link GLib (GIO's GTask) as their peer.
$(OUT)/bench/%: benches/%.c benches/bench.c benches/bench.h include/bgjob.h $(RELEASE)/$(SONAME) | deps-glib
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $$(pkg-config --cflags gio-2.0) -o $@ $< benches/bench.c $(LDLIBS) $$(pkg-config --libs gio-2.0)

# bgjob against its peers, in one run: medians of BENCH_RUNS runs (default 3)
# free and pinned to one vCPU (BENCH_CPU); a table on stdout and every figure
# and ratio in target/bench/summary.json. Takes a few minutes.
bench: lib $(BENCHES)
	$(call need,python3,python3)
	$(call need,taskset,util-linux)
	python3 benches/run.py $(BENCHES)

# A few iterations of each benchmark: they build and work (part of make test).
bench-smoke: lib $(BENCHES)
	$(call need,python3,python3)
	$(call need,taskset,util-linux)
	python3 benches/run.py --quick $(BENCHES) >/dev/null
	@echo "bench-smoke: every benchmark ran (target/bench/smoke.json)"

demo: lib $(OUT)/examples/demo
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/bgjob-demo.XXXXXX") && \
	  trap 'rm -rf "$$dir"' EXIT INT TERM && \
	  $(OUT)/examples/demo "$$dir"

demo-python: lib $(VENV)/.bgjob-installed
	BGJOB_LIBRARY=$(abspath $(SO)) $(VENV)/bin/python -m bgjob.demo

test: test-rust test-c test-examples test-python-all python-typecheck bench-smoke

test-rust:
	$(CARGO) test --release

# The examples check their own behaviour and exit non-zero on failure.
# qemu_img_convert and qmp_selftest exit 77 (and say why) where qemu-img /
# qemu-storage-daemon are missing (deps-qemu installs them when it can): skipped.
# The virJob driver runs built with libvirt's headers and without them.
test-examples: $(OUT)/examples/poll_loop $(OUT)/examples/glib_loop $(OUT)/examples/quickstart \
               $(OUT)/examples/qemu_img_convert $(OUT)/examples/qmp_selftest $(OUT)/examples/qemu_blockjobs $(OUT)/examples/events_loop \
               $(OUT)/examples/external_poll \
               $(OUT)/examples/virjob_test_driver $(OUT)/examples/virjob_test_driver-own-types | deps-qemu
	$(OUT)/examples/poll_loop
	$(OUT)/examples/external_poll
	$(OUT)/examples/glib_loop
	$(OUT)/examples/events_loop
	$(OUT)/examples/quickstart >/dev/null && echo "quickstart: ok"
	@rc=0; $(OUT)/examples/qemu_img_convert || rc=$$?; \
	  if [ $$rc = 77 ]; then echo "qemu_img_convert: SKIPPED (see the reason above)"; \
	  elif [ $$rc != 0 ]; then exit $$rc; fi
	@rc=0; $(OUT)/examples/qmp_selftest || rc=$$?; \
	  if [ $$rc = 77 ]; then echo "qmp_selftest: SKIPPED (see the reason above)"; \
	  elif [ $$rc != 0 ]; then exit $$rc; fi
	@rc=0; $(OUT)/examples/qemu_blockjobs || rc=$$?; \
	  if [ $$rc = 77 ]; then echo "qemu_blockjobs: SKIPPED (see the reason above)"; \
	  elif [ $$rc != 0 ]; then exit $$rc; fi
	@for p in virjob_test_driver virjob_test_driver-own-types; do \
	  dir=$$(mktemp -d "$${TMPDIR:-/tmp}/bgjob-virjob.XXXXXX") || exit 1; \
	  $(OUT)/examples/$$p "$$dir" >"$$dir.log" 2>&1; rc=$$?; rm -rf "$$dir"; \
	  if [ $$rc -ne 0 ]; then cat "$$dir.log"; rm -f "$$dir.log"; exit $$rc; fi; \
	  tail -n 1 "$$dir.log"; rm -f "$$dir.log"; \
	done

# A venv with pytest. python3's venv module (Debian: python3-venv) is installed
# when missing and we are root with apt-get; otherwise the command is printed.
$(VENV)/.ready:
	$(call need,$(PYTHON),python3 python3-venv)
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "bgjob: installing python3-venv (for the Python binding's tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else \
	    echo "bgjob: Python's venv module is missing; run: sudo apt-get install -y python3-venv" >&2; exit 1; \
	  fi; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check pytest tqdm
	@touch $@

$(VENV)/.bgjob-installed: $(VENV)/.ready $(PY_SRCS) $(SO)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python
	@touch $@

python-venv: $(VENV)/.bgjob-installed

# pytest runs from the venv's bin (not `python -m`), so the installed package,
# not the source tree, is what the tests import.
test-python: lib $(VENV)/.bgjob-installed
	BGJOB_LIBRARY=$(abspath $(SO)) BGJOB_HEADER=$(abspath include/bgjob.h) \
	  $(VENV)/bin/pytest -q -p no:cacheprovider python/tests

# mypy --strict over the package (the demo included), the QEMU example and tests/typing_check.py,
# which pins a job's result type through `result` and `await`. In a venv of
# its own.
MYPY_VENV := target/venv-mypy
$(MYPY_VENV)/.ready:
	rm -rf $(MYPY_VENV)
	$(PYTHON) -m venv $(MYPY_VENV)
	$(MYPY_VENV)/bin/python -m pip install -q --disable-pip-version-check mypy
	@touch $@

python-typecheck: $(MYPY_VENV)/.ready
	cd python && ../$(MYPY_VENV)/bin/mypy --strict --cache-dir=../target/mypy-cache \
	  --python-version 3.11 bgjob tests/typing_check.py examples/qemu_blockjobs.py
	@# 3.10's branches too (3.9 is below what mypy still checks).
	cd python && ../$(MYPY_VENV)/bin/mypy --strict --cache-dir=../target/mypy-cache \
	  --python-version 3.10 bgjob

# The suite under each claimed Python this machine has (see PY_CLAIMED).
test-python-all: lib
	@set -e; ran=; \
	for v in $(PY_CLAIMED); do \
	  py=; for c in python$$v $$HOME/.pyenv/versions/$$v.*/bin/python$$v; do \
	    if "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, sys.argv[1].split("."))))' $$v \
	      >/dev/null 2>&1; then py=$$c; break; fi; \
	  done; \
	  if [ -z "$$py" ]; then echo "python $$v: not on this machine, skipped"; continue; fi; \
	  echo "python $$v: $$py"; \
	  $(MAKE) --no-print-directory test-python PYTHON=$$py VENV=target/venv-$$v; ran="$$ran $$v"; \
	done; \
	[ -n "$$ran" ] || { echo "no claimed Python ($(PY_CLAIMED)) on this machine" >&2; exit 1; }; \
	echo "python suite passed under:$$ran"

test-c: $(TESTS) $(VIRJOB_TESTS) check-virjob-header
	$(call need,$(PROVE),perl)
	$(PROVE) --exec '' $(TESTS) $(VIRJOB_TESTS)

# Programs linked with libbgjob.a instead of the .so (-rdynamic: static_link.c
# names its .init_array entries with dladdr): static_link checks that bgjob's
# load-time constructors (fork handlers, vDSO lookup) were linked in and run,
# and test_worker_record runs as it does against the .so.
STATIC_OUT   := $(OUT)/static
STATIC_PROGS := $(STATIC_OUT)/static_link $(STATIC_OUT)/test_worker_record
$(STATIC_OUT)/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h include/virjob.h $(STATIC)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -rdynamic -o $@ $< $(TEST_LIB) $(STATIC) $(STATIC_LIBS)

check-static: $(STATIC_PROGS)
	$(call need,$(PROVE),perl)
	$(PROVE) --exec '' $(STATIC_PROGS)

# The long stress run: STRESS_OPS operations (default a million) over
# STRESS_THREADS threads; STRESS_SEED replays a run's per-thread sequences.
STRESS_OPS     ?= 1000000
STRESS_THREADS ?= 8
stress: $(OUT)/tests/test_stress $(OUT)/tests/test_fuzz
	STRESS_OPS=$(STRESS_OPS) STRESS_THREADS=$(STRESS_THREADS) STRESS_SEED=$(STRESS_SEED) \
	  TAP_TIMEOUT=0 $(OUT)/tests/test_stress
	$(MAKE) --no-print-directory fuzz

# The adversarial scenario fuzzer (ffi-tests/test_fuzz.c), long: FUZZ_OPS API
# calls by the actor threads (default a million; workers and callbacks make
# more), FUZZ_THREADS actors, FUZZ_SEED to replay a run's choices, FUZZ_ONLY
# (or FUZZ_SKIP) a comma-separated list of scenario classes: hooks, txn,
# txnwait, finalize, detach, errpolicy, deadline, child, rit, wrongtype,
# reenter, cap, log, external, events, refs, subjobs, stats, list, hook0,
# evtxn. A stall of FUZZ_STALL_S seconds (default 20) fails the run with every
# thread's stack. `make test` runs it briefly (FUZZ_OPS 20000, ~2 s).
FUZZ_OPS     ?= 1000000
FUZZ_THREADS ?= 4
fuzz: $(OUT)/tests/test_fuzz
	FUZZ_OPS=$(FUZZ_OPS) FUZZ_THREADS=$(FUZZ_THREADS) FUZZ_SEED=$(FUZZ_SEED) \
	  FUZZ_ONLY=$(FUZZ_ONLY) FUZZ_SKIP=$(FUZZ_SKIP) TAP_TIMEOUT=0 $(OUT)/tests/test_fuzz

# ---- loom ------------------------------------------------------------------------
# Model checks of the synchronisation core builds itself (src/core/atomic.rs
# and sync.rs swap std's atomics, mutex and condvar for loom's under --cfg
# loom): every interleaving and memory-model reordering, within a preemption
# bound (LOOM_MAX_PREEMPTIONS, default 3), of cancel vs a worker's end, hook
# removal vs cancel, a parked worker vs resume and cancel, a pool thread's
# hand-off, the progress seqlock and its solo/shared switch, the statistics
# seqlock, getinfo's status line, and the lock-free handle lookup (hazard
# records vs destroy). Each model prints how many executions it explored;
# its canaries (a seqlock or lookup without its fence, a switch without its
# barrier, a lost wake-up) must fail. Own target dir, so it never
# invalidates the normal build.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --lib loom_tests \
	  -- --nocapture --test-threads=1

# ---- sanitizers ---------------------------------------------------------------
# The whole C harness (and the stress test) built with ASan and UBSan against the
# library. The Rust library itself is not instrumented (that needs a nightly
# std), but the sanitizer runtime is the executable's first DT_NEEDED, so it
# interposes malloc/free for the whole process: a double free, a free of a
# pointer bgjob never gave out, a use of freed userdata in a C callback, and a
# leak of anything bgjob allocated all show. No LD_PRELOAD is needed for these
# programs; a program whose main executable is not instrumented (Python) would
# need LD_PRELOAD=$$(gcc -print-file-name=libasan.so).
# Every report is written to $(ASAN_OUT)/logs; the target fails unless the run
# passed AND that directory is empty ("zero reports", forked children included).
ASAN_OUT   := target/asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer -O1 -g
ASAN_TESTS := $(patsubst ffi-tests/%.c,$(ASAN_OUT)/tests/%,$(TEST_SRCS))
ASAN_ENV    = ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$(abspath $(ASAN_OUT))/logs/asan \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(abspath $(ASAN_OUT))/logs/ubsan \
              LSAN_OPTIONS=log_path=$(abspath $(ASAN_OUT))/logs/lsan

# ASAN_SKIP_CASES (TAP_SKIP, as for valgrind below): the one case skipped forks
# children while other threads load and unload a library, and the child must
# be able to allocate. glibc's malloc is locked across fork; gcc 12's ASan
# allocator is not: a child forked while a loader thread held one of its
# size-class locks hangs in its first malloc (gdb: the child in
# SizeClassAllocator64::GetFromAllocator, under bgjob's first Arc::new). It
# runs natively and under valgrind.
# The two fork cases of the outside attacks (test_capatk forks from
# completions while slots are let go, test_attack5 from a worker while
# another spawns children) risk the same allocator lock in the child (one of
# 12 children failed in a CI run, with no sanitizer report); both run natively and under
# valgrind.
ASAN_SKIP_CASES := test_first_create_in_a_child_forked_during_dlopen,test_fork_in_completions_while_slots_are_let_go,test_fork_in_a_worker_while_another_spawns_children

$(ASAN_OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(ASAN_FLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS)

# The virjob.h tests, built here in their own-types variant (no libvirt).
ASAN_VIRJOB := $(patsubst ffi-tests/%.c,$(ASAN_OUT)/tests/%,$(VIRJOB_TEST_SRCS))
$(ASAN_VIRJOB): $(ASAN_OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h include/virjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(ASAN_FLAGS) -DVIRJOB_NO_LIBVIRT -o $@ $< $(TEST_LIB) $(LDLIBS)

$(ASAN_OUT)/canary: ffi-tests/sanitizer_canary.c
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(ASAN_FLAGS) -o $@ $<

check-asan: $(ASAN_TESTS) $(ASAN_OUT)/canary
	$(call need,$(PROVE),perl)
	@set -e; for t in $(ASAN_TESTS); do \
	  ldd $$t | grep -q 'libasan\.so' || { echo "$$t: ASan runtime not linked" >&2; exit 1; }; \
	  ldd $$t | grep -q 'libubsan\.so' || { echo "$$t: UBSan runtime not linked" >&2; exit 1; }; \
	done; echo "sanitizers: libasan and libubsan linked into all $(words $(ASAN_TESTS)) programs"
	@# The canary proves the runtime really reports: a heap overflow, a leak and
	@# a signed overflow must each be caught (a silent runtime would pass everything).
	@rm -rf $(ASAN_OUT)/logs-canary && mkdir -p $(ASAN_OUT)/logs-canary && \
	for kind in overflow leak ubsan; do \
	  if ASAN_OPTIONS=detect_leaks=1 $(ASAN_OUT)/canary $$kind 2>$(ASAN_OUT)/logs-canary/$$kind; then \
	    echo "sanitizer canary '$$kind' was not caught" >&2; exit 1; fi; \
	  grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' $(ASAN_OUT)/logs-canary/$$kind || \
	    { echo "sanitizer canary '$$kind' failed without a sanitizer report" >&2; exit 1; }; \
	done; echo "sanitizers: canaries for overflow, leak and UB all reported"
	@rm -rf $(ASAN_OUT)/logs && mkdir -p $(ASAN_OUT)/logs && chmod 1777 $(ASAN_OUT)/logs
	$(ASAN_ENV) STRESS_OPS=$${STRESS_OPS_ASAN:-50000} FUZZ_OPS=$${FUZZ_OPS_ASAN:-20000} \
	  TAP_SKIP=$(ASAN_SKIP_CASES) $(PROVE) --exec '' $(ASAN_TESTS)
	@n=$$(find $(ASAN_OUT)/logs -type f | wc -l); \
	if [ "$$n" != 0 ]; then echo "sanitizers: $$n report file(s):" >&2; \
	  head -n 40 $(ASAN_OUT)/logs/* >&2; exit 1; fi; \
	echo "sanitizers: 0 reports (ASan, UBSan, LSan) over $(words $(ASAN_TESTS)) programs"

# ---- valgrind -----------------------------------------------------------------
# memcheck over the same harness (the normal -O2 build). Any memory error
# fails the program (--error-exitcode); ffi-tests/valgrind_summary.awk then
# reads every log and fails on any error or any byte definitely or indirectly
# lost. "Possibly lost" is reported, not failed: idle pool threads are still
# alive at exit (waiting out their keep-alive), and glibc's TLS block of a live
# detached thread is reachable only through an interior pointer.
# Forked children (test_thread_start, test_hostile_fork) are silent: in a child
# the parent's other threads are gone, so what only their stacks pointed to is
# "lost" there by construction. Their memory errors still fail them (exit 99),
# which is why leaks are counted from the logs rather than by the exit code.
VG_OUT  := target/valgrind
VALGRIND_FLAGS := --tool=memcheck --error-exitcode=99 --leak-check=full \
                  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=none \
                  --track-origins=yes --max-threads=1200 --child-silent-after-fork=yes \
                  --fair-sched=yes

# valgrind 3.19 knows neither clone3 nor pidfd_open nor pidfd_send_signal (it
# fails them with ENOSYS), so test_child spawns through clone(CLONE_PIDFD),
# signals with bgjob's kill fallback and watches children by pid here. No case
# is skipped: bgjob's own exec-error pipe reports a missing program under
# valgrind too. VG_SKIP_CASES (TAP_SKIP: case names, comma-separated): a
# case that is slow under valgrind must wait on events, not clocks; the one
# skipped is a race test whose point is two threads running at once (a reader
# that must see thousands of a writer's batches), which valgrind's
# one-thread-at-a-time scheduler cannot give -- it runs natively and under
# ASan. A failing case's last diagnostics reach the log (stderr).
VG_SKIP_CASES := test_reader_never_sees_a_torn_batch
VG_TESTS := $(TESTS)

check-valgrind: $(TESTS)
	$(call need,valgrind,valgrind)
	$(call need,$(PROVE),perl)
	@rm -rf $(VG_OUT) && mkdir -p $(VG_OUT)
	STRESS_OPS=$${STRESS_OPS_VALGRIND:-5000} FUZZ_OPS=$${FUZZ_OPS_VALGRIND:-2000} \
	  FUZZ_STALL_S=$${FUZZ_STALL_S_VALGRIND:-300} FUZZ_SETTLE_MS=$${FUZZ_SETTLE_MS_VALGRIND:-120000} \
	  TAP_TIMEOUT=900 TAP_SKIP=$(VG_SKIP_CASES) $(PROVE) --exec \
	  'valgrind $(VALGRIND_FLAGS) --log-file=$(abspath $(VG_OUT))/%p.log' $(VG_TESTS)
	@awk -f ffi-tests/valgrind_summary.awk $(VG_OUT)/*.log

# python/bgjob/_enums.py is generated from the enums in include/bgjob.h:
# `make py-enums` rewrites it; check-py-enums fails (with a diff) while the
# committed file and the header disagree.
py-enums: include/bgjob.h $(wildcard include/bgjob_*.h)
	$(call need,$(PYTHON),python3)
	$(PYTHON) scripts/gen_py_enums.py

check-py-enums: include/bgjob.h $(wildcard include/bgjob_*.h)
	$(call need,$(PYTHON),python3)
	$(PYTHON) scripts/gen_py_enums.py --check

# Nothing in the project refers to files or numbers outside it (a design
# note it does not ship, seed or issue numbers a reader cannot look up).
check-outside-refs:
	scripts/check_no_outside_refs.sh

# Fails when the committed headers differ from what the build generates, and
# when the Python enums differ from what the header gives.
check-header: lib check-virjob-header check-py-enums
	@for h in include/bgjob.h include/virjob.h; do \
	  git ls-files --error-unmatch $$h >/dev/null 2>&1 || \
	    { echo "$$h is not committed" >&2; exit 1; }; \
	done
	@git diff --exit-code --stat -- include/ || \
	  { echo "include/ differs from the generated header: commit the regenerated file" >&2; exit 1; }
	@for h in include/*.h; do \
	  printf '#include "%s"\nint main(void){return 0;}\n' "$$h" | \
	    $(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -x c -o /dev/null - || exit 1; \
	  printf '#include "%s"\nint main(){return 0;}\n' "$$h" | \
	    $(CXX) -Wall -Wextra -Werror -x c++ -o /dev/null - || exit 1; \
	done
	@echo "headers: committed copies match, compile alone as C11 and C++"

# virjob.h with libvirt's headers before it, after it, not at all, and with
# VIRJOB_NO_LIBVIRT, each as C11 and C++ (default and C++11), warning-free;
# and every vir* symbol the library exports is declared in virjob.h.
VIRJOB_ORDERS := alone libvirt-first libvirt-after virterror-first own-types
check-virjob-header: include/virjob.h $(RELEASE)/$(SONAME) | deps-libvirt
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	for o in $(VIRJOB_ORDERS); do \
	  pre=; post=; def=; \
	  case $$o in \
	    libvirt-first) pre='#include <libvirt/libvirt.h>';; \
	    libvirt-after) post='#include <libvirt/libvirt.h>';; \
	    virterror-first) pre='#include <libvirt/virterror.h>';; \
	    own-types) def=-DVIRJOB_NO_LIBVIRT;; \
	  esac; \
	  printf '%s\n#include "virjob.h"\n%s\n%s\n' "$$pre" "$$post" \
	    'static void fr(void *p) { (void)p; }' > "$$d/t.h"; \
	  printf '%s\n' 'static void wk(virJobPtr job, void *data) { (void)data; virJobFinishSuccess(job); }' \
	    'static int use(void) {' \
	    '    virJobDriver drv = { 0, 0, 0 }; virJobInfo info; virFreeCallback f = fr;' \
	    '    virJobPtr j = virJobCreate((virConnectPtr)0, &drv, wk, f, 0, VIR_JOB_BOUNDED);' \
	    '    virErrorPtr e = virJobGetError(j); virDomainPtr dm = virJobGetDomain(j);' \
	    '    virNetworkPtr n = virJobGetNetwork(j); virConnectPtr c = virJobGetConnect(j);' \
	    '    bgjob_job *b = virJobGetBgjob(j);' \
	    '    return virJobGetInfo(j, &info) + (e ? e->code + (e->message != 0) : 0) + (dm != 0) + (n != 0) + (c != 0) + (b != 0);' \
	    '}' >> "$$d/t.h"; \
	  printf '#include "t.h"\nint main(void) { return use(); }\n' > "$$d/t.c"; \
	  printf '#include "t.h"\nint main() { return use(); }\n' > "$$d/t.cc"; \
	  $(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude $$def -c -o /dev/null "$$d/t.c"; \
	  $(CXX) -Wall -Wextra -Werror -Iinclude $$def -c -o /dev/null "$$d/t.cc"; \
	  $(CXX) -std=c++11 -Wall -Wextra -Wpedantic -Werror -Iinclude $$def -c -o /dev/null "$$d/t.cc"; \
	done; \
	nm -D --defined-only $(SO) | awk '$$3 ~ /^vir/ {print $$3}' | sort > "$$d/exported"; \
	sed -n 's/^[a-zA-Z].*[ *]\(vir[A-Za-z]*\)(.*/\1/p' include/virjob.h | sort > "$$d/declared"; \
	if ! cmp -s "$$d/exported" "$$d/declared"; then \
	  echo "vir* exports and virjob.h declarations differ (< exported, > declared):" >&2; \
	  diff "$$d/exported" "$$d/declared" >&2; exit 1; fi; \
	echo "virjob.h: C11, C++ and C++11 with libvirt's headers first, after, not at all, and VIRJOB_NO_LIBVIRT; $$(wc -l < "$$d/exported") vir* exports all declared"

# Installs into a scratch prefix (and a DESTDIR staging tree), then builds the
# quick start with pkg-config and runs it, as a packager or user would.
check-install: lib
	$(call need,pkg-config,pkg-config)
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(MAKE) --no-print-directory install PREFIX="$$d" >/dev/null; \
	PKG_CONFIG_PATH="$$d/lib/pkgconfig"; export PKG_CONFIG_PATH; \
	$(CC) $(WARN) -o "$$d/quickstart" examples/quickstart.c \
	  $$(pkg-config --cflags --libs bgjob) -Wl,-rpath,"$$d/lib"; \
	"$$d/quickstart" | tail -n 1; \
	readelf -d "$$d/lib/libbgjob.so.$(VERSION)" | grep SONAME; \
	ls -l "$$d/lib" | awk 'NR>1 {print "  " $$9, $$10, $$11}'; \
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR="$$d/stage" >/dev/null; \
	test -f "$$d/stage/usr/lib/pkgconfig/bgjob.pc" && test -L "$$d/stage/usr/lib/$(SONAME)" && \
	  test -f "$$d/stage/usr/include/bgjob.h" && test -f "$$d/stage/usr/include/virjob.h" && grep -q '^prefix=/usr$$' "$$d/stage/usr/lib/pkgconfig/bgjob.pc"; \
	$(MAKE) --no-print-directory uninstall PREFIX=/usr DESTDIR="$$d/stage" >/dev/null; \
	test -z "$$(find "$$d/stage" -type f -o -type l)"; \
	echo "install: pkg-config build ran; DESTDIR staging and uninstall clean"

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The .pc file is written at install time: it records this install's directories.
install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(SO) $(DESTDIR)$(LIBDIR)/libbgjob.so.$(VERSION)
	ln -sf libbgjob.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libbgjob.so
	install -m 0644 $(STATIC) $(DESTDIR)$(LIBDIR)/libbgjob.a
	install -m 0644 include/bgjob.h $(DESTDIR)$(INCLUDEDIR)/bgjob.h
	install -m 0644 include/virjob.h $(DESTDIR)$(INCLUDEDIR)/virjob.h
	printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: bgjob' \
	  'Description: Background jobs for C programs: progress, pause, cooperative cancel' \
	  'Version: $(VERSION)' \
	  'Libs: -L$${libdir} -lbgjob' \
	  'Libs.private: $(STATIC_LIBS)' \
	  'Cflags: -I$${includedir}' > $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libbgjob.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	  $(DESTDIR)$(LIBDIR)/libbgjob.so $(DESTDIR)$(LIBDIR)/libbgjob.a \
	  $(DESTDIR)$(INCLUDEDIR)/bgjob.h $(DESTDIR)$(INCLUDEDIR)/virjob.h \
	  $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc

clean:
	$(CARGO) clean
