/*
 * test_list.c: what bgjob_list_jobs tells about a job — operation, owner tag,
 * internal pause count, cancel state and cause, parent id — and the
 * operation and owner readers; bgjob_list_jobs_sized writes entries of the
 * caller's size at the caller's stride (an older, shorter entry) and refuses
 * sizes below the first version's; the debug log's lifecycle lines name the
 * operation.
 */

#include "util.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first released bgjob_job_entry ended with `phase`. */
#define ENTRY_V1_SIZE (offsetof(bgjob_job_entry, phase) + BGJOB_ENTRY_TEXT_SIZE)

static bgjob_result create_tagged(struct tracker *t, const char *op, const char *owner,
                                  bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_result r = bgjob_job_options_init(&o, sizeof o);

    if (r != BGJOB_RESULT_OK)
        return r;
    tracker_init(t);
    o.flags = BGJOB_CREATE_DEFER_START;
    o.name = "listed";
    o.operation = op;
    o.owner = owner;
    return bgjob_job_create(&o, worker_return, ud_new(t), ud_free, out);
}

/* Copies the listing entry of job `id` into *out; false if not listed. */
static bool entry_of(uint64_t id, bgjob_job_entry *out)
{
    size_t n = 0, cap;
    bool found = false;

    if (bgjob_list_jobs(NULL, 0, &n) != BGJOB_RESULT_OK)
        return false;
    cap = n + 8;
    bgjob_job_entry *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return false;
    if (bgjob_list_jobs(e, cap, &n) == BGJOB_RESULT_OK) {
        for (size_t i = 0; i < n && i < cap; i++) {
            if (e[i].id == id) {
                *out = e[i];
                found = true;
            }
        }
    }
    free(e);
    return found;
}

static bool test_entry_fields(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_job_entry e;

    REQUIRE(create_tagged(&t, "mirror", "domain vm1", &job) == BGJOB_RESULT_OK);
    uint64_t id = id_of(job);
    REQUIRE(entry_of(id, &e));
    CHECK_STR(e.name, "listed");
    CHECK_STR(e.operation, "mirror");
    CHECK_STR(e.owner, "domain vm1");
    CHECK_EQ(e.pause_count, 0);
    CHECK(!e.cancel_requested);
    CHECK_EQ(e.cancel_cause, BGJOB_CANCEL_CAUSE_NONE);
    CHECK_EQ(e.parent_id, 0);
    CHECK_STATE(e.state, BGJOB_STATE_CREATED);

    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause_internal(job), BGJOB_RESULT_OK);
    REQUIRE(entry_of(id, &e));
    CHECK_EQ(e.pause_count, 2);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_resume_internal(job), BGJOB_RESULT_OK);

    bgjob_cancel_status cs;
    CHECK_RC(bgjob_job_cancel(job, &cs), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    REQUIRE(entry_of(id, &e));
    CHECK(e.cancel_requested);
    CHECK_EQ(e.cancel_cause, BGJOB_CANCEL_CAUSE_CALLER);
    CHECK_STR(e.operation, "mirror");
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_operation_and_owner_readers(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    char buf[64];
    size_t len = 0;

    REQUIRE(create_tagged(&t, "save", "domain vm2", &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_operation(job, buf, sizeof buf, &len), BGJOB_RESULT_OK);
    CHECK_STR(buf, "save");
    CHECK_EQ(len, 4);
    CHECK_RC(bgjob_job_get_owner(job, buf, sizeof buf, &len), BGJOB_RESULT_OK);
    CHECK_STR(buf, "domain vm2");
    CHECK_EQ(len, 10);
    /* snprintf-style: cut, full length reported. */
    CHECK_RC(bgjob_job_get_owner(job, buf, 4, &len), BGJOB_RESULT_OK);
    CHECK_STR(buf, "dom");
    CHECK_EQ(len, 10);
    CHECK_RC(bgjob_job_get_owner(job, NULL, 0, &len), BGJOB_RESULT_OK);
    CHECK_EQ(len, 10);
    CHECK_RC(bgjob_job_get_operation(job, NULL, 4, &len), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_operation(NULL, buf, sizeof buf, &len), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_get_owner(NULL, buf, sizeof buf, &len), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* Defaults: none. */
    REQUIRE(create_tagged(&t, NULL, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_operation(job, buf, sizeof buf, &len), BGJOB_RESULT_OK);
    CHECK_STR(buf, "");
    CHECK_RC(bgjob_job_get_owner(job, buf, sizeof buf, &len), BGJOB_RESULT_OK);
    CHECK_STR(buf, "");
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* Not UTF-8: refused, and the userdata is freed. */
    CHECK_RC(create_tagged(&t, "\xff", NULL, &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(create_tagged(&t, NULL, "\xc3", &job), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

/* A long owner is cut to 63 bytes in the entry; the reader gives it whole. */
static bool test_long_owner_cut_in_entry(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    bgjob_job_entry e;
    char owner[100], buf[128];
    size_t len = 0;

    memset(owner, 'o', 99);
    owner[99] = 0;
    REQUIRE(create_tagged(&t, "migrate", owner, &job) == BGJOB_RESULT_OK);
    REQUIRE(entry_of(id_of(job), &e));
    CHECK_EQ(strlen(e.owner), BGJOB_ENTRY_TEXT_SIZE - 1);
    CHECK_RC(bgjob_job_get_owner(job, buf, sizeof buf, &len), BGJOB_RESULT_OK);
    CHECK_EQ(len, 99);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* An old caller's entries: V1 size and stride, nothing written past them. */
static bool test_sized_listing(void)
{
    bool ok = true;
    struct tracker t1, t2;
    bgjob_job *a = NULL, *b = NULL;
    size_t n = 0, total = 0;

    REQUIRE(create_tagged(&t1, "mirror", "one", &a) == BGJOB_RESULT_OK);
    REQUIRE(create_tagged(&t2, "save", "two", &b) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_list_jobs(NULL, 0, &total), BGJOB_RESULT_OK);
    REQUIRE(total >= 2);

    size_t cap = total + 4;
    unsigned char *buf = malloc(cap * ENTRY_V1_SIZE + 64);
    REQUIRE(buf != NULL);
    memset(buf, 0xA5, cap * ENTRY_V1_SIZE + 64);
    CHECK_RC(bgjob_list_jobs_sized((bgjob_job_entry *)buf, ENTRY_V1_SIZE, cap, &n),
             BGJOB_RESULT_OK);
    CHECK(n >= 2 && n <= cap);
    bool seen_a = false, seen_b = false;
    for (size_t i = 0; i < n; i++) {
        bgjob_job_entry e;
        memset(&e, 0, sizeof e);
        memcpy(&e, buf + i * ENTRY_V1_SIZE, ENTRY_V1_SIZE);
        if (e.id == id_of(a)) {
            seen_a = true;
            CHECK_STR(e.name, "listed");
        }
        seen_b |= e.id == id_of(b);
    }
    CHECK(seen_a && seen_b);
    /* Nothing written past the last entry. */
    bool clean = true;
    for (size_t i = n * ENTRY_V1_SIZE; i < cap * ENTRY_V1_SIZE + 64; i++)
        clean &= buf[i] == 0xA5;
    CHECK(clean);
    free(buf);

    /* The current size through the sized call equals bgjob_list_jobs. */
    bgjob_job_entry e[64];
    CHECK_RC(bgjob_list_jobs_sized(e, sizeof e[0], 64, &n), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_list_jobs_sized(e, ENTRY_V1_SIZE - 8, 1, &n), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs_sized(e, ENTRY_V1_SIZE + 1, 1, &n), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs_sized(NULL, sizeof e[0], 1, &n), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs_sized(e, sizeof e[0], 1, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs_sized(e, sizeof e[0], SIZE_MAX / 8, &n),
             BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_list_jobs_sized(NULL, ENTRY_V1_SIZE, 0, &n), BGJOB_RESULT_OK);

    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    return ok;
}

/* The debug log's lifecycle lines name the operation: "job N 'name' (op) ...". */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void log_collect(void *userdata, const char *line)
{
    (void)userdata;
    pthread_mutex_lock(&log_mu);
    size_t used = strlen(log_text);
    snprintf(log_text + used, sizeof log_text - used, "%s\n", line);
    pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    bool found = strstr(log_text, needle) != NULL;
    pthread_mutex_unlock(&log_mu);
    return found;
}

static bool test_log_lines_name_the_operation(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    CHECK_RC(bgjob_set_log_callback(log_collect, NULL, NULL), BGJOB_RESULT_OK);
    REQUIRE(create_tagged(&t, "mirror", "domain vm1", &job) == BGJOB_RESULT_OK);
    CHECK(log_has("'listed' (mirror) created"));
    CHECK_RC(bgjob_job_start(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    int64_t give_up = now_ms() + 10000;
    while (!(log_has("'listed' (mirror) started") && log_has("'listed' (mirror) completed")) &&
           now_ms() < give_up)
        sleep_ms(5);
    CHECK(log_has("'listed' (mirror) started"));
    CHECK(log_has("'listed' (mirror) completed"));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_set_log_callback(NULL, NULL, NULL), BGJOB_RESULT_OK);
    if (!ok)
        tap_diag("log: %s", log_text);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_entry_fields),
        TAP_TEST(test_operation_and_owner_readers),
        TAP_TEST(test_long_owner_cut_in_entry),
        TAP_TEST(test_sized_listing),
        TAP_TEST(test_log_lines_name_the_operation),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
