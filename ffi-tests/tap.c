/*
 * tap.c: the TAP producer declared in tap.h.
 */

#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t planned;
static bool have_plan;
static size_t run;
static size_t failed;

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
    printf("%sok %zu - ", pass ? "" : "not ", run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return pass;
}

void tap_diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
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
