# bgjob: build, test, demo, install.
#
#   make            library (.so with SONAME libbgjob.so.0, .a) and include/bgjob.h
#   make demo       build everything and run the demo driver
#   make test       every test: Rust, the C harness (prove)
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

RUST_SRCS := $(shell find src -name '*.rs') build.rs cbindgen.toml Cargo.toml

.PHONY: all lib demo test test-rust test-c check-header fmt-check clippy install uninstall clean

all: lib

lib: $(RELEASE)/$(SONAME)

# One cargo run builds the .so, the .a and (build.rs) include/bgjob.h. The
# SONAME link lets programs linked here find the library through their rpath.
$(SO) $(STATIC) include/bgjob.h &: $(RUST_SRCS)
	$(CARGO) build --release --lib
	@touch $(SO) $(STATIC) include/bgjob.h

$(RELEASE)/$(SONAME): $(SO)
	ln -sf libbgjob.so $@

$(OUT)/tests/%: ffi-tests/%.c $(TEST_LIB) $(TEST_HDRS) include/bgjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(TEST_LIB) $(LDLIBS)

$(OUT)/examples/%: examples/%.c include/bgjob.h $(RELEASE)/$(SONAME)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(LDLIBS)

demo: lib $(OUT)/examples/demo
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/bgjob-demo.XXXXXX") && \
	  trap 'rm -rf "$$dir"' EXIT INT TERM && \
	  $(OUT)/examples/demo "$$dir"

test: test-rust test-c

test-rust:
	$(CARGO) test --release

test-c: $(TESTS)
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

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

$(OUT)/bgjob.pc: Makefile Cargo.toml
	@mkdir -p $(@D)
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
	  'Cflags: -I$${includedir}' > $@

install: lib $(OUT)/bgjob.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(SO) $(DESTDIR)$(LIBDIR)/libbgjob.so.$(VERSION)
	ln -sf libbgjob.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libbgjob.so
	install -m 0644 $(STATIC) $(DESTDIR)$(LIBDIR)/libbgjob.a
	install -m 0644 include/bgjob.h $(DESTDIR)$(INCLUDEDIR)/bgjob.h
	install -m 0644 $(OUT)/bgjob.pc $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libbgjob.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	  $(DESTDIR)$(LIBDIR)/libbgjob.so $(DESTDIR)$(LIBDIR)/libbgjob.a \
	  $(DESTDIR)$(INCLUDEDIR)/bgjob.h $(DESTDIR)$(PKGCONFIGDIR)/bgjob.pc

clean:
	$(CARGO) clean
