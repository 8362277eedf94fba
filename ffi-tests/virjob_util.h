/*
 * virjob_util.h: a scripted virJob worker for the virjob.h tests.
 *
 * The worker does what its `struct vctx` says (initialize, N proposal-style
 * updates, one finish call, maybe a second), and stops at gates on the way so
 * a case can look at the job at each point without sleeping:
 *
 *   started  opened after the updates     go     waited on before the finish
 *   finished opened after the finish      leave  waited on before returning
 *
 * Its freeData (vfree) counts, and counts separately a free that came before
 * the worker returned. The same file is compiled with libvirt's headers and
 * without them (VIRJOB_NO_LIBVIRT); VIRJOB_TEST_EXPECT_LIBVIRT makes the
 * first build fail if libvirt's types were not the ones used.
 */

#ifndef BGJOB_TEST_VIRJOB_UTIL_H
#define BGJOB_TEST_VIRJOB_UTIL_H

#include "util.h"
#include "virjob.h"

#include <stdatomic.h>

#if defined(VIRJOB_TEST_EXPECT_LIBVIRT) && !VIRJOB_LIBVIRT_TYPES
#error "built to test with libvirt's headers, but virjob.h did not use them"
#endif
#if defined(VIRJOB_NO_LIBVIRT) && VIRJOB_LIBVIRT_TYPES
#error "built to test without libvirt's headers, but virjob.h used them"
#endif

enum vend { END_NONE, END_SUCCESS, END_FAILURE, END_CANCEL_CHECK };

struct vctx {
    /* The script. */
    int eta;              /* virJobInitialize(job, eta) when >= 0 */
    int steps;            /* virJobUpdateRel(job, 1, -1, 2) this many times */
    enum vend end;        /* the finish call */
    enum vend second;     /* a second finish call after it (END_NONE: none) */
    int fail_code;        /* for END_FAILURE */
    const char *fail_msg; /* for END_FAILURE (may be NULL) */
    struct gate started, go, finished, leave;

    /* What happened. */
    atomic_int ran;
    atomic_int returned;
    atomic_int frees;
    atomic_int free_early;
    atomic_int update_fails; /* initialize/update calls that returned non-zero */
    atomic_int finish_rc;
    atomic_int second_rc;
    _Atomic(virJobPtr) seen;
};

/* A connection pointer the library only stores and returns. */
static inline virConnectPtr vconn(void)
{
    static char storage;
    return (virConnectPtr)(void *)&storage;
}
#define VCONN (vconn())

static inline void vctx_init(struct vctx *c, int eta, int steps, enum vend end)
{
    c->eta = eta;
    c->steps = steps;
    c->end = end;
    c->second = END_NONE;
    c->fail_code = 0;
    c->fail_msg = NULL;
    gate_init(&c->started);
    gate_init(&c->go);
    gate_init(&c->finished);
    gate_init(&c->leave);
    atomic_init(&c->ran, 0);
    atomic_init(&c->returned, 0);
    atomic_init(&c->frees, 0);
    atomic_init(&c->free_early, 0);
    atomic_init(&c->update_fails, 0);
    atomic_init(&c->finish_rc, -100);
    atomic_init(&c->second_rc, -100);
    atomic_init(&c->seen, NULL);
}

/* Opens every gate: the worker runs straight through. */
static inline void vctx_run_through(struct vctx *c)
{
    gate_open(&c->go);
    gate_open(&c->leave);
}

static inline void vctx_destroy(struct vctx *c)
{
    gate_destroy(&c->started);
    gate_destroy(&c->go);
    gate_destroy(&c->finished);
    gate_destroy(&c->leave);
}

static inline int vfinish(virJobPtr job, struct vctx *c, enum vend end)
{
    switch (end) {
    case END_SUCCESS:
        return virJobFinishSuccess(job);
    case END_FAILURE:
        return virJobFinishFailure(job, c->fail_code, c->fail_msg);
    case END_CANCEL_CHECK:
        return virJobFinishCancel(job);
    case END_NONE:
        break;
    }
    return 0;
}

static inline void vworker(virJobPtr job, void *data)
{
    struct vctx *c = data;

    atomic_fetch_add(&c->ran, 1);
    atomic_store(&c->seen, job);
    if (c->eta >= 0 && virJobInitialize(job, c->eta) != 0)
        atomic_fetch_add(&c->update_fails, 1);
    for (int i = 0; i < c->steps; i++)
        if (virJobUpdateRel(job, 1, -1, 2) != 0)
            atomic_fetch_add(&c->update_fails, 1);
    gate_open(&c->started);
    gate_wait(&c->go);
    atomic_store(&c->finish_rc, vfinish(job, c, c->end));
    if (c->second != END_NONE)
        atomic_store(&c->second_rc, vfinish(job, c, c->second));
    gate_open(&c->finished);
    gate_wait(&c->leave);
    atomic_store(&c->returned, 1);
}

static inline void vfree(void *data)
{
    struct vctx *c = data;

    if (!atomic_load(&c->returned))
        atomic_fetch_add(&c->free_early, 1);
    atomic_fetch_add(&c->frees, 1);
}

/* Creates a job running vworker on `c`. */
static inline virJobPtr vcreate(struct vctx *c, virJobDriverPtr driver, int type)
{
    return virJobCreate(VCONN, driver, vworker, vfree, c, type);
}

/* Waits (through the bgjob handle) for the worker to return and the job to
 * end; returns the final bgjob state or -1. */
static inline int32_t vwait(virJobPtr job)
{
    int32_t state = -1;

    if (bgjob_job_wait(virJobGetBgjob(job), LONG_MS, &state) != BGJOB_RESULT_OK)
        return -1;
    return state;
}

/* virJobGetInfo into *info; false on error. */
static inline bool vinfo(virJobPtr job, virJobInfo *info)
{
    memset(info, 0x5e, sizeof(*info));
    return virJobGetInfo(job, info) == 0;
}

#endif /* BGJOB_TEST_VIRJOB_UTIL_H */
