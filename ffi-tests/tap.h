/*
 * tap.h: a tiny TAP (Test Anything Protocol) producer for the C harness.
 *
 * Each test file is one executable with a table of `static bool test_x(void)`
 * cases (the shape of regex's rure harness); tap_run() plans them, runs each in
 * order and prints one "ok"/"not ok" line per case. Inside a case, the CHECK
 * macros print a "#" diagnostic for every failed check and clear the case's
 * `ok` flag, so one run shows every broken expectation, not only the first.
 *
 * Output is flushed after every line, so a fork() never duplicates buffered
 * output and a crash never loses lines already reported.
 */

#ifndef BGJOB_TAP_H
#define BGJOB_TAP_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct tap_test {
    const char *name;
    bool (*fn)(void);
};

#define TAP_TEST(fn) { #fn, fn }
#define TAP_COUNT(table) (sizeof(table) / sizeof((table)[0]))

/* Prints the plan line "1..n". Call at most once, before the first result. */
void tap_plan(size_t n);

/* Prints "ok N - description" or "not ok N - description"; returns `pass`. */
bool tap_ok(bool pass, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints one diagnostic line, prefixed with "# ". */
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Ends the run: prints the plan if none was printed (done_testing style) and a
 * summary diagnostic on failure. Returns the process exit code: 0 when every
 * result passed and their number matches the plan, 1 otherwise. */
int tap_done(void);

/*
 * Runs a table of cases: plans them, runs each, reports each, and returns
 * tap_done(). A watchdog (alarm) kills a hung file after TAP_TIMEOUT seconds
 * (environment variable; default 120, 0 disables), so prove reports it instead
 * of hanging. Cases named in TAP_SKIP (comma-separated) are reported as
 * "ok N - name # SKIP" without running: for a tool that cannot emulate what a
 * case needs.
 */
int tap_run(const struct tap_test *tests, size_t n);

/*
 * Checks for use inside a case that declares `bool ok = true;` and returns it.
 * Each failed check prints its file, line and expression and sets ok = false.
 */
#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            tap_diag("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);       \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/* CHECK with a printf-style explanation. */
#define CHECKF(cond, ...)                                                         \
    do {                                                                          \
        if (!(cond)) {                                                            \
            tap_diag("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);       \
            tap_diag(__VA_ARGS__);                                                \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/* Compares two integers (as long long) and prints both on mismatch. */
#define CHECK_EQ(got, want)                                                       \
    do {                                                                          \
        long long tap_got_ = (long long)(got), tap_want_ = (long long)(want);     \
        if (tap_got_ != tap_want_) {                                              \
            tap_diag("%s:%d: %s == %lld, expected %s == %lld", __FILE__, __LINE__, \
                     #got, tap_got_, #want, tap_want_);                           \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/* Compares two NUL-terminated strings and prints both on mismatch. */
#define CHECK_STR(got, want)                                                      \
    do {                                                                          \
        const char *tap_gs_ = (got), *tap_ws_ = (want);                           \
        if (tap_gs_ == NULL || tap_ws_ == NULL || strcmp(tap_gs_, tap_ws_) != 0) { \
            tap_diag("%s:%d: %s == \"%s\", expected \"%s\"", __FILE__, __LINE__,  \
                     #got, tap_gs_ ? tap_gs_ : "(null)", tap_ws_ ? tap_ws_ : "(null)"); \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

/* A check that the rest of the case depends on: on failure, returns false at
 * once. Use only where going on would crash or hang, and where returning early
 * leaves no running worker pointing at the case's stack. */
#define REQUIRE(cond)                                                             \
    do {                                                                          \
        if (!(cond)) {                                                            \
            tap_diag("%s:%d: required check failed: %s", __FILE__, __LINE__,     \
                     #cond);                                                      \
            return false;                                                         \
        }                                                                         \
    } while (0)

#endif /* BGJOB_TAP_H */
