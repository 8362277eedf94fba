/*
 * tap.c: the TAP producer declared in tap.h.
 */

#include "tap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

int tap_run(const struct tap_test *tests, size_t n)
{
    const char *t = getenv("TAP_TIMEOUT");
    unsigned timeout = t != NULL ? (unsigned)strtoul(t, NULL, 10) : 120;

    /* The default action of SIGALRM ends the process: prove then reports a
     * missing plan instead of hanging on a deadlocked case. */
    alarm(timeout);
    tap_plan(n);
    for (size_t i = 0; i < n; i++) {
        bool pass = tests[i].fn();
        tap_ok(pass, "%s", tests[i].name);
    }
    alarm(0);
    return tap_done();
}
