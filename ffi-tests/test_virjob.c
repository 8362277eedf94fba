/*
 * test_virjob.c: the rules of virjob.h (the libvirt virJob proposal):
 * progress as the proposal's example worker reports it, clamping, outcomes with and
 * without finish calls, finish twice, the libvirt-shaped error, freeData,
 * domain and network results, the connection, and the bgjob handle.
 *
 * Built twice by the Makefile: with libvirt's headers and without them.
 */

#include "virjob_util.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The job's bgjob state, or -1. */
static int32_t bg_state(virJobPtr job)
{
    int32_t s = -1;
    if (bgjob_job_get_state(virJobGetBgjob(job), &s) != BGJOB_RESULT_OK)
        return -1;
    return s;
}

/* The proposal's example worker: virJobInitialize(job, 50), then virJobUpdateRel(job, 1,
 * -1, 2) per step. After 10 steps 40 s and 20 % are left to go; after 50, 0 s
 * and 100 %, while the job is still running. */
static bool test_seed_progress(void)
{
    bool ok = true;
    struct vctx c10, c50;
    virJobInfo info;

    vctx_init(&c10, 50, 10, END_SUCCESS);
    vctx_init(&c50, 50, 50, END_SUCCESS);
    virJobPtr j10 = vcreate(&c10, NULL, VIR_JOB_BOUNDED);
    virJobPtr j50 = vcreate(&c50, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j10 != NULL && j50 != NULL);
    gate_wait(&c10.started);
    gate_wait(&c50.started);

    CHECK(vinfo(j10, &info));
    CHECK_EQ(info.type, VIR_JOB_BOUNDED);
    CHECK_EQ(info.state, VIR_JOB_RUNNING);
    CHECK_EQ(info.remainingTime, 40);
    CHECK_EQ(info.percentComplete, 20);

    CHECK(vinfo(j50, &info));
    CHECK_EQ(info.state, VIR_JOB_RUNNING);
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(virJobDestroy(j50), -1); /* still running */

    vctx_run_through(&c10);
    vctx_run_through(&c50);
    CHECK_STATE(vwait(j10), BGJOB_STATE_COMPLETED);
    CHECK_STATE(vwait(j50), BGJOB_STATE_COMPLETED);
    CHECK(vinfo(j10, &info));
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(atomic_load(&c10.update_fails) + atomic_load(&c50.update_fails), 0);
    CHECK_EQ(atomic_load(&c10.finish_rc), 0);
    CHECK_EQ(atomic_load(&c10.frees), 1);
    CHECK_EQ(atomic_load(&c10.free_early), 0);
    CHECK(atomic_load(&c10.seen) == j10);

    CHECK_EQ(virJobDestroy(j10), 0);
    CHECK_EQ(virJobDestroy(j10), -1);
    CHECK_EQ(virJobDestroy(j50), 0);
    CHECK_EQ(atomic_load(&c50.frees), 1);
    vctx_destroy(&c10);
    vctx_destroy(&c50);
    return ok;
}

/* Values are clamped: percent to 0..100, remaining time to >= 0, with no
 * overflow at the int limits. elapsed arguments do not make runningTime. Any
 * thread may update. Nothing set: 0 s and 0 %. */
static bool test_clamping(void)
{
    bool ok = true;
    struct vctx c;
    virJobInfo info;

    vctx_init(&c, -1, 0, END_SUCCESS);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);

    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 0); /* unknown */
    CHECK_EQ(info.percentComplete, 0);

    CHECK_EQ(virJobUpdateRel(job, 0, 0, 150), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(virJobUpdateRel(job, 0, 0, -300), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.percentComplete, 0);

    CHECK_EQ(virJobInitialize(job, -7), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(virJobInitialize(job, 30), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 30);

    CHECK_EQ(virJobUpdateRel(job, INT_MAX, INT_MIN, INT_MIN), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(info.percentComplete, 0);
    CHECK_EQ(virJobUpdateRel(job, INT_MIN, INT_MAX, INT_MAX), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, INT_MAX);
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(virJobUpdateRel(job, 0, INT_MAX, 0), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, (unsigned)INT_MAX * 2u);

    CHECK_EQ(virJobUpdateAbs(job, 1000000, 12, 250), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 12);
    CHECK_EQ(info.percentComplete, 100);
    CHECK(info.runningTime < 1000000);
    CHECK_EQ(virJobUpdateAbs(job, -1, -5, -1), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(info.percentComplete, 0);
    CHECK_EQ(virJobUpdateAbs(job, 0, 7, 42), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 7);
    CHECK_EQ(info.percentComplete, 42);
    CHECK_EQ(info.state, VIR_JOB_RUNNING);

    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    /* Finished: updates refused, info fixed. */
    CHECK_EQ(virJobUpdateRel(job, 1, -1, 2), -1);
    CHECK_EQ(virJobUpdateAbs(job, 1, 1, 1), -1);
    CHECK_EQ(virJobInitialize(job, 5), -1);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.remainingTime, 0);
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}

/* Unbounded jobs report running time only: 0 % and 0 s whatever the worker
 * says, also once complete. */
static bool test_unbounded(void)
{
    bool ok = true;
    struct vctx c;
    virJobInfo info;

    vctx_init(&c, 50, 10, END_SUCCESS);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_UNBOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.type, VIR_JOB_UNBOUNDED);
    CHECK_EQ(info.state, VIR_JOB_RUNNING);
    CHECK_EQ(info.percentComplete, 0);
    CHECK_EQ(info.remainingTime, 0);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.type, VIR_JOB_UNBOUNDED);
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK_EQ(info.percentComplete, 0);
    CHECK_EQ(atomic_load(&c.update_fails), 0);
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}

/* A worker returning without a finish call: COMPLETE, or CANCELLED when
 * cancel was requested. */
static bool test_return_without_finish(void)
{
    bool ok = true;
    struct vctx done, cancelled;
    virJobInfo info;

    vctx_init(&done, 10, 1, END_NONE);
    vctx_init(&cancelled, 10, 1, END_NONE);
    virJobPtr j1 = vcreate(&done, NULL, VIR_JOB_BOUNDED);
    virJobPtr j2 = vcreate(&cancelled, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j1 != NULL && j2 != NULL);
    gate_wait(&cancelled.started);
    CHECK_EQ(virJobCancel(j2), 0);
    CHECK(vinfo(j2, &info));
    CHECK_EQ(info.state, VIR_JOB_RUNNING); /* the worker decides */
    vctx_run_through(&done);
    vctx_run_through(&cancelled);

    CHECK_STATE(vwait(j1), BGJOB_STATE_COMPLETED);
    CHECK(vinfo(j1, &info));
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK(virJobGetError(j1) == NULL);

    CHECK_STATE(vwait(j2), BGJOB_STATE_CANCELLED);
    CHECK(vinfo(j2, &info));
    CHECK_EQ(info.state, VIR_JOB_CANCELLED);
    CHECK_EQ(info.remainingTime, 0);
    CHECK(virJobGetError(j2) == NULL);

    CHECK_EQ(atomic_load(&done.frees) + atomic_load(&cancelled.frees), 2);
    CHECK_EQ(virJobDestroy(j1), 0);
    CHECK_EQ(virJobDestroy(j2), 0);
    vctx_destroy(&done);
    vctx_destroy(&cancelled);
    return ok;
}

/* virJobFinishSuccess after a cancel request: COMPLETE (the proposal: "a job
 * may still complete even if it was cancelled"); bgjob still shows the
 * request. */
static bool test_success_after_cancel(void)
{
    bool ok = true;
    struct vctx c;
    virJobInfo info;
    bgjob_info bi;

    vctx_init(&c, 50, 25, END_SUCCESS);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);
    CHECK_EQ(virJobCancel(job), 0);
    CHECK_EQ(virJobCancel(job), 0); /* twice: still fine */
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&c.finish_rc), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK_EQ(info.percentComplete, 100);
    CHECK(info_of(virJobGetBgjob(job), &bi));
    CHECK(bi.cancel_requested);
    CHECK(virJobGetError(job) == NULL);
    CHECK_EQ(virJobCancel(job), 0); /* finished: nothing to do */
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}

/* virJobFinishCancel: 0 and no change without a cancel request; 1 with one,
 * and the job is CANCELLED at once, before the worker returns. Then further
 * finishes and updates are refused, and destroy releases the job; freeData
 * runs once the worker returns. */
static bool test_finish_cancel(void)
{
    bool ok = true;
    struct vctx no, yes;
    virJobInfo info;

    vctx_init(&no, 50, 5, END_CANCEL_CHECK);
    no.second = END_SUCCESS;
    virJobPtr j1 = vcreate(&no, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j1 != NULL);
    vctx_run_through(&no);
    CHECK_STATE(vwait(j1), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&no.finish_rc), 0);
    CHECK_EQ(atomic_load(&no.second_rc), 0);
    CHECK_EQ(virJobDestroy(j1), 0);

    vctx_init(&yes, 50, 5, END_CANCEL_CHECK);
    yes.second = END_SUCCESS;
    virJobPtr j2 = vcreate(&yes, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j2 != NULL);
    gate_wait(&yes.started);
    CHECK_EQ(virJobCancel(j2), 0);
    gate_open(&yes.go);
    gate_wait(&yes.finished);
    CHECK_EQ(atomic_load(&yes.finish_rc), 1);
    CHECK_EQ(atomic_load(&yes.second_rc), -1); /* finish twice */
    CHECK(vinfo(j2, &info));
    CHECK_EQ(info.state, VIR_JOB_CANCELLED);
    CHECK_EQ(info.remainingTime, 0);
    CHECK_STATE(bg_state(j2), BGJOB_STATE_RUNNING); /* the worker has not returned */
    CHECK_EQ(virJobUpdateRel(j2, 1, -1, 2), -1);
    CHECK_EQ(virJobFinishCancel(j2), -1);
    CHECK_EQ(virJobSetDomain(j2, NULL), -1);

    CHECK_EQ(virJobDestroy(j2), 0);
    CHECK_EQ(atomic_load(&yes.frees), 0);
    CHECK_EQ(virJobGetInfo(j2, &info), -1);
    gate_open(&yes.leave);
    CHECK(poll_int_eq(&yes.frees, 1));
    CHECK_EQ(atomic_load(&yes.free_early), 0);
    vctx_destroy(&no);
    vctx_destroy(&yes);
    return ok;
}

/* Finishing twice is refused whatever the pair, and the first outcome stays. */
static bool test_finish_twice(void)
{
    bool ok = true;
    static const struct {
        enum vend first, second;
        int want_state;
        int want_bg;
    } pairs[] = {
        { END_SUCCESS, END_SUCCESS, VIR_JOB_COMPLETE, BGJOB_STATE_COMPLETED },
        { END_SUCCESS, END_FAILURE, VIR_JOB_COMPLETE, BGJOB_STATE_COMPLETED },
        { END_FAILURE, END_SUCCESS, VIR_JOB_FAILED, BGJOB_STATE_FAILED },
        { END_FAILURE, END_FAILURE, VIR_JOB_FAILED, BGJOB_STATE_FAILED },
        { END_FAILURE, END_CANCEL_CHECK, VIR_JOB_FAILED, BGJOB_STATE_FAILED },
        { END_SUCCESS, END_CANCEL_CHECK, VIR_JOB_COMPLETE, BGJOB_STATE_COMPLETED },
    };

    for (size_t i = 0; i < TAP_COUNT(pairs); i++) {
        struct vctx c;
        virJobInfo info;

        vctx_init(&c, 5, 1, pairs[i].first);
        c.second = pairs[i].second;
        c.fail_code = 38;
        c.fail_msg = "first";
        virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
        REQUIRE(job != NULL);
        vctx_run_through(&c);
        CHECK_STATE(vwait(job), pairs[i].want_bg);
        CHECKF(atomic_load(&c.finish_rc) == 0, "pair %zu: first finish returned %d", i,
               atomic_load(&c.finish_rc));
        CHECKF(atomic_load(&c.second_rc) == -1, "pair %zu: second finish returned %d", i,
               atomic_load(&c.second_rc));
        CHECK(vinfo(job, &info));
        CHECK_EQ(info.state, pairs[i].want_state);
        if (pairs[i].want_state == VIR_JOB_FAILED) {
            virErrorPtr e = virJobGetError(job);
            CHECK(e != NULL && e->code == 38 && strcmp(e->message, "first") == 0);
        }
        CHECK_EQ(virJobDestroy(job), 0);
        vctx_destroy(&c);
    }
    return ok;
}

/* virJobGetError: libvirt's virError with code and message from
 * virJobFinishFailure, level VIR_ERR_ERROR (2), domain VIR_FROM_NONE (0), the
 * job's connection, the rest NULL/0; the same pointer every time; readable as
 * soon as the failure is declared. */
static bool test_error(void)
{
    bool ok = true;
    struct vctx c;
    virJobInfo info;

    vctx_init(&c, 50, 3, END_FAILURE);
    c.fail_code = 38; /* VIR_ERR_SYSTEM_ERROR */
    c.fail_msg = "cannot write save file: No space left on device";
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);
    CHECK(virJobGetError(job) == NULL); /* running */
    gate_open(&c.go);
    gate_wait(&c.finished);
    CHECK_EQ(atomic_load(&c.finish_rc), 0);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_FAILED);
    virErrorPtr e = virJobGetError(job);
    if (e == NULL) {
        tap_diag("virJobGetError returned NULL for a FAILED job");
        gate_open(&c.leave);
        vwait(job);
        virJobDestroy(job);
        return false;
    }
    CHECK_EQ(e->code, 38);
    CHECK_STR(e->message, c.fail_msg);
    CHECK_EQ(e->domain, 0);
    CHECK_EQ(e->level, 2);
    CHECK(e->str1 == NULL && e->str2 == NULL && e->str3 == NULL);
    CHECK_EQ(e->int1, 0);
    CHECK_EQ(e->int2, 0);
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK(e->conn == VCONN);
    CHECK(e->dom == NULL);
    CHECK(e->net == NULL);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    gate_open(&c.leave);
    CHECK_STATE(vwait(job), BGJOB_STATE_FAILED);
    CHECK(virJobGetError(job) == e);
    CHECK_STR(e->message, c.fail_msg);
    CHECK(virJobGetDomain(job) == NULL);
    {
        /* bgjob sees the same error. */
        int32_t code = 0;
        char buf[128];
        CHECK_RC(bgjob_job_get_error(virJobGetBgjob(job), &code, buf, sizeof(buf), NULL),
                 BGJOB_RESULT_OK);
        CHECK_EQ(code, 38);
        CHECK_STR(buf, c.fail_msg);
    }
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}

/* virJobFinishFailure refuses code 0 and a message that is not UTF-8, and
 * records nothing (the worker can still succeed); a NULL message gets a
 * generic one. */
static bool test_failure_arguments(void)
{
    bool ok = true;
    static const struct {
        int code;
        const char *msg;
        int want_rc;
    } cases[] = {
        { 0, "zero", -1 },
        { 5, "\xff\xfe not utf-8", -1 },
        { 9, NULL, 0 },
    };

    for (size_t i = 0; i < TAP_COUNT(cases); i++) {
        struct vctx c;

        vctx_init(&c, 5, 1, END_FAILURE);
        c.second = END_SUCCESS;
        c.fail_code = cases[i].code;
        c.fail_msg = cases[i].msg;
        virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
        REQUIRE(job != NULL);
        vctx_run_through(&c);
        int32_t end = vwait(job);
        CHECKF(atomic_load(&c.finish_rc) == cases[i].want_rc, "case %zu: finish returned %d", i,
               atomic_load(&c.finish_rc));
        if (cases[i].want_rc == -1) {
            CHECK_STATE(end, BGJOB_STATE_COMPLETED);
            CHECK_EQ(atomic_load(&c.second_rc), 0);
            CHECK(virJobGetError(job) == NULL);
        } else {
            CHECK_STATE(end, BGJOB_STATE_FAILED);
            virErrorPtr e = virJobGetError(job);
            CHECK(e != NULL && e->code == 9 && e->message != NULL && e->message[0] != 0);
        }
        CHECK_EQ(virJobDestroy(job), 0);
        vctx_destroy(&c);
    }
    return ok;
}

/* A failure declared after a cancel request is a cancelled job (no error); a
 * cancel after a declared failure changes nothing. */
static bool test_failure_and_cancel(void)
{
    bool ok = true;
    struct vctx c1, c2;
    virJobInfo info;
    bgjob_info bi;

    vctx_init(&c1, 5, 1, END_FAILURE);
    c1.fail_code = 1;
    c1.fail_msg = "late";
    virJobPtr j1 = vcreate(&c1, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j1 != NULL);
    gate_wait(&c1.started);
    CHECK_EQ(virJobCancel(j1), 0);
    vctx_run_through(&c1);
    CHECK_STATE(vwait(j1), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c1.finish_rc), 0);
    CHECK(vinfo(j1, &info));
    CHECK_EQ(info.state, VIR_JOB_CANCELLED);
    CHECK(virJobGetError(j1) == NULL);
    CHECK_EQ(virJobDestroy(j1), 0);

    vctx_init(&c2, 5, 1, END_FAILURE);
    c2.fail_code = 1;
    c2.fail_msg = "first";
    virJobPtr j2 = vcreate(&c2, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j2 != NULL);
    gate_open(&c2.go);
    gate_wait(&c2.finished);
    CHECK_EQ(virJobCancel(j2), 0);
    gate_open(&c2.leave);
    CHECK_STATE(vwait(j2), BGJOB_STATE_FAILED);
    CHECK(vinfo(j2, &info));
    CHECK_EQ(info.state, VIR_JOB_FAILED);
    CHECK(info_of(virJobGetBgjob(j2), &bi));
    CHECK(!bi.cancel_requested);
    CHECK(virJobGetError(j2) != NULL);
    CHECK_EQ(virJobDestroy(j2), 0);
    vctx_destroy(&c1);
    vctx_destroy(&c2);
    return ok;
}

static atomic_int plain_frees;
static void plain_free(void *data)
{
    (void)data;
    atomic_fetch_add(&plain_frees, 1);
}

static void never_worker(virJobPtr job, void *data)
{
    (void)job;
    (void)data;
    abort();
}

/* freeData runs exactly once: after the worker returned (every case above
 * checks free_early == 0), or before a failing create returns NULL. NULL
 * freeData is fine. */
static bool test_free_data(void)
{
    bool ok = true;
    struct vctx c;

    atomic_store(&plain_frees, 0);
    CHECK(virJobCreate(VCONN, NULL, NULL, plain_free, &plain_frees, VIR_JOB_BOUNDED) == NULL);
    CHECK_EQ(atomic_load(&plain_frees), 1);
    CHECK(virJobCreate(VCONN, NULL, never_worker, plain_free, &plain_frees, 2) == NULL);
    CHECK_EQ(atomic_load(&plain_frees), 2);
    CHECK(virJobCreate(VCONN, NULL, never_worker, plain_free, &plain_frees, -1) == NULL);
    CHECK_EQ(atomic_load(&plain_frees), 3);
    CHECK(virJobCreate(NULL, NULL, NULL, NULL, NULL, VIR_JOB_BOUNDED) == NULL);

    vctx_init(&c, 5, 1, END_SUCCESS);
    virJobPtr job = virJobCreate(NULL, NULL, vworker, NULL, &c, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    CHECK(virJobGetConnect(job) == NULL);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&c.frees), 0); /* there was no free function */
    CHECK_EQ(virJobDestroy(job), 0);

    vctx_init(&c, 5, 1, END_SUCCESS);
    job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_open(&c.go);
    gate_wait(&c.finished);
    CHECK_EQ(atomic_load(&c.frees), 0); /* finished, not yet returned */
    gate_open(&c.leave);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&c.frees), 1);
    CHECK_EQ(atomic_load(&c.free_early), 0);
    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_EQ(atomic_load(&c.frees), 1);
    vctx_destroy(&c);
    return ok;
}

/* Domain and network results: NULL unless set and the job COMPLETE. */
static bool test_domain_and_network(void)
{
    bool ok = true;
    static char dom_storage, net_storage;
    virDomainPtr dom = (virDomainPtr)(void *)&dom_storage;
    virNetworkPtr net = (virNetworkPtr)(void *)&net_storage;
    struct vctx ok_c, fail_c, none_c;

    vctx_init(&ok_c, 5, 1, END_SUCCESS);
    vctx_init(&fail_c, 5, 1, END_FAILURE);
    fail_c.fail_code = 1;
    vctx_init(&none_c, 5, 1, END_SUCCESS);
    virJobPtr j_ok = vcreate(&ok_c, NULL, VIR_JOB_BOUNDED);
    virJobPtr j_fail = vcreate(&fail_c, NULL, VIR_JOB_BOUNDED);
    virJobPtr j_none = vcreate(&none_c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(j_ok != NULL && j_fail != NULL && j_none != NULL);
    gate_wait(&ok_c.started);
    gate_wait(&fail_c.started);

    CHECK_EQ(virJobSetDomain(j_ok, dom), 0);
    CHECK_EQ(virJobSetNetwork(j_ok, net), 0);
    CHECK_EQ(virJobSetDomain(j_fail, dom), 0);
    CHECK_EQ(virJobSetNetwork(j_fail, net), 0);
    CHECK(virJobGetDomain(j_ok) == NULL); /* running */
    CHECK(virJobGetNetwork(j_ok) == NULL);

    vctx_run_through(&ok_c);
    vctx_run_through(&fail_c);
    vctx_run_through(&none_c);
    CHECK_STATE(vwait(j_ok), BGJOB_STATE_COMPLETED);
    CHECK_STATE(vwait(j_fail), BGJOB_STATE_FAILED);
    CHECK_STATE(vwait(j_none), BGJOB_STATE_COMPLETED);
    CHECK(virJobGetDomain(j_ok) == dom);
    CHECK(virJobGetNetwork(j_ok) == net);
    CHECK(virJobGetDomain(j_fail) == NULL);
    CHECK(virJobGetNetwork(j_fail) == NULL);
    CHECK(virJobGetDomain(j_none) == NULL);
    CHECK(virJobGetNetwork(j_none) == NULL);
    CHECK_EQ(virJobSetDomain(j_ok, NULL), -1); /* finished */
    CHECK_EQ(virJobSetNetwork(j_ok, NULL), -1);
    CHECK(virJobGetDomain(j_ok) == dom);

    CHECK_EQ(virJobDestroy(j_ok), 0);
    CHECK_EQ(virJobDestroy(j_fail), 0);
    CHECK_EQ(virJobDestroy(j_none), 0);
    CHECK(virJobGetDomain(j_ok) == NULL);
    vctx_destroy(&ok_c);
    vctx_destroy(&fail_c);
    vctx_destroy(&none_c);
    return ok;
}

struct hook_count {
    atomic_int calls;
    atomic_int frees;
};

static void count_hook(void *userdata, bgjob_job *job)
{
    (void)job;
    atomic_fetch_add(&((struct hook_count *)userdata)->calls, 1);
}

static void count_hook_free(void *userdata)
{
    atomic_fetch_add(&((struct hook_count *)userdata)->frees, 1);
}

/* The bgjob handle: bgjob calls work on the same job (state, name, pause,
 * cancel hooks run by virJobCancel); virJobDestroy invalidates it; releasing
 * it first leaves the virJob usable. */
static bool test_bgjob_handle(void)
{
    bool ok = true;
    struct vctx c, c2;
    virJobInfo info;
    uint64_t hook_id = 0;
    struct hook_count hc;
    char name[32];

    atomic_init(&hc.calls, 0);
    atomic_init(&hc.frees, 0);
    vctx_init(&c, 5, 1, END_CANCEL_CHECK);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    bgjob_job *bg = virJobGetBgjob(job);
    CHECK(bg != NULL && (void *)bg != (void *)job);
    CHECK(virJobGetBgjob(job) == bg);
    CHECK(virJobGetConnect(job) == VCONN);
    gate_wait(&c.started);

    CHECK_STATE(bg_state(job), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_get_name(bg, name, sizeof(name), NULL), BGJOB_RESULT_OK);
    CHECK_STR(name, "virjob");
    CHECK_RC(bgjob_job_pause(bg), BGJOB_RESULT_OK);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_RUNNING); /* paused reports RUNNING */
    CHECK_RC(bgjob_job_resume(bg), BGJOB_RESULT_OK);

    CHECK_RC(bgjob_job_add_cancel_hook(bg, count_hook, &hc, count_hook_free, &hook_id),
             BGJOB_RESULT_OK);
    CHECK_EQ(virJobCancel(job), 0);
    CHECK_EQ(atomic_load(&hc.calls), 1); /* called by virJobCancel, on this thread */
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.finish_rc), 1);
    CHECK_EQ(atomic_load(&hc.calls), 1);
    CHECK_EQ(atomic_load(&hc.frees), 1);
    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_RC(bgjob_job_get_state(bg, &(int32_t){ 0 }), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(virJobGetBgjob(job) == NULL);

    /* Releasing the bgjob handle first: the virJob stays usable. */
    vctx_init(&c2, 5, 1, END_SUCCESS);
    job = vcreate(&c2, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    bg = virJobGetBgjob(job);
    vctx_run_through(&c2);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(bg), BGJOB_RESULT_OK);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_EQ(virJobDestroy(job), -1);
    vctx_destroy(&c);
    vctx_destroy(&c2);
    return ok;
}

/* Destroy: -1 while RUNNING (also when paused), the job untouched; 0 once
 * finished; -1 again after. NULL info: -1. */
static bool test_destroy_and_info_arguments(void)
{
    bool ok = true;
    struct vctx c;
    virJobInfo info;

    vctx_init(&c, 5, 1, END_SUCCESS);
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);
    CHECK_EQ(virJobDestroy(job), -1);
    CHECK_RC(bgjob_job_pause(virJobGetBgjob(job)), BGJOB_RESULT_OK);
    CHECK_EQ(virJobDestroy(job), -1);
    CHECK_RC(bgjob_job_resume(virJobGetBgjob(job)), BGJOB_RESULT_OK);
    CHECK_EQ(virJobGetInfo(job, NULL), -1);
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_RUNNING);
    CHECK_EQ(info.remainingTime, 4);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_EQ(virJobDestroy(job), -1);
    CHECK_EQ(atomic_load(&c.frees), 1);
    vctx_destroy(&c);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_seed_progress),
        TAP_TEST(test_clamping),
        TAP_TEST(test_unbounded),
        TAP_TEST(test_return_without_finish),
        TAP_TEST(test_success_after_cancel),
        TAP_TEST(test_finish_cancel),
        TAP_TEST(test_finish_twice),
        TAP_TEST(test_error),
        TAP_TEST(test_failure_arguments),
        TAP_TEST(test_failure_and_cancel),
        TAP_TEST(test_free_data),
        TAP_TEST(test_domain_and_network),
        TAP_TEST(test_bgjob_handle),
        TAP_TEST(test_destroy_and_info_arguments),
    };

    tap_diag("virjob.h built with %s types", VIRJOB_LIBVIRT_TYPES ? "libvirt's" : "its own");
    return tap_run(tests, TAP_COUNT(tests));
}
