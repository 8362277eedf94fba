# bgjob: build, test, demo, install.
#
#   make            library (.so with SONAME libbgjob.so.0, .a) and include/bgjob.h
#   make demo       build everything and run the demo driver
#   make test       every test: Rust, the C harness (prove), the examples,
#                   the Python binding (pytest, in a venv made under target/)
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

# The Python binding is tested as users get it: `pip install ./python` into a
# venv of its own (with pytest), loading this tree's library via BGJOB_LIBRARY.
PYTHON    ?= python3
VENV      := target/venv
PY_SRCS   := $(wildcard python/bgjob/*.py) python/pyproject.toml python/README.md

# $(call need,TOOL,DEBIAN-PACKAGE): stop with the exact install line when missing.
need = @command -v $(1) >/dev/null 2>&1 || { echo "bgjob: '$(1)' is missing; install it with: apt-get install -y $(2)" >&2; exit 1; }

RUST_SRCS := $(shell find src -name '*.rs') build.rs cbindgen.toml Cargo.toml

.PHONY: all lib deps demo demo-python test test-rust test-c test-examples test-python python-venv check-header check-install fmt-check clippy install uninstall clean

all: lib

lib: $(RELEASE)/$(SONAME)

# One cargo run builds the .so, the .a and (build.rs) include/bgjob.h. The
# SONAME link lets programs linked here find the library through their rpath.
$(SO) $(STATIC) include/bgjob.h &: $(RUST_SRCS)
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "bgjob: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
	$(CARGO) build --release --lib
	@touch $(SO) $(STATIC) include/bgjob.h

$(RELEASE)/$(SONAME): $(SO)
	ln -sf libbgjob.so $@

$(OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h $(RELEASE)/$(SONAME)
	$(call need,$(CC),gcc)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS)

$(OUT)/examples/%: examples/%.c include/bgjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDLIBS)

# GLib's development files, for examples/glib_loop.c: installed here when
# missing (as root, with apt-get), or the exact command to run is printed.
deps:
	@pkg-config --exists glib-2.0 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "bgjob: installing libglib2.0-dev (GLib, for examples/glib_loop.c)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libglib2.0-dev >/dev/null; \
	  else \
	    echo "bgjob: GLib's development files are missing; run: sudo apt-get install -y libglib2.0-dev" >&2; exit 1; \
	  fi; }

$(OUT)/examples/glib_loop: examples/glib_loop.c include/bgjob.h $(RELEASE)/$(SONAME) | deps
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $$(pkg-config --cflags glib-2.0) -o $@ $< $(LDLIBS) $$(pkg-config --libs glib-2.0)

demo: lib $(OUT)/examples/demo
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/bgjob-demo.XXXXXX") && \
	  trap 'rm -rf "$$dir"' EXIT INT TERM && \
	  $(OUT)/examples/demo "$$dir"

demo-python: lib $(VENV)/.bgjob-installed
	BGJOB_LIBRARY=$(abspath $(SO)) $(VENV)/bin/python -m bgjob.demo

test: test-rust test-c test-examples test-python

test-rust:
	$(CARGO) test --release

# The event-loop examples check their own behaviour and exit non-zero on failure.
test-examples: $(OUT)/examples/poll_loop $(OUT)/examples/glib_loop $(OUT)/examples/quickstart
	$(OUT)/examples/poll_loop
	$(OUT)/examples/glib_loop
	$(OUT)/examples/quickstart >/dev/null && echo "quickstart: ok"

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
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check pytest
	@touch $@

$(VENV)/.bgjob-installed: $(VENV)/.ready $(PY_SRCS)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./python
	@rm -rf python/build python/bgjob.egg-info
	@touch $@

python-venv: $(VENV)/.bgjob-installed

# pytest runs from the venv's bin (not `python -m`), so the installed package,
# not the source tree, is what the tests import.
test-python: lib $(VENV)/.bgjob-installed
	BGJOB_LIBRARY=$(abspath $(SO)) BGJOB_HEADER=$(abspath include/bgjob.h) \
	  $(VENV)/bin/pytest -q -p no:cacheprovider python/tests

test-c: $(TESTS)
	$(call need,$(PROVE),perl)
	$(PROVE) --exec '' $(TESTS)

# Fails when the committed headers differ from what the build generates.
check-header: lib
	@git ls-files --error-unmatch include/bgjob.h >/dev/null 2>&1 || \
	  { echo "include/bgjob.h is not committed" >&2; exit 1; }
	@git diff --exit-code --stat -- include/ || \
	  { echo "include/ differs from the generated header: commit the regenerated file" >&2; exit 1; }
	@for h in include/*.h; do \
	  printf '#include "%s"\nint main(void){return 0;}\n' "$$h" | \
	    $(CC) -std=c11 -Wall -Wextra -Wpedantic -Werror -x c -o /dev/null - || exit 1; \
	  printf '#include "%s"\nint main(){return 0;}\n' "$$h" | \
	    $(CXX) -Wall -Wextra -Werror -x c++ -o /dev/null - || exit 1; \
	done
	@echo "headers: committed copies match, compile alone as C11 and C++"

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
	  test -f "$$d/stage/usr/include/bgjob.h" && grep -q '^prefix=/usr$$' "$$d/stage/usr/lib/pkgconfig/bgjob.pc"; \
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
	  $(DESTDIR)$(INCLUDEDIR)/bgjob.h $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc

clean:
	$(CARGO) clean
