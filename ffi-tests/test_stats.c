/*
 * test_stats.c: typed job statistics. Declaring is refused after start, for a
 * duplicate, NULL, empty or too long name, an unknown type, a too long unit and
 * past BGJOB_MAX_STATS; every type is set and read back with its unit; a reader
 * racing a writer of batches never sees a torn batch; statistics stay readable
 * after the job ended (setters refused) until destroy; a short buffer gets the
 * first entries and the full count; on the worker's thread a setter parks a
 * paused worker like a progress call, on another thread it never does.
 */

#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bgjob_job *created_job(struct tracker *t)
{
    bgjob_job *job = NULL;

    tracker_init(t);
    if (job_create(t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                   &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

static bool test_declare_rules(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t);
    uint32_t idx = 99;
    char name[80];

    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_add_stat(job, NULL, BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    memset(name, 'n', 64);
    name[64] = 0;
    CHECK_RC(bgjob_job_add_stat(job, name, BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "x", 4, NULL, &idx), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "x", -1, NULL, &idx), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "x", BGJOB_STAT_TYPE_U64, "0123456789abcdef", &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "x", BGJOB_STAT_TYPE_U64, NULL, NULL),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_add_stat(job, "\xff", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(idx, 99); /* no output on failure */
    CHECK_RC(bgjob_job_add_stat(NULL, "x", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_HANDLE);

    /* A 63-byte name and a 15-byte unit fit exactly. */
    name[63] = 0;
    CHECK_RC(bgjob_job_add_stat(job, name, BGJOB_STAT_TYPE_U64, "0123456789abcde", &idx),
             BGJOB_RESULT_OK);
    CHECK_EQ(idx, 0);
    CHECK_RC(bgjob_job_add_stat(job, name, BGJOB_STAT_TYPE_I64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    for (uint32_t i = 1; i < BGJOB_MAX_STATS; i++) {
        snprintf(name, sizeof name, "stat-%u", i);
        CHECK_RC(bgjob_job_add_stat(job, name, (int32_t)(i % 4), NULL, &idx), BGJOB_RESULT_OK);
        CHECK_EQ(idx, i);
    }
    CHECK_RC(bgjob_job_add_stat(job, "one-too-many", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_INVALID_ARGUMENT);
    size_t n = 0;
    CHECK_RC(bgjob_job_get_stats(job, NULL, NULL, 0, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, BGJOB_MAX_STATS);

    /* Setters check index and type. */
    CHECK_RC(bgjob_job_set_stat_u64(job, 0, 1), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_stat_i64(job, 0, 1), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_stat_double(job, 0, 1.0), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_stat_string(job, 0, "a"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_stat_u64(job, BGJOB_MAX_STATS, 1), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_stat_string(job, 3, NULL), BGJOB_RESULT_INVALID_ARGUMENT);

    /* Once started, the set is fixed. */
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_add_stat(job, "late", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_declare_refused_while_running(void)
{
    bool ok = true;
    struct tracker t;
    struct gate g;
    bgjob_job *job = NULL;
    uint32_t idx;

    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    REQUIRE(job_create(&t, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job) ==
            BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(job, "late", BGJOB_STAT_TYPE_U64, NULL, &idx),
             BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* Declares u64 "bytes", i64 "delta", double "rate", string "status". */
static bool declare_four(bgjob_job *job)
{
    bool ok = true;
    uint32_t i = 99;

    CHECK_RC(bgjob_job_add_stat(job, "data_processed", BGJOB_STAT_TYPE_U64, "bytes", &i),
             BGJOB_RESULT_OK);
    CHECK_EQ(i, 0);
    CHECK_RC(bgjob_job_add_stat(job, "delta", BGJOB_STAT_TYPE_I64, "", &i), BGJOB_RESULT_OK);
    CHECK_EQ(i, 1);
    CHECK_RC(bgjob_job_add_stat(job, "dirty_rate", BGJOB_STAT_TYPE_DOUBLE, "pages/s", &i),
             BGJOB_RESULT_OK);
    CHECK_EQ(i, 2);
    CHECK_RC(bgjob_job_add_stat(job, "status", BGJOB_STAT_TYPE_STRING, NULL, &i),
             BGJOB_RESULT_OK);
    CHECK_EQ(i, 3);
    return ok;
}

static bool test_every_type_set_and_read(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t);
    bgjob_stat s[4];
    size_t n = 0;

    REQUIRE(job != NULL);
    REQUIRE(declare_four(job));

    /* Before any set: 0 and "". */
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 4);
    CHECK_EQ(s[0].value.u64, 0);
    CHECK_STR(s[3].text, "");

    CHECK_RC(bgjob_job_set_stat_u64(job, 0, UINT64_MAX), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_stat_i64(job, 1, INT64_MIN), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_stat_double(job, 2, -1.5), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_stat_string(job, 3, "converging"), BGJOB_RESULT_OK);
    memset(s, 0xA5, sizeof s);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 4);
    CHECK_STR(s[0].name, "data_processed");
    CHECK_STR(s[0].unit, "bytes");
    CHECK_EQ(s[0].type, BGJOB_STAT_TYPE_U64);
    CHECK(s[0].value.u64 == UINT64_MAX);
    CHECK_STR(s[0].text, "");
    CHECK_STR(s[1].name, "delta");
    CHECK_STR(s[1].unit, "");
    CHECK_EQ(s[1].type, BGJOB_STAT_TYPE_I64);
    CHECK(s[1].value.i64 == INT64_MIN);
    CHECK_STR(s[2].name, "dirty_rate");
    CHECK_STR(s[2].unit, "pages/s");
    CHECK_EQ(s[2].type, BGJOB_STAT_TYPE_DOUBLE);
    CHECK(s[2].value.f64 == -1.5);
    CHECK_STR(s[3].name, "status");
    CHECK_EQ(s[3].type, BGJOB_STAT_TYPE_STRING);
    CHECK_STR(s[3].text, "converging");

    /* A long string reads cut to 63 bytes, on a character boundary. */
    char long_text[200];
    memset(long_text, 'a', 62);
    strcpy(long_text + 62, "\xc3\xa9tail"); /* "é" would straddle byte 63 */
    CHECK_RC(bgjob_job_set_stat_string(job, 3, long_text), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK_EQ(strlen(s[3].text), 62);
    CHECK_RC(bgjob_job_set_stat_string(job, 3, "\xff"), BGJOB_RESULT_INVALID_ARGUMENT);

    /* A batch of every type. */
    bgjob_stat_update u[4] = {
        {.index = 0, .value.u64 = 7},
        {.index = 1, .value.i64 = -7},
        {.index = 2, .value.f64 = 3.5},
        {.index = 3, .text = "batch"},
    };
    CHECK_RC(bgjob_job_set_stats(job, u, 4), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK(s[0].value.u64 == 7 && s[1].value.i64 == -7 && s[2].value.f64 == 3.5);
    CHECK_STR(s[3].text, "batch");

    /* A batch with one bad member changes nothing. */
    bgjob_stat_update bad[2] = {{.index = 0, .value.u64 = 8}, {.index = 9, .value.u64 = 8}};
    CHECK_RC(bgjob_job_set_stats(job, bad, 2), BGJOB_RESULT_INVALID_ARGUMENT);
    bgjob_stat_update bad_text[2] = {{.index = 0, .value.u64 = 8}, {.index = 3, .text = NULL}};
    CHECK_RC(bgjob_job_set_stats(job, bad_text, 2), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK(s[0].value.u64 == 7);
    CHECK_RC(bgjob_job_set_stats(job, NULL, 0), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_stats(job, NULL, 1), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_stats(NULL, u, 1), BGJOB_RESULT_INVALID_HANDLE);

    /* A job without statistics has none. */
    struct tracker t2;
    bgjob_job *plain = created_job(&t2);
    REQUIRE(plain != NULL);
    n = 99;
    CHECK_RC(bgjob_job_get_stats(plain, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 0);
    CHECK_RC(bgjob_job_set_stat_u64(plain, 0, 1), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(plain), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_short_buffer_and_bad_arguments(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = created_job(&t);
    bgjob_stat s[2];
    bgjob_info info;
    size_t n = 0;

    REQUIRE(job != NULL);
    REQUIRE(declare_four(job));
    CHECK_RC(bgjob_job_set_stat_u64(job, 0, 42), BGJOB_RESULT_OK);

    /* Too small: the first entries, the full count, OK (as bgjob_list_jobs). */
    memset(s, 0xA5, sizeof s);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 1, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 4);
    CHECK_STR(s[0].name, "data_processed");
    CHECK(s[0].value.u64 == 42);
    CHECK_EQ((unsigned char)s[1].name[0], 0xA5); /* nothing past capacity */
    n = 0;
    CHECK_RC(bgjob_job_get_stats(job, NULL, NULL, 0, &n), BGJOB_RESULT_OK);
    CHECK_EQ(n, 4);

    CHECK_RC(bgjob_job_get_stats(job, NULL, NULL, 2, &n), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 2, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_stats(NULL, NULL, s, 2, &n), BGJOB_RESULT_INVALID_HANDLE);
    memset(&info, 0, sizeof info);
    info.struct_size = 8;
    CHECK_RC(bgjob_job_get_stats(job, &info, s, 2, &n), BGJOB_RESULT_INVALID_ARGUMENT);

    /* With the snapshot. */
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_RC(bgjob_job_get_stats(job, &info, s, 2, &n), BGJOB_RESULT_OK);
    CHECK_EQ(info.id, id_of(job));
    CHECK_STATE(info.state, BGJOB_STATE_CREATED);
    CHECK_EQ(info.struct_size, sizeof info);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* The batch worker: sets a = i, b = -i, c = i / 2.0, s = "i" together,
 * progress current = i first, until cancelled. */
struct batcher {
    struct tracker t;
    atomic_long rounds;
};

static int32_t worker_batches(void *userdata, bgjob_job *job)
{
    struct batcher *b = (struct batcher *)ud_tracker(userdata);
    char text[32];

    atomic_fetch_add(&b->t.runs, 1);
    for (uint64_t i = 1; bgjob_job_check_cancel(job) != BGJOB_RESULT_CANCELLED; i++) {
        snprintf(text, sizeof text, "%llu", (unsigned long long)i);
        bgjob_stat_update u[4] = {
            {.index = 0, .value.u64 = i},
            {.index = 1, .value.i64 = -(int64_t)i},
            {.index = 2, .value.f64 = (double)i / 2.0},
            {.index = 3, .text = text},
        };
        if (bgjob_job_set_current(job, i) != BGJOB_RESULT_OK ||
            bgjob_job_set_stats(job, u, 4) != BGJOB_RESULT_OK)
            return 1;
        atomic_fetch_add(&b->rounds, 1);
    }
    return 0;
}

static bool test_reader_never_sees_a_torn_batch(void)
{
    bool ok = true;
    struct batcher b;
    bgjob_job *job = NULL;
    bgjob_stat s[4];
    bgjob_info info;
    size_t n;
    long reads = 0, changes = 0, torn = 0;
    uint64_t last = 0;

    tracker_init(&b.t);
    atomic_init(&b.rounds, 0);
    REQUIRE(job_create(&b.t, worker_batches, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                       "batcher", &job) == BGJOB_RESULT_OK);
    REQUIRE(declare_four(job));
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    REQUIRE(poll_long_ge(&b.rounds, 1));
    /* Read until many distinct batches were seen: the reader really ran
     * while the writer wrote, however the threads were scheduled. The end is
     * a count, not a clock (under valgrind, which runs one thread at a time,
     * a minute gave ~660 batches); a hang is left to the TAP timeout. */
    while (reads < 5000 || changes < 300) {
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (bgjob_job_get_stats(job, &info, s, 4, &n) != BGJOB_RESULT_OK || n != 4) {
            CHECKF(false, "get_stats failed at read %ld", reads);
            break;
        }
        reads++;
        uint64_t a = s[0].value.u64;
        char want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)a);
        if (a == 0)
            continue;
        if (s[1].value.i64 != -(int64_t)a || s[2].value.f64 != (double)a / 2.0 ||
            strcmp(s[3].text, want) != 0) {
            if (torn++ < 5)
                tap_diag("torn batch: a=%llu b=%lld c=%g s=%s", (unsigned long long)a,
                         (long long)s[1].value.i64, s[2].value.f64, s[3].text);
        }
        if (a < last)
            CHECKF(false, "stats went backwards: %llu after %llu", (unsigned long long)a,
                   (unsigned long long)last);
        if (a != last)
            changes++;
        last = a;
    }
    CHECK_EQ(torn, 0);
    tap_diag("%ld reads, %ld distinct batches, %ld rounds", reads, changes,
             atomic_load(&b.rounds));
    bgjob_cancel_status cs;
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Sets every statistic, then fails with code 5. */
static int32_t worker_sets_then_fails(void *userdata, bgjob_job *job)
{
    struct tracker *t = ud_tracker(userdata);

    atomic_fetch_add(&t->runs, 1);
    bgjob_job_set_stat_u64(job, 0, 1000);
    bgjob_job_set_stat_i64(job, 1, -3);
    bgjob_job_set_stat_double(job, 2, 0.5);
    bgjob_job_set_stat_string(job, 3, "disk full");
    return 5;
}

static bool test_stats_after_end_until_destroy(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_stat s[4];
    bgjob_info info;
    size_t n = 0;

    tracker_init(&t);
    REQUIRE(job_create(&t, worker_sets_then_fails, BGJOB_CREATE_DEFER_START,
                       BGJOB_JOB_TYPE_BOUNDED, NULL, &job) == BGJOB_RESULT_OK);
    REQUIRE(declare_four(job));
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    /* Read again and again after the end: the final values each time. */
    for (int i = 0; i < 3; i++) {
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        CHECK_RC(bgjob_job_get_stats(job, &info, s, 4, &n), BGJOB_RESULT_OK);
        CHECK_EQ(n, 4);
        CHECK_STATE(info.state, BGJOB_STATE_FAILED);
        CHECK_EQ(info.error_code, 5);
        CHECK(s[0].value.u64 == 1000 && s[1].value.i64 == -3 && s[2].value.f64 == 0.5);
        CHECK_STR(s[3].text, "disk full");
    }
    /* Setters are refused once ended: the values are final. */
    CHECK_RC(bgjob_job_set_stat_u64(job, 0, 1), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_set_stat_string(job, 3, "x"), BGJOB_RESULT_NOT_ALLOWED);
    bgjob_stat_update u = {.index = 0, .value.u64 = 1};
    CHECK_RC(bgjob_job_set_stats(job, &u, 1), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_OK);
    CHECK(s[0].value.u64 == 1000);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_stats(job, NULL, s, 4, &n), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* Sets stat 0 in a loop, counting, until cancelled. */
static int32_t worker_stat_loop(void *userdata, bgjob_job *job)
{
    struct tracker *t = ud_tracker(userdata);

    atomic_fetch_add(&t->runs, 1);
    for (uint64_t i = 1; bgjob_job_check_cancel(job) != BGJOB_RESULT_CANCELLED; i++) {
        atomic_fetch_add(&t->calls, 1);
        if (bgjob_job_set_stat_u64(job, 0, i) != BGJOB_RESULT_OK)
            return 1;
        atomic_fetch_add(&t->iterations, 1);
        sleep_us(100);
    }
    return 0;
}

/* On the worker's thread a stat setter is a pause point, like a progress
 * call: a paused worker parks in it (calls started == calls returned + 1 and
 * stays so). From another thread a setter on a paused job returns at once. */
static bool test_setter_parks_like_progress(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    uint32_t idx;

    tracker_init(&t);
    REQUIRE(job_create(&t, worker_stat_loop, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                       NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(job, "n", BGJOB_STAT_TYPE_U64, NULL, &idx), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    REQUIRE(poll_long_ge(&t.iterations, 3));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    /* The worker ends up inside a setter: started one more than returned,
     * and still so 50 ms later (the setter in flight when the pause came
     * may return once: a single look could catch that one). */
    int64_t give_up = now_ms() + LONG_MS;
    long c = 0, it = 0;
    bool rested = false;
    while (!rested && now_ms() < give_up) {
        c = atomic_load(&t.calls);
        it = atomic_load(&t.iterations);
        sleep_ms(50);
        rested = c == it + 1 && atomic_load(&t.calls) == c && atomic_load(&t.iterations) == it;
    }
    CHECKF(rested, "worker not parked in a setter: %ld started, %ld returned", c, it);
    sleep_ms(50);
    CHECK_EQ(atomic_load(&t.iterations), it);
    /* Another thread's setter does not park. */
    CHECK_RC(bgjob_job_set_stat_u64(job, 0, 7), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&t.iterations, it + 2));
    bgjob_cancel_status cs;
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_declare_rules),
        TAP_TEST(test_declare_refused_while_running),
        TAP_TEST(test_every_type_set_and_read),
        TAP_TEST(test_short_buffer_and_bad_arguments),
        TAP_TEST(test_reader_never_sees_a_torn_batch),
        TAP_TEST(test_stats_after_end_until_destroy),
        TAP_TEST(test_setter_parks_like_progress),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
