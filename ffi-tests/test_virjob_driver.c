/*
 * test_virjob_driver.c: the driver table's overrides (replace bgjob's
 * getInfo/cancel/destroy; calling the same function on the same job from
 * inside an override runs bgjob's own), and virError's layout: the struct
 * virjob.h uses (libvirt's, or its own) has libvirt's field offsets, and in
 * the build with libvirt, libvirt's own virDefaultErrorFunc reads an error
 * from virJobGetError correctly.
 */

#include "virjob_util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the overrides do, set per case. */
static struct {
    atomic_int get_info_calls, cancel_calls, destroy_calls;
    bool chain;  /* call the same public function from inside */
    int ret;     /* what to return when not chaining */
    virJobPtr job_seen;
    int inner_rc; /* what the chained call returned */
} drv_state;

static void drv_reset(bool chain, int ret)
{
    atomic_store(&drv_state.get_info_calls, 0);
    atomic_store(&drv_state.cancel_calls, 0);
    atomic_store(&drv_state.destroy_calls, 0);
    drv_state.chain = chain;
    drv_state.ret = ret;
    drv_state.job_seen = NULL;
    drv_state.inner_rc = -100;
}

static int drv_get_info(virJobPtr job, virJobInfoPtr info)
{
    atomic_fetch_add(&drv_state.get_info_calls, 1);
    drv_state.job_seen = job;
    if (drv_state.chain) {
        /* bgjob's own, then a remote driver's adjustment. No lock is held:
         * other calls on the job work here too. */
        drv_state.inner_rc = virJobGetInfo(job, info);
        info->runningTime += 1000;
        return drv_state.inner_rc + (virJobGetConnect(job) == VCONN ? 0 : 1);
    }
    info->type = VIR_JOB_UNBOUNDED;
    info->state = VIR_JOB_FAILED;
    info->runningTime = 4242;
    info->remainingTime = 17;
    info->percentComplete = 99;
    return drv_state.ret;
}

static int drv_cancel(virJobPtr job)
{
    atomic_fetch_add(&drv_state.cancel_calls, 1);
    drv_state.job_seen = job;
    if (drv_state.chain)
        return drv_state.inner_rc = virJobCancel(job);
    return drv_state.ret;
}

static int drv_destroy(virJobPtr job)
{
    atomic_fetch_add(&drv_state.destroy_calls, 1);
    drv_state.job_seen = job;
    if (drv_state.chain)
        return drv_state.inner_rc = virJobDestroy(job);
    return drv_state.ret;
}

/* An override replaces bgjob's call and its return value is returned. */
static bool test_overrides_replace(void)
{
    bool ok = true;
    virJobDriver drv = { drv_get_info, drv_cancel, drv_destroy };
    struct vctx c;
    virJobInfo info;

    drv_reset(false, 7);
    vctx_init(&c, 50, 5, END_CANCEL_CHECK);
    c.second = END_SUCCESS;
    virJobPtr job = vcreate(&c, &drv, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);

    memset(&info, 0, sizeof(info));
    CHECK_EQ(virJobGetInfo(job, &info), 7);
    CHECK_EQ(atomic_load(&drv_state.get_info_calls), 1);
    CHECK(drv_state.job_seen == job);
    CHECK_EQ(info.runningTime, 4242);
    CHECK_EQ(info.percentComplete, 99);

    CHECK_EQ(virJobCancel(job), 7);
    CHECK_EQ(atomic_load(&drv_state.cancel_calls), 1);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&c.finish_rc), 0); /* bgjob's cancel never ran */
    CHECK_EQ(atomic_load(&c.second_rc), 0);

    /* The destroy override does not free the job: it is still there. */
    CHECK_EQ(virJobDestroy(job), 7);
    CHECK_EQ(atomic_load(&drv_state.destroy_calls), 1);
    CHECK(virJobGetConnect(job) == VCONN);
    CHECK(virJobGetBgjob(job) != NULL);

    /* NULL members: bgjob's own. */
    drv.getInfo = NULL;
    drv.destroy = NULL;
    CHECK(vinfo(job, &info));
    CHECK_EQ(info.state, VIR_JOB_COMPLETE);
    CHECK_EQ(info.percentComplete, 100);
    CHECK_EQ(atomic_load(&drv_state.get_info_calls), 1);
    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_EQ(atomic_load(&drv_state.destroy_calls), 1);
    CHECK_EQ(atomic_load(&c.frees), 1);
    vctx_destroy(&c);
    return ok;
}

/* Inside an override, the same call on the same job is bgjob's own: a
 * driver extends rather than replaces. */
static bool test_overrides_chain(void)
{
    bool ok = true;
    virJobDriver drv = { drv_get_info, drv_cancel, drv_destroy };
    struct vctx c;
    virJobInfo info;

    drv_reset(true, 0);
    vctx_init(&c, 50, 5, END_CANCEL_CHECK);
    virJobPtr job = vcreate(&c, &drv, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    gate_wait(&c.started);

    memset(&info, 0, sizeof(info));
    CHECK_EQ(virJobGetInfo(job, &info), 0);
    CHECK_EQ(drv_state.inner_rc, 0);
    CHECK_EQ(atomic_load(&drv_state.get_info_calls), 1); /* not recursive */
    CHECK_EQ(info.remainingTime, 45);
    CHECK_EQ(info.percentComplete, 10);
    CHECK(info.runningTime >= 1000);

    CHECK_EQ(virJobCancel(job), 0);
    CHECK_EQ(atomic_load(&drv_state.cancel_calls), 1);
    CHECK_EQ(drv_state.inner_rc, 0);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&c.finish_rc), 1); /* bgjob's cancel ran */

    CHECK_EQ(virJobDestroy(job), 0);
    CHECK_EQ(atomic_load(&drv_state.destroy_calls), 1);
    CHECK_EQ(drv_state.inner_rc, 0);
    CHECK_EQ(virJobGetInfo(job, &info), -1); /* freed by the chained destroy */
    CHECK_EQ(atomic_load(&drv_state.get_info_calls), 1);
    CHECK_EQ(atomic_load(&c.frees), 1);
    vctx_destroy(&c);
    return ok;
}

/* A job's override is never called for another job, and the guard against
 * recursion is per job: an override calling the public function on another
 * job runs that job's override. */
static int other_calls;
static virJobPtr other_job;
static int drv_cancel_other(virJobPtr job)
{
    (void)job;
    other_calls++;
    return other_job != NULL && other_job != job ? virJobCancel(other_job) : 0;
}

static bool test_overrides_per_job(void)
{
    bool ok = true;
    virJobDriver drv = { NULL, drv_cancel_other, NULL };
    struct vctx a, b;

    vctx_init(&a, 5, 1, END_CANCEL_CHECK);
    vctx_init(&b, 5, 1, END_CANCEL_CHECK);
    virJobPtr ja = vcreate(&a, &drv, VIR_JOB_BOUNDED);
    virJobPtr jb = vcreate(&b, NULL, VIR_JOB_BOUNDED);
    REQUIRE(ja != NULL && jb != NULL);
    gate_wait(&a.started);
    gate_wait(&b.started);
    other_calls = 0;
    other_job = jb;
    CHECK_EQ(virJobCancel(ja), 0); /* the override cancels b, not a */
    CHECK_EQ(other_calls, 1);
    vctx_run_through(&a);
    vctx_run_through(&b);
    CHECK_STATE(vwait(ja), BGJOB_STATE_COMPLETED);
    CHECK_STATE(vwait(jb), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&a.finish_rc), 0);
    CHECK_EQ(atomic_load(&b.finish_rc), 1);
    other_job = NULL;
    CHECK_EQ(virJobDestroy(ja), 0);
    CHECK_EQ(virJobDestroy(jb), 0);
    vctx_destroy(&a);
    vctx_destroy(&b);
    return ok;
}

/* libvirt's virError on LP64, field by field; the Rust side asserts the same
 * numbers for the struct it writes. */
static bool test_error_layout(void)
{
    bool ok = true;

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    CHECK_EQ(offsetof(virError, code), 0);
    CHECK_EQ(offsetof(virError, domain), 4);
    CHECK_EQ(offsetof(virError, message), 8);
    CHECK_EQ(offsetof(virError, level), 16);
    CHECK_EQ(offsetof(virError, conn), 24);
    CHECK_EQ(offsetof(virError, dom), 32);
    CHECK_EQ(offsetof(virError, str1), 40);
    CHECK_EQ(offsetof(virError, str2), 48);
    CHECK_EQ(offsetof(virError, str3), 56);
    CHECK_EQ(offsetof(virError, int1), 64);
    CHECK_EQ(offsetof(virError, int2), 68);
    CHECK_EQ(offsetof(virError, net), 72);
    CHECK_EQ(sizeof(virError), 80);
    CHECK_EQ(sizeof(((virError *)0)->level), sizeof(int));
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    CHECK_EQ(sizeof(virJobInfo), 5 * sizeof(int));
    CHECK_EQ(VIR_JOB_BOUNDED, 0);
    CHECK_EQ(VIR_JOB_UNBOUNDED, 1);
    CHECK_EQ(VIR_JOB_RUNNING, 0);
    CHECK_EQ(VIR_JOB_COMPLETE, 1);
    CHECK_EQ(VIR_JOB_FAILED, 2);
    CHECK_EQ(VIR_JOB_CANCELLED, 3);
    return ok;
}

#if VIRJOB_LIBVIRT_TYPES
/* With libvirt: libvirt's own code reads the error bgjob wrote. */
static bool test_libvirt_reads_the_error(void)
{
    bool ok = true;
    struct vctx c;
    char out[512] = { 0 };

    vctx_init(&c, 5, 1, END_FAILURE);
    c.fail_code = VIR_ERR_SYSTEM_ERROR;
    c.fail_msg = "cannot open save file";
    virJobPtr job = vcreate(&c, NULL, VIR_JOB_BOUNDED);
    REQUIRE(job != NULL);
    vctx_run_through(&c);
    CHECK_STATE(vwait(job), BGJOB_STATE_FAILED);
    virErrorPtr e = virJobGetError(job);
    CHECK(e != NULL);
    if (e != NULL) {
        FILE *tmp = tmpfile();
        int saved = dup(STDERR_FILENO);
        REQUIRE(tmp != NULL && saved >= 0);
        fflush(stderr);
        dup2(fileno(tmp), STDERR_FILENO);
        virDefaultErrorFunc(e); /* prints "libvirt: <from> <level> : <message>" */
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        rewind(tmp);
        size_t n = fread(out, 1, sizeof(out) - 1, tmp);
        out[n] = 0;
        fclose(tmp);
        tap_diag("virDefaultErrorFunc printed: %s", out);
        CHECK(strstr(out, "libvirt:") != NULL);
        CHECK(strstr(out, "error") != NULL); /* level VIR_ERR_ERROR */
        CHECK(strstr(out, "cannot open save file") != NULL);
    }
    CHECK_EQ(virJobDestroy(job), 0);
    vctx_destroy(&c);
    return ok;
}
#endif

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_overrides_replace),
        TAP_TEST(test_overrides_chain),
        TAP_TEST(test_overrides_per_job),
        TAP_TEST(test_error_layout),
#if VIRJOB_LIBVIRT_TYPES
        TAP_TEST(test_libvirt_reads_the_error),
#endif
    };

    tap_diag("virjob.h built with %s types", VIRJOB_LIBVIRT_TYPES ? "libvirt's" : "its own");
    return tap_run(tests, TAP_COUNT(tests));
}
