/*
 * test_strings.c: text in and out. bgjob_job_get_name, _get_phase and
 * _get_error copy snprintf-style (truncated to len - 1 bytes plus a NUL, cut
 * on a UTF-8 character boundary, *len_out = the full length; NULL buf with len 0
 * is fine, with len > 0 INVALID_ARGUMENT); non-UTF-8 input is refused;
 * bgjob_list_jobs cuts names and phases to its fixed arrays; the static names of
 * results, states and verbs; the version.
 */

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef bgjob_result (*getter)(bgjob_job *job, char *buf, size_t len, size_t *len_out);

static bgjob_result get_error_text(bgjob_job *job, char *buf, size_t len, size_t *len_out)
{
    return bgjob_job_get_error(job, NULL, buf, len, len_out);
}

/*
 * Checks one getter against the text it should return (`full`, `full_len`
 * bytes) for every buffer size from 0 to full_len + 2: the copy is the longest
 * prefix of at most len - 1 bytes that ends on a character boundary, always
 * NUL-terminated, nothing written past it, and *len_out is the full length.
 */
static bool check_snprintf(const char *what, getter get, bgjob_job *job, const char *full)
{
    bool ok = true;
    size_t full_len = strlen(full);
    char buf[300];
    size_t len_out;

    REQUIRE(full_len + 3 < sizeof(buf));
    for (size_t len = 0; len <= full_len + 2; len++) {
        size_t want = len == 0 ? 0 : (len - 1 < full_len ? len - 1 : full_len);

        /* Back off to a character boundary: never end inside a UTF-8 sequence. */
        while (want > 0 && want < full_len && ((unsigned char)full[want] & 0xc0) == 0x80)
            want--;
        memset(buf, '#', sizeof(buf));
        len_out = SIZE_MAX;
        CHECK_RC(get(job, buf, len, &len_out), BGJOB_RESULT_OK);
        CHECKF(len_out == full_len, "%s len %zu: len_out %zu, expected %zu", what, len, len_out,
               full_len);
        if (len > 0) {
            CHECKF(memcmp(buf, full, want) == 0 && buf[want] == 0,
                   "%s len %zu: got \"%.*s\", expected the first %zu bytes of \"%s\"", what, len,
                   (int)(len < sizeof(buf) ? len : sizeof(buf)), buf, want, full);
            for (size_t i = want + 1; i < sizeof(buf); i++)
                if (buf[i] != '#') {
                    tap_diag("%s len %zu: byte %zu written past the copy", what, len, i);
                    ok = false;
                    break;
                }
        } else {
            CHECKF(buf[0] == '#', "%s len 0: the buffer was written", what);
        }
    }
    /* Length only. */
    len_out = SIZE_MAX;
    CHECK_RC(get(job, NULL, 0, &len_out), BGJOB_RESULT_OK);
    CHECK_EQ(len_out, full_len);
    /* No length wanted. */
    CHECK_RC(get(job, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_STR(buf, full);
    /* A NULL buffer with a length is refused, and len_out is not written. */
    len_out = SIZE_MAX;
    CHECK_RC(get(job, NULL, 1, &len_out), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(get(job, NULL, 100, &len_out), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(len_out, SIZE_MAX);
    if (!ok)
        tap_diag("in %s of \"%s\"", what, full);
    return ok;
}

static bool test_name_snprintf(void)
{
    static const char *const names[] = {
        "copy-disk-image-vda",
        "h\xc3\xa9llo",                        /* é: two bytes */
        "\xe2\x82\xac\xe2\x82\xac-euro",          /* €: three bytes */
        "\xf0\x9f\x92\xbe disk",                 /* 💾: four bytes */
        "a",
    };
    bool ok = true;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct tracker t;
        bgjob_job *job = NULL;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                            names[i], &job),
                 BGJOB_RESULT_OK);
        if (job == NULL)
            continue;
        CHECK(check_snprintf("bgjob_job_get_name", bgjob_job_get_name, job, names[i]));
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    return ok;
}

static bool test_default_and_empty_names(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    char want[64];

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    snprintf(want, sizeof(want), "job-%llu", (unsigned long long)id_of(job));
    CHECK(check_snprintf("default name", bgjob_job_get_name, job, want));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* An empty name is a name: kept as given. */
    tracker_init(&t);
    job = NULL;
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, "",
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK(check_snprintf("empty name", bgjob_job_get_name, job, ""));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_non_utf8_name_refused(void)
{
    static const char *const bad[] = {
        "\xff",
        "caf\xc3",             /* truncated sequence */
        "\xc0\xaf",            /* overlong '/' */
        "a\xed\xa0\x80z",      /* a UTF-16 surrogate */
    };
    bool ok = true;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tracker t;
        bgjob_job *job = (bgjob_job *)&t;

        tracker_init(&t);
        CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, bad[i], &job),
                 BGJOB_RESULT_INVALID_ARGUMENT);
        CHECK(job == (bgjob_job *)&t);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK_EQ(atomic_load(&t.runs), 0);
    }
    return ok;
}

static bool test_phase(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    /* Empty before the worker sets one. */
    CHECK(check_snprintf("initial phase", bgjob_job_get_phase, job, ""));
    CHECK_RC(bgjob_job_set_phase(job, "copying"), BGJOB_RESULT_OK);
    CHECK(check_snprintf("phase", bgjob_job_get_phase, job, "copying"));
    CHECK_RC(bgjob_job_set_phase(job, "nettoyage \xc3\xa0 la fin"), BGJOB_RESULT_OK);
    CHECK(check_snprintf("utf-8 phase", bgjob_job_get_phase, job, "nettoyage \xc3\xa0 la fin"));
    /* Refused input changes nothing. */
    CHECK_RC(bgjob_job_set_phase(job, "bad \xff"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_phase(job, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(check_snprintf("phase after refusals", bgjob_job_get_phase, job,
                         "nettoyage \xc3\xa0 la fin"));
    CHECK_RC(bgjob_job_set_phase(job, ""), BGJOB_RESULT_OK);
    CHECK(check_snprintf("cleared phase", bgjob_job_get_phase, job, ""));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t.frees), 1);
    return ok;
}

static bool test_error_text(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = -1;
    size_t len = SIZE_MAX;
    const char *msg = "write failed: No space left on device \xe2\x80\x94 /var/lib/images";

    tracker_init(&t);
    t.err_code = 28;
    t.err_msg = msg;
    t.rc = 28;
    CHECK_RC(job_create(&t, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK(check_snprintf("error", get_error_text, job, msg));
    /* code_out is written even with no buffer. */
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 0, &len), BGJOB_RESULT_OK);
    CHECK_EQ(code, 28);
    CHECK_EQ(len, strlen(msg));
    /* A NULL buffer with a length writes no output at all. */
    code = -1;
    CHECK_RC(bgjob_job_get_error(job, &code, NULL, 5, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_EQ(code, -1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* set_error: code 0 and non-UTF-8 messages are refused and change nothing; a
 * NULL message means none; the last call wins. */
static bool test_set_error_arguments(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;
    int32_t code = -1;
    char buf[64];

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                        &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 0);
    CHECK_STR(buf, "");
    CHECK_RC(bgjob_job_set_error(job, 0, "no code"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_set_error(job, 5, "bad \xff"), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 0);
    CHECK_STR(buf, "");
    CHECK_RC(bgjob_job_set_error(job, 5, "first"), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_error(job, 6, "second"), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, 6);
    CHECK_STR(buf, "second");
    CHECK_RC(bgjob_job_set_error(job, -3, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_get_error(job, &code, buf, sizeof(buf), NULL), BGJOB_RESULT_OK);
    CHECK_EQ(code, -3);
    CHECK_STR(buf, "");
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* bgjob_list_jobs copies names and phases into 64-byte arrays: cut to 63 bytes
 * on a character boundary, always NUL-terminated. */
static bool test_list_entry_text(void)
{
    bool ok = true;
    char long_name[100], utf8_name[80];
    struct tracker t1, t2;
    bgjob_job *a = NULL, *b = NULL;
    uint64_t ida, idb;
    bool seen_a = false, seen_b = false;

    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = 0;
    /* 62 ASCII bytes and an é: 64 bytes, the é would straddle byte 63. */
    memset(utf8_name, 'u', 62);
    memcpy(utf8_name + 62, "\xc3\xa9", 3);

    tracker_init(&t1);
    tracker_init(&t2);
    CHECK_RC(job_create(&t1, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        long_name, &a),
             BGJOB_RESULT_OK);
    CHECK_RC(job_create(&t2, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED,
                        utf8_name, &b),
             BGJOB_RESULT_OK);
    REQUIRE(a != NULL && b != NULL);
    CHECK_RC(bgjob_job_set_phase(a, utf8_name), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_set_phase(b, "short"), BGJOB_RESULT_OK);
    ida = id_of(a);
    idb = id_of(b);

    size_t n = 0, cap;
    CHECK_RC(bgjob_list_jobs(NULL, 0, &n), BGJOB_RESULT_OK);
    cap = n + 8;
    bgjob_job_entry *e = calloc(cap, sizeof(*e));
    REQUIRE(e != NULL);
    memset(e, '#', cap * sizeof(*e));
    CHECK_RC(bgjob_list_jobs(e, cap, &n), BGJOB_RESULT_OK);
    CHECK(n <= cap);
    for (size_t i = 0; i < n && i < cap; i++) {
        if (i > 0)
            CHECKF(e[i].id > e[i - 1].id, "entries not in id order at %zu", i);
        if (e[i].id == ida) {
            seen_a = true;
            CHECK_EQ(strlen(e[i].name), BGJOB_ENTRY_TEXT_SIZE - 1);
            CHECK(strncmp(e[i].name, long_name, BGJOB_ENTRY_TEXT_SIZE - 1) == 0);
            CHECK_EQ(strlen(e[i].phase), 62);
            CHECK(strncmp(e[i].phase, utf8_name, 62) == 0);
            CHECK_STATE(e[i].state, BGJOB_STATE_CREATED);
            CHECK(e[i].age_ms >= 0);
            CHECK_EQ(e[i].since_progress_ms, -1);
        } else if (e[i].id == idb) {
            seen_b = true;
            CHECK_EQ(strlen(e[i].name), 62);
            CHECK(strncmp(e[i].name, utf8_name, 62) == 0);
            CHECK_STR(e[i].phase, "short");
        }
    }
    CHECK(seen_a);
    CHECK(seen_b);
    /* Entries past the count are not written. */
    if (n < cap)
        CHECK(((unsigned char *)&e[n])[0] == '#');

    /* A short array: filled to capacity, the full count reported. */
    memset(e, '#', cap * sizeof(*e));
    size_t n1 = 0;
    CHECK_RC(bgjob_list_jobs(e, 1, &n1), BGJOB_RESULT_OK);
    CHECK(n1 >= 2);
    CHECK(e[0].id != 0);
    CHECK(((unsigned char *)&e[1])[0] == '#');
    free(e);

    CHECK_RC(bgjob_job_destroy(a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(b), BGJOB_RESULT_OK);
    CHECK(poll_unlisted(ida));
    CHECK(poll_unlisted(idb));
    return ok;
}

static bool test_result_names(void)
{
    static const int32_t unknown[] = { BGJOB_RESULT_COUNT, BGJOB_RESULT_COUNT + 1, 100, -1,
                                       INT32_MIN, INT32_MAX };
    bool ok = true;

    for (int32_t r = BGJOB_RESULT_OK; r < BGJOB_RESULT_COUNT; r++) {
        const char *s = bgjob_result_str(r);

        CHECK(s != NULL);
        if (s == NULL)
            continue;
        CHECKF(strlen(s) > 0 && strcmp(s, "unknown result") != 0, "result %d is named \"%s\"",
               r, s);
        /* Static: the same string every time. */
        CHECK(bgjob_result_str(r) == s);
        for (int32_t q = BGJOB_RESULT_OK; q < r; q++)
            CHECKF(strcmp(bgjob_result_str(q), s) != 0, "results %d and %d share a name", q, r);
    }
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        CHECK_STR(bgjob_result_str(unknown[i]), "unknown result");
    return ok;
}

static bool test_state_and_verb_names(void)
{
    static const char *const states[] = { "created", "running", "paused",    "waiting",
                                          "completed", "failed", "cancelled", "ready",
                                          "standby", "pending", "aborting" };
    static const char *const verbs[] = { "start",   "cancel", "pause",  "resume",
                                         "destroy", "detach", "update", "result", "drain",
                                         "finalize", "complete" };
    static const int32_t unknown[] = { -1, 100, INT32_MIN, INT32_MAX };
    bool ok = true;

    _Static_assert(sizeof(states) / sizeof(states[0]) == BGJOB_STATE_COUNT, "state names");
    _Static_assert(sizeof(verbs) / sizeof(verbs[0]) == BGJOB_VERB_COUNT, "verb names");
    for (int32_t s = 0; s < BGJOB_STATE_COUNT; s++) {
        CHECK_STR(bgjob_state_str(s), states[s]);
        CHECK(bgjob_state_str(s) == bgjob_state_str(s));
    }
    for (int32_t v = 0; v < BGJOB_VERB_COUNT; v++) {
        CHECK_STR(bgjob_verb_str(v), verbs[v]);
        CHECK(bgjob_verb_str(v) == bgjob_verb_str(v));
    }
    CHECK_STR(bgjob_state_str(BGJOB_STATE_COUNT), "unknown");
    CHECK_STR(bgjob_verb_str(BGJOB_VERB_COUNT), "unknown");
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        CHECK_STR(bgjob_state_str(unknown[i]), "unknown");
        CHECK_STR(bgjob_verb_str(unknown[i]), "unknown");
    }
    return ok;
}

static bool test_version(void)
{
    bool ok = true;
    char want[32];

    CHECK(bgjob_version() != NULL);
    CHECK_STR(bgjob_version(), BGJOB_VERSION_STRING);
    snprintf(want, sizeof(want), "%d.%d.%d", BGJOB_VERSION_MAJOR, BGJOB_VERSION_MINOR,
             BGJOB_VERSION_PATCH);
    CHECK_STR(BGJOB_VERSION_STRING, want);
    CHECK(bgjob_version() == bgjob_version());
    CHECK_EQ(bgjob_abi_version(), BGJOB_ABI_VERSION);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_name_snprintf),
        TAP_TEST(test_default_and_empty_names),
        TAP_TEST(test_non_utf8_name_refused),
        TAP_TEST(test_phase),
        TAP_TEST(test_error_text),
        TAP_TEST(test_set_error_arguments),
        TAP_TEST(test_list_entry_text),
        TAP_TEST(test_result_names),
        TAP_TEST(test_state_and_verb_names),
        TAP_TEST(test_version),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
