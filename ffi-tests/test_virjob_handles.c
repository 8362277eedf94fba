/*
 * test_virjob_handles.c: every function of virjob.h that takes a virJobPtr,
 * called with a NULL, destroyed, made-up or bgjob (wrong table) handle,
 * returns -1 / NULL, writes nothing and calls no driver override; a virJobPtr
 * passed to bgjob calls is an invalid bgjob handle.
 *
 * test_every_header_function_covered reads include/virjob.h and fails when it
 * declares a function this file does not know.
 */

#include "virjob_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The functions of virjob.h that take a job handle, all called below. */
static const char *const job_functions[] = {
    "virJobInitialize", "virJobUpdateRel",  "virJobUpdateAbs",  "virJobFinishCancel",
    "virJobFinishSuccess", "virJobFinishFailure", "virJobSetDomain", "virJobSetNetwork",
    "virJobGetInfo",    "virJobGetDomain",  "virJobGetNetwork", "virJobGetError",
    "virJobCancel",     "virJobDestroy",    "virJobGetConnect", "virJobGetBgjob",
};

/* The ones that take none (tested in test_virjob.c). */
static const char *const other_functions[] = { "virJobCreate" };

static atomic_int override_calls;

static int count_get_info(virJobPtr job, virJobInfoPtr info)
{
    (void)job;
    (void)info;
    atomic_fetch_add(&override_calls, 1);
    return 0;
}

static int count_job(virJobPtr job)
{
    (void)job;
    atomic_fetch_add(&override_calls, 1);
    return 0;
}

static bool expect_invalid_everywhere(virJobPtr h, const char *what)
{
    bool ok = true;
    virJobInfo info;
    static char dom_storage;

#define CALL_FAILS(expr)                                                          \
    do {                                                                          \
        int r_ = (expr);                                                          \
        if (r_ != -1) {                                                           \
            tap_diag("%s handle: %s returned %d, expected -1", what, #expr, r_);  \
            ok = false;                                                           \
        }                                                                         \
    } while (0)
#define CALL_NULL(expr)                                                           \
    do {                                                                          \
        if ((expr) != NULL) {                                                     \
            tap_diag("%s handle: %s did not return NULL", what, #expr);           \
            ok = false;                                                           \
        }                                                                         \
    } while (0)

    memset(&info, 0x5e, sizeof(info));
    CALL_FAILS(virJobGetInfo(h, &info));
    CHECK_EQ(info.state, 0x5e5e5e5e);
    CALL_FAILS(virJobGetInfo(h, NULL));
    CALL_FAILS(virJobInitialize(h, 50));
    CALL_FAILS(virJobUpdateRel(h, 1, -1, 2));
    CALL_FAILS(virJobUpdateAbs(h, 1, 1, 1));
    CALL_FAILS(virJobFinishCancel(h));
    CALL_FAILS(virJobFinishSuccess(h));
    CALL_FAILS(virJobFinishFailure(h, 1, "message"));
    CALL_FAILS(virJobFinishFailure(h, 1, NULL));
    CALL_FAILS(virJobSetDomain(h, (virDomainPtr)(void *)&dom_storage));
    CALL_FAILS(virJobSetNetwork(h, NULL));
    CALL_NULL(virJobGetDomain(h));
    CALL_NULL(virJobGetNetwork(h));
    CALL_NULL(virJobGetError(h));
    CALL_FAILS(virJobCancel(h));
    CALL_FAILS(virJobDestroy(h));
    CALL_NULL(virJobGetConnect(h));
    CALL_NULL(virJobGetBgjob(h));
#undef CALL_FAILS
#undef CALL_NULL
    return ok;
}

static bool test_null_handle(void)
{
    return expect_invalid_everywhere(NULL, "NULL");
}

/* A destroyed job, whose table slot is then reused by a new job: the old
 * handle stays dead, and the override of the new job is never called for it. */
static bool test_destroyed_and_reused_handle(void)
{
    bool ok = true;
    struct vctx c1, c2;
    virJobDriver drv = { count_get_info, count_job, count_job };

    vctx_init(&c1, 5, 1, END_SUCCESS);
    virJobPtr old = vcreate(&c1, NULL, VIR_JOB_BOUNDED);
    REQUIRE(old != NULL);
    vctx_run_through(&c1);
    CHECK_STATE(vwait(old), BGJOB_STATE_COMPLETED);
    CHECK_EQ(virJobDestroy(old), 0);
    CHECK(expect_invalid_everywhere(old, "destroyed"));

    vctx_init(&c2, 5, 1, END_SUCCESS);
    atomic_store(&override_calls, 0);
    virJobPtr fresh = vcreate(&c2, &drv, VIR_JOB_BOUNDED);
    REQUIRE(fresh != NULL);
    CHECK(fresh != old);
    CHECK(expect_invalid_everywhere(old, "stale"));
    CHECK_EQ(atomic_load(&override_calls), 0);
    vctx_run_through(&c2);
    CHECK_STATE(vwait(fresh), BGJOB_STATE_COMPLETED);
    /* The override replaces destroy; calling through it, then bgjob's own. */
    CHECK_EQ(virJobDestroy(fresh), 0);
    CHECK_EQ(atomic_load(&override_calls), 1);
    drv.destroy = NULL;
    CHECK_EQ(virJobDestroy(fresh), 0);
    CHECK(expect_invalid_everywhere(fresh, "destroyed"));
    vctx_destroy(&c1);
    vctx_destroy(&c2);
    return ok;
}

/* Made-up values, and a bgjob handle where a virJobPtr belongs (and the other
 * way round): the tag in the handle tells the tables apart. */
static bool test_made_up_and_crossed_handles(void)
{
    bool ok = true;
    static const uintptr_t bogus[] = {
        1, 2, 0xffff, (uintptr_t)-1, (uintptr_t)0x3000000100000001ull, (uintptr_t)0x1000000100000001ull,
    };
    struct vctx c;
    int32_t state = 0x5eed;

    for (size_t i = 0; i < TAP_COUNT(bogus); i++) {
        char what[32];
        snprintf(what, sizeof(what), "made-up %#jx", (uintmax_t)bogus[i]);
        CHECK(expect_invalid_everywhere((virJobPtr)bogus[i], what));
    }

    vctx_init(&c, 5, 1, END_SUCCESS);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    bgjob_job *bg = virJobGetBgjob(job);
    gate_wait(&c.started);
    CHECK(expect_invalid_everywhere((virJobPtr)(void *)bg, "bgjob"));
    CHECK_RC(bgjob_job_get_state((bgjob_job *)(void *)job, &state), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_EQ(state, 0x5eed);
    CHECK_RC(bgjob_job_destroy((bgjob_job *)(void *)job), BGJOB_RESULT_INVALID_HANDLE);
    CHECK_STATE(state_of(bg), BGJOB_STATE_RUNNING);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}

static bool listed(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

static char *read_file(const char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        FILE *f = paths[i] != NULL ? fopen(paths[i], "rb") : NULL;
        if (f == NULL)
            continue;
        char *text = NULL;
        size_t size = 0, used = 0, got;
        do {
            if (used + 4096 + 1 > size) {
                size = size * 2 + 4096 + 1;
                text = realloc(text, size);
                if (text == NULL)
                    abort();
            }
            got = fread(text + used, 1, size - used - 1, f);
            used += got;
        } while (got > 0);
        fclose(f);
        text[used] = 0;
        return text;
    }
    return NULL;
}

/*
 * Reads virjob.h and checks that every function it declares is known here,
 * and that every one taking a `virJobPtr job` is called with invalid handles
 * above: a function added to the header fails here until it is covered.
 */
static bool test_every_header_function_covered(void)
{
    bool ok = true;
    const char *const paths[] = { getenv("VIRJOB_HEADER"), "include/virjob.h",
                                  "../include/virjob.h" };
    char *text = read_file(paths, TAP_COUNT(paths));
    size_t found = 0, jobs = 0;

    if (text == NULL) {
        tap_diag("include/virjob.h not found from the current directory (set VIRJOB_HEADER)");
        return false;
    }
    /* A declaration starts a line with its return type (not a typedef, struct
     * or enum line, a comment or a macro) and names a vir function before "(". */
    for (char *p = text; p != NULL && *p != 0;) {
        char *eol = strchr(p, '\n');
        char *paren = strchr(p, '(');
        char *name = paren;

        if (paren != NULL && eol != NULL && paren > eol)
            paren = name = NULL;
        while (name != NULL && name > p &&
               (name[-1] == '_' || (name[-1] >= 'a' && name[-1] <= 'z') ||
                (name[-1] >= 'A' && name[-1] <= 'Z') || (name[-1] >= '0' && name[-1] <= '9')))
            name--;
        bool decl = name != NULL && name > p && strncmp(name, "vir", 3) == 0 &&
                    ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) &&
                    strncmp(p, "typedef", 7) != 0 && strncmp(p, "struct", 6) != 0 &&
                    strncmp(p, "enum", 4) != 0;
        if (decl) {
            char *end = strstr(paren, ");");
            char fn[64];

            if (end == NULL || (size_t)(paren - name) >= sizeof(fn)) {
                tap_diag("cannot parse the declaration at: %.60s", p);
                ok = false;
                break;
            }
            memcpy(fn, name, (size_t)(paren - name));
            fn[paren - name] = 0;
            found++;
            *end = 0;
            bool job_handle = strstr(paren, "(virJobPtr job") != NULL;
            *end = ')';
            if (job_handle) {
                jobs++;
                CHECKF(listed(fn, job_functions, TAP_COUNT(job_functions)),
                       "%s takes a job handle but is not called with invalid handles here", fn);
            } else {
                CHECKF(listed(fn, other_functions, TAP_COUNT(other_functions)),
                       "%s is declared in virjob.h but unknown to the harness", fn);
            }
            eol = strchr(end, '\n');
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    CHECK_EQ(jobs, TAP_COUNT(job_functions));
    CHECK_EQ(found, TAP_COUNT(job_functions) + TAP_COUNT(other_functions));
    free(text);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_null_handle),
        TAP_TEST(test_destroyed_and_reused_handle),
        TAP_TEST(test_made_up_and_crossed_handles),
        TAP_TEST(test_every_header_function_covered),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
