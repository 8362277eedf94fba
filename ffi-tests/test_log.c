/*
 * test_log.c: bgjob_set_log_callback. An installed callback receives the
 * lifecycle lines of jobs (one line per call, no newline); replacing it runs
 * the old one's free function exactly once, after the last line delivered to
 * it, and the old callback is not called afterwards; removing it (NULL) does
 * the same and stops the lines; a NULL callback's userdata is freed at once;
 * the callback may call into bgjob.
 *
 * The log sink is process-wide, so this file keeps all log tests to itself.
 */

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sink {
    pthread_mutex_t mu;
    char *text; /* every line, each followed by '\n' */
    size_t len, cap;
    atomic_int calls;
    atomic_int in_call;     /* calls running now */
    atomic_int freed;
    atomic_int frees;
    atomic_int after_free;  /* calls that began after the free */
    atomic_int free_in_call; /* frees that ran while a call was running */
    atomic_int bad_line;    /* NULL, or with a newline */
    atomic_int reentry_bad; /* a bgjob call from the callback failed */
};

static void sink_init(struct sink *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
}

static void sink_release(struct sink *s)
{
    free(s->text);
    s->text = NULL;
    pthread_mutex_destroy(&s->mu);
}

static void log_line(void *userdata, const char *line)
{
    struct sink *s = userdata;
    size_t n = 0;

    atomic_fetch_add(&s->in_call, 1);
    if (atomic_load(&s->freed))
        atomic_fetch_add(&s->after_free, 1);
    atomic_fetch_add(&s->calls, 1);
    if (line == NULL || strchr(line, '\n') != NULL) {
        atomic_fetch_add(&s->bad_line, 1);
    } else {
        size_t l = strlen(line);
        pthread_mutex_lock(&s->mu);
        if (s->len + l + 2 > s->cap) {
            s->cap = (s->len + l + 2) * 2;
            s->text = realloc(s->text, s->cap);
            if (s->text == NULL)
                abort();
        }
        memcpy(s->text + s->len, line, l);
        s->len += l;
        s->text[s->len++] = '\n';
        s->text[s->len] = 0;
        pthread_mutex_unlock(&s->mu);
    }
    /* Any bgjob function may be called from here. */
    if (bgjob_list_jobs(NULL, 0, &n) != BGJOB_RESULT_OK || bgjob_version() == NULL)
        atomic_fetch_add(&s->reentry_bad, 1);
    atomic_fetch_sub(&s->in_call, 1);
}

static void sink_free(void *userdata)
{
    struct sink *s = userdata;

    if (atomic_load(&s->in_call) != 0)
        atomic_fetch_add(&s->free_in_call, 1);
    atomic_store(&s->freed, 1);
    atomic_fetch_add(&s->frees, 1);
}

/* Whether some line of the sink contains both `a` and `b`. */
static bool has_line(struct sink *s, const char *a, const char *b)
{
    bool found = false;

    pthread_mutex_lock(&s->mu);
    for (char *line = s->text; line != NULL && *line != 0 && !found;) {
        char *eol = strchr(line, '\n');
        *eol = 0;
        found = strstr(line, a) != NULL && strstr(line, b) != NULL;
        *eol = '\n';
        line = eol + 1;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Polls for such a line: lines about a job's end may be logged just after
 * bgjob_job_wait has returned. */
static bool poll_line(struct sink *s, const char *a, const char *b)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (!has_line(s, a, b)) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

static void dump(struct sink *s)
{
    pthread_mutex_lock(&s->mu);
    tap_diag("lines received:\n%s", s->text != NULL ? s->text : "(none)");
    pthread_mutex_unlock(&s->mu);
}

/* Runs a named job to its end: 0 completes, non-zero fails, -1 is cancelled. */
static bool run_named(const char *name, int32_t rc, int32_t want)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    t.rc = rc;
    CHECK_RC(job_create(&t, rc < 0 ? worker_until_cancel : worker_return, 0,
                        BGJOB_JOB_TYPE_BOUNDED, name, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    if (rc < 0) {
        CHECK(poll_long_ge(&t.iterations, 1));
        CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    }
    CHECK_STATE(wait_end(job), want);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static struct sink a, b, c;

static bool test_lifecycle_lines(void)
{
    bool ok = true;

    sink_init(&a);
    CHECK_RC(bgjob_set_log_callback(log_line, &a, sink_free), BGJOB_RESULT_OK);
    CHECK(run_named("logjob-ok", 0, BGJOB_STATE_COMPLETED));
    CHECK(run_named("logjob-fail", 5, BGJOB_STATE_FAILED));
    CHECK(run_named("logjob-cancel", -1, BGJOB_STATE_CANCELLED));
    /* Lines name the job, and tell where it went: made, and how it ended. */
    CHECK(poll_line(&a, "logjob-ok", bgjob_state_str(BGJOB_STATE_CREATED)));
    CHECK(poll_line(&a, "logjob-ok", bgjob_state_str(BGJOB_STATE_COMPLETED)));
    CHECK(poll_line(&a, "logjob-fail", bgjob_state_str(BGJOB_STATE_FAILED)));
    CHECK(poll_line(&a, "logjob-cancel", bgjob_state_str(BGJOB_STATE_CANCELLED)));
    CHECK_EQ(atomic_load(&a.bad_line), 0);
    CHECK_EQ(atomic_load(&a.reentry_bad), 0);
    CHECK_EQ(atomic_load(&a.frees), 0);
    if (!ok)
        dump(&a);
    return ok;
}

static bool test_replace_frees_old(void)
{
    bool ok = true;
    int calls_a;

    sink_init(&b);
    CHECK_RC(bgjob_set_log_callback(log_line, &b, sink_free), BGJOB_RESULT_OK);
    /* Freed once, when the last line to it was done (one may be in flight on
     * a worker thread right now). */
    CHECK(poll_int_eq(&a.frees, 1));
    calls_a = atomic_load(&a.calls);
    CHECK(run_named("logjob-after-replace", 0, BGJOB_STATE_COMPLETED));
    CHECK(poll_line(&b, "logjob-after-replace", bgjob_state_str(BGJOB_STATE_COMPLETED)));
    CHECK_EQ(atomic_load(&a.calls), calls_a);
    CHECK(!has_line(&a, "logjob-after-replace", ""));
    CHECK_EQ(atomic_load(&a.frees), 1);
    CHECK_EQ(atomic_load(&a.after_free), 0);
    CHECK_EQ(atomic_load(&a.free_in_call), 0);
    CHECK_EQ(atomic_load(&b.frees), 0);
    return ok;
}

static bool test_remove_stops_lines(void)
{
    bool ok = true;
    int calls_b;

    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&b.frees, 1));
    calls_b = atomic_load(&b.calls);
    CHECK(run_named("logjob-silent", 0, BGJOB_STATE_COMPLETED));
    sleep_ms(20);
    CHECK_EQ(atomic_load(&b.calls), calls_b);
    CHECK_EQ(atomic_load(&b.frees), 1);
    CHECK_EQ(atomic_load(&b.after_free), 0);
    CHECK_EQ(atomic_load(&b.free_in_call), 0);
    /* Removing again is harmless. */
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    return ok;
}

/* A NULL callback takes ownership of the userdata all the same, and frees it
 * before returning. */
static bool test_null_callback_frees_at_once(void)
{
    bool ok = true;

    sink_init(&c);
    CHECK_RC(bgjob_set_log_callback(NULL, &c, sink_free), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&c.frees), 1);
    CHECK_EQ(atomic_load(&c.calls), 0);
    CHECK(run_named("logjob-none", 0, BGJOB_STATE_COMPLETED));
    CHECK_EQ(atomic_load(&c.calls), 0);
    CHECK_EQ(atomic_load(&c.frees), 1);
    /* No free function: nothing to call. */
    CHECK_RC(bgjob_set_log_callback(log_line, &c, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&c.frees), 1);
    return ok;
}

static struct sink d, e;

/* Removes itself on its first line, and installs `e` on its second (if a
 * second ever came, which it must not). */
static void log_line_remove_self(void *userdata, const char *line)
{
    struct sink *s = userdata;

    log_line(userdata, line);
    atomic_fetch_add(&s->in_call, 1);
    if (atomic_load(&s->calls) == 1) {
        if (bgjob_set_log_callback(NULL, NULL, NULL) != BGJOB_RESULT_OK)
            atomic_fetch_add(&s->reentry_bad, 1);
        /* Still inside the call: the free must wait until it returns. */
        if (atomic_load(&s->frees) != 0)
            atomic_fetch_add(&s->free_in_call, 1);
    } else if (atomic_load(&s->calls) == 2) {
        bgjob_set_log_callback(log_line, &e, sink_free);
    }
    atomic_fetch_sub(&s->in_call, 1);
}

/* A callback may replace (here: remove) itself from inside a call; that takes
 * effect for the next line, and its free runs after the call returns. */
static bool test_callback_removes_itself(void)
{
    bool ok = true;

    sink_init(&d);
    sink_init(&e);
    CHECK_RC(bgjob_set_log_callback(log_line_remove_self, &d, sink_free), BGJOB_RESULT_OK);
    CHECK(run_named("logjob-self", 0, BGJOB_STATE_COMPLETED));
    CHECK(poll_int_eq(&d.frees, 1));
    sleep_ms(20);
    CHECK_EQ(atomic_load(&d.calls), 1);
    CHECK_EQ(atomic_load(&d.frees), 1);
    CHECK_EQ(atomic_load(&d.free_in_call), 0);
    CHECK_EQ(atomic_load(&d.after_free), 0);
    CHECK_EQ(atomic_load(&d.reentry_bad), 0);
    CHECK_EQ(atomic_load(&e.calls), 0);
    CHECK_EQ(atomic_load(&e.frees), 0);
    /* Nothing is installed now. */
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&e.frees), 0);
    return ok;
}

#define SINKS 40

/* The replaced callback's free function calls back into bgjob (it makes a job,
 * which logs, and removes the callback). It must run with no bgjob lock held,
 * or it deadlocks; the TAP watchdog would then report the hang. */
static atomic_int reentrant_frees;

static void quiet_line(void *userdata, const char *line)
{
    (void)userdata;
    (void)line;
}

static int32_t nothing_worker(void *userdata, bgjob_job *job)
{
    (void)userdata;
    (void)job;
    return 0;
}

static void reentrant_free(void *userdata)
{
    (void)userdata;
    bgjob_job *job = NULL;
    if (bgjob_job_create(NULL, nothing_worker, NULL, NULL, &job) == BGJOB_RESULT_OK) {
        bgjob_job_wait(job, -1, NULL);
        bgjob_job_destroy(job);
    }
    bgjob_set_log_callback(NULL, NULL, NULL);
    atomic_fetch_add(&reentrant_frees, 1);
}

static bool test_replaced_free_may_call_bgjob(void)
{
    bool ok = true;
    atomic_store(&reentrant_frees, 0);
    CHECK_RC(bgjob_set_log_callback(quiet_line, NULL, reentrant_free), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_set_log_callback(quiet_line, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&reentrant_frees), 1);
    CHECK_RC(bgjob_set_log_callback(quiet_line, NULL, reentrant_free), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&reentrant_frees), 2);
    return ok;
}

static atomic_bool churn_stop;

static void *job_churn(void *arg)
{
    atomic_long *made = arg;

    while (!atomic_load(&churn_stop)) {
        struct tracker t;
        bgjob_job *job = NULL;

        tracker_init(&t);
        if (job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, "churn", &job) ==
            BGJOB_RESULT_OK) {
            bgjob_job_wait(job, LONG_MS, NULL);
            bgjob_job_destroy(job);
            atomic_fetch_add(made, 1);
        }
    }
    return NULL;
}

/* Callbacks replaced over and over while jobs log from other threads: each
 * free runs once, never while its callback runs, and no callback runs after
 * its free. */
static bool test_replace_while_logging(void)
{
    static struct sink s[SINKS];
    bool ok = true;
    pthread_t th[2];
    atomic_long made;

    atomic_init(&made, 0);
    atomic_store(&churn_stop, false);
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, job_churn, &made) != 0)
            abort();
    for (int i = 0; i < SINKS; i++) {
        sink_init(&s[i]);
        CHECK_RC(bgjob_set_log_callback(log_line, &s[i], sink_free), BGJOB_RESULT_OK);
        sleep_ms(2);
    }
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    atomic_store(&churn_stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&made) > 0);
    long lines = 0;
    for (int i = 0; i < SINKS; i++) {
        CHECK(poll_int_eq(&s[i].frees, 1));
        lines += atomic_load(&s[i].calls);
    }
    sleep_ms(20);
    for (int i = 0; i < SINKS; i++) {
        CHECK_EQ(atomic_load(&s[i].frees), 1);
        CHECK_EQ(atomic_load(&s[i].after_free), 0);
        CHECK_EQ(atomic_load(&s[i].free_in_call), 0);
        CHECK_EQ(atomic_load(&s[i].bad_line), 0);
        sink_release(&s[i]);
    }
    CHECK(lines > 0);
    tap_diag("%ld jobs, %ld lines over %d callbacks", atomic_load(&made), lines, SINKS);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_lifecycle_lines),
        TAP_TEST(test_replace_frees_old),
        TAP_TEST(test_remove_stops_lines),
        TAP_TEST(test_null_callback_frees_at_once),
        TAP_TEST(test_callback_removes_itself),
        TAP_TEST(test_replace_while_logging),
        TAP_TEST(test_replaced_free_may_call_bgjob),
    };
    int rc = tap_run(tests, TAP_COUNT(tests));

    /* No callback is installed any more: the sinks can go. */
    sink_release(&a);
    sink_release(&b);
    sink_release(&c);
    sink_release(&d);
    sink_release(&e);
    return rc;
}
