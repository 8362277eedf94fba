/*
 * tap.c: the TAP producer declared in tap.h.
 */

#include "tap.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t planned;
static bool have_plan;
static size_t run;
static size_t failed;

/* The last diagnostics of the test running now: repeated on stderr when it
 * fails, because prove shows a test's stderr but not its TAP diagnostics, so
 * a CI log then says why. */
#define KEPT_DIAGS 24
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static char kept[KEPT_DIAGS][240];
static size_t kept_n;

static void keep_diag(const char *line)
{
    pthread_mutex_lock(&kept_mu);
    char *slot = kept[kept_n % KEPT_DIAGS];
    size_t len = strlen(line);
    if (len >= sizeof kept[0])
        len = sizeof kept[0] - 1;
    memcpy(slot, line, len);
    slot[len] = '\0';
    kept_n++;
    pthread_mutex_unlock(&kept_mu);
}

static void flush_kept(const char *test, bool pass)
{
    pthread_mutex_lock(&kept_mu);
    if (!pass) {
        size_t first = kept_n > KEPT_DIAGS ? kept_n - KEPT_DIAGS : 0;
        fprintf(stderr, "not ok - %s; its last diagnostics:\n", test);
        for (size_t i = first; i < kept_n; i++)
            fprintf(stderr, "#   %s\n", kept[i % KEPT_DIAGS]);
    }
    kept_n = 0;
    pthread_mutex_unlock(&kept_mu);
}

void tap_plan(size_t n)
{
    if (have_plan)
        return;
    planned = n;
    have_plan = true;
    printf("1..%zu\n", n);
    fflush(stdout);
}

bool tap_ok(bool pass, const char *fmt, ...)
{
    va_list ap;

    run++;
    if (!pass)
        failed++;
    char name[200];
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    printf("%sok %zu - %s\n", pass ? "" : "not ", run, name);
    fflush(stdout);
    flush_kept(name, pass);
    return pass;
}

void tap_diag(const char *fmt, ...)
{
    va_list ap;

    char line[1024];
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    printf("# %s\n", line);
    fflush(stdout);
    keep_diag(line);
}

int tap_done(void)
{
    if (!have_plan)
        tap_plan(run);
    if (run != planned)
        tap_diag("planned %zu tests but ran %zu", planned, run);
    if (failed > 0)
        tap_diag("failed %zu of %zu tests", failed, run);
    return failed == 0 && run == planned ? 0 : 1;
}

/* Whether `name` is in TAP_SKIP (a comma-separated list of case names). */
static bool skipped(const char *name)
{
    const char *list = getenv("TAP_SKIP");
    size_t len = strlen(name);

    for (const char *p = list; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, len) == 0)
            return true;
        p = end != NULL ? end + 1 : NULL;
    }
    return false;
}

int tap_run(const struct tap_test *tests, size_t n)
{
    const char *t = getenv("TAP_TIMEOUT");
    unsigned timeout = t != NULL ? (unsigned)strtoul(t, NULL, 10) : 120;

    /* The default action of SIGALRM ends the process: prove then reports a
     * missing plan instead of hanging on a deadlocked case. */
    alarm(timeout);
    tap_plan(n);
    for (size_t i = 0; i < n; i++) {
        if (skipped(tests[i].name)) {
            tap_ok(true, "%s # SKIP listed in TAP_SKIP", tests[i].name);
            continue;
        }
        bool pass = tests[i].fn();
        tap_ok(pass, "%s", tests[i].name);
    }
    alarm(0);
    return tap_done();
}
