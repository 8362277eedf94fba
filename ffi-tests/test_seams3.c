/* Seams of a job's create and of a parent's end, seen from the header:
 * - an external job born cancelled (under a cancelled parent) is told
 *   BGJOB_CONTROL_CANCEL once it started ("verbs reach the owner through
 *   bgjob_job_options.control"): it has no worker to see the cancel;
 * - a job is visible to bgjob_job_lookup while its create runs: a handle
 *   taken then must be usable whatever the create does — its destroy
 *   returns (the create failed: the job never runs), a start through it
 *   never makes the create fail, a cancel through it never does either;
 * - a parent paused by its user when its work ends, WAITING for a sub-job,
 *   no longer reports a user pause it cannot undo;
 * - a worker's return that waits for a control call in flight on another
 *   thread starts no new one meanwhile ("never once ... a threaded job's
 *   worker has returned"), so verbs on other threads cannot hold its end
 *   back for ever. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct ctl_log {
    atomic_int cancels, force, others;
    atomic_int saw_requested;
};

static void on_ctl(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct ctl_log *l = ud;
    if (what != BGJOB_CONTROL_CANCEL) {
        atomic_fetch_add(&l->others, 1);
        return;
    }
    atomic_fetch_add(&l->cancels, 1);
    if (arg == 1)
        atomic_fetch_add(&l->force, 1);
    bgjob_info info;
    if (info_of(job, &info) && info.cancel_requested && info.state == BGJOB_STATE_RUNNING)
        atomic_fetch_add(&l->saw_requested, 1);
}

/* Fails before: the owner of the born-cancelled external child is never told. */
static bool test_an_external_child_born_cancelled_is_told_cancel(void)
{
    bool ok = true;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_EXTERNAL;
    bgjob_job *parent = NULL, *child = NULL;
    REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &parent) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(parent, NULL), BGJOB_RESULT_OK);
    struct ctl_log l;
    memset(&l, 0, sizeof l);
    o.parent = parent;
    o.control = on_ctl;
    o.control_userdata = &l;
    REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &child) == BGJOB_RESULT_OK);
    /* Told on the creating thread, before the create returned. */
    CHECK_EQ(atomic_load(&l.cancels), 1);
    CHECK_EQ(atomic_load(&l.force), 1);
    CHECK_EQ(atomic_load(&l.saw_requested), 1);
    CHECK_EQ(atomic_load(&l.others), 0);
    bgjob_cancel_status cs = BGJOB_CANCEL_STATUS_REQUESTED;
    CHECK_RC(bgjob_job_cancel(child, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_EQ(atomic_load(&l.cancels), 1);
    CHECK_RC(bgjob_job_end(child, 125, "cancelled"), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(parent, 125, "cancelled"), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(child), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(parent), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(child), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(parent), BGJOB_RESULT_OK);
    return ok;
}

/* A thread that looks up the id `target` until it finds it, then does `what`
 * through its handle. */
enum look_what { LOOK_DESTROY, LOOK_START, LOOK_CANCEL };

struct looker {
    atomic_ullong target;
    atomic_int stop, found, rc;
    enum look_what what;
    bgjob_job *h;
};

static void *look(void *p)
{
    struct looker *k = p;
    bgjob_job *h = NULL;
    while (!atomic_load(&k->stop)) {
        if (bgjob_job_lookup(atomic_load(&k->target), &h) == BGJOB_RESULT_OK) {
            atomic_store(&k->found, 1);
            if (k->what == LOOK_START)
                atomic_store(&k->rc, bgjob_job_start(h));
            else if (k->what == LOOK_CANCEL)
                atomic_store(&k->rc, bgjob_job_cancel(h, NULL));
            k->h = h;
            return NULL;
        }
    }
    return NULL;
}

/* The id the next create gets: that of a job made now, plus one (no other
 * thread of this test creates jobs meanwhile). */
static uint64_t next_id(void)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    bgjob_job *j = NULL;
    if (bgjob_job_create(&o, worker_return, NULL, NULL, &j) != BGJOB_RESULT_OK)
        return 0;
    uint64_t id = id_of(j);
    bgjob_job_destroy(j);
    return id + 1;
}

struct destroyer {
    bgjob_job *h;
    atomic_int done, rc;
};

static void *destroy_it(void *p)
{
    struct destroyer *d = p;
    atomic_store(&d->rc, bgjob_job_destroy(d->h));
    atomic_store(&d->done, 1);
    return NULL;
}

#define ROUNDS 3000

/* Statistical: each round a looker spins on the id the next create gets.
 * LOOK_DESTROY: the create fails (its parent has ended) after the job became
 * visible; a handle the looker got must be destroyable (before: the destroy
 * waited for ever for a job left CREATED with no worker). LOOK_START and
 * LOOK_CANCEL: the create must succeed whatever the looker did (before: a
 * start through the looked-up handle made it fail with NOT_ALLOWED), the
 * job must end, and every userdata be freed once. */
static bool lookups_in_the_create(enum look_what what)
{
    bool ok = true;
    int caught = 0;
    bgjob_job *ended = NULL;
    struct tracker t0;
    tracker_init(&t0);
    REQUIRE(job_create(&t0, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &ended) == BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(ended), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < ROUNDS && ok; i++) {
        struct looker k;
        memset(&k, 0, sizeof k);
        k.what = what;
        atomic_store(&k.target, next_id());
        pthread_t th;
        REQUIRE(pthread_create(&th, NULL, look, &k) == 0);
        struct tracker t;
        tracker_init(&t);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        if (what == LOOK_DESTROY)
            o.parent = ended;
        bgjob_job *j = NULL;
        int32_t rc = bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &j);
        atomic_store(&k.stop, 1);
        pthread_join(th, NULL);
        if (what == LOOK_DESTROY) {
            CHECK_RC(rc, BGJOB_RESULT_NOT_ALLOWED);
            CHECK_EQ(atomic_load(&t.frees), 1);
        } else {
            CHECKF(rc == BGJOB_RESULT_OK, "round %d: create returned %s (looker %s)", i,
                   bgjob_result_str(rc), atomic_load(&k.found) ? "found it" : "did not find it");
            if (rc == BGJOB_RESULT_OK) {
                int32_t st = wait_end(j);
                CHECK(st == BGJOB_STATE_COMPLETED || st == BGJOB_STATE_CANCELLED);
                CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
            }
        }
        if (!atomic_load(&k.found))
            continue;
        caught++;
        if (what == LOOK_START)
            CHECK_RC(atomic_load(&k.rc), BGJOB_RESULT_NOT_ALLOWED);
        struct destroyer d = {.h = k.h};
        REQUIRE(pthread_create(&th, NULL, destroy_it, &d) == 0);
        CHECKF(poll_int_eq(&d.done, 1), "round %d: the looked-up handle's destroy hangs", i);
        if (!atomic_load(&d.done)) {
            pthread_detach(th);
            return false;
        }
        pthread_join(th, NULL);
        CHECK_RC(atomic_load(&d.rc), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t.frees), 1);
    }
    tap_diag("%d of %d rounds had the looker find the job inside its create", caught, ROUNDS);
    CHECK_RC(bgjob_job_destroy(ended), BGJOB_RESULT_OK);
    return ok;
}

static bool test_a_handle_looked_up_inside_a_failed_create_can_be_destroyed(void)
{
    return lookups_in_the_create(LOOK_DESTROY);
}

static bool test_a_start_through_a_lookup_inside_a_create_never_fails_it(void)
{
    return lookups_in_the_create(LOOK_START);
}

static bool test_a_cancel_through_a_lookup_inside_a_create_never_fails_it(void)
{
    return lookups_in_the_create(LOOK_CANCEL);
}

/* A parent paused by its user whose work ends while its sub-job runs: in
 * WAITING the pause is over (resume is refused there, so nobody could end
 * it), as for a job whose work ends on its own. Fails before. */
static bool test_a_paused_parent_waiting_for_its_child_reports_no_pause(void)
{
    bool ok = true;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_EXTERNAL;
    bgjob_job *parent = NULL, *child = NULL;
    REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &parent) == BGJOB_RESULT_OK);
    struct tracker t;
    struct gate g;
    tracker_init(&t);
    gate_init(&g);
    t.gate = &g;
    bgjob_job_options_init(&o, sizeof o);
    o.parent = parent;
    REQUIRE(bgjob_job_create(&o, worker_gated, ud_new(&t), ud_free, &child) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(parent), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_end(parent, 0, NULL), BGJOB_RESULT_OK);
    bgjob_info info;
    REQUIRE(info_of(parent, &info));
    CHECK_STATE(info.state, BGJOB_STATE_WAITING);
    CHECK(!info.pause_requested);
    CHECK_RC(bgjob_job_resume(parent), BGJOB_RESULT_NOT_ALLOWED);
    gate_open(&g);
    CHECK_STATE(wait_end(child), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(parent), BGJOB_STATE_COMPLETED);
    REQUIRE(info_of(parent, &info));
    CHECK(!info.pause_requested);
    CHECK_RC(bgjob_job_destroy(child), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(parent), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* The first control call (PAUSE) blocks until released; a call after the
 * worker returned (which must not come) is counted. */
struct held_ctl {
    struct gate first, later;
    atomic_int calls, after_return, first_in;
    atomic_int returned;
};

static void on_held_ctl(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    (void)job;
    (void)what;
    (void)arg;
    struct held_ctl *h = ud;
    if (atomic_fetch_add(&h->calls, 1) == 0) {
        atomic_store(&h->first_in, 1);
        gate_wait(&h->first);
        return;
    }
    if (atomic_load(&h->returned))
        atomic_fetch_add(&h->after_return, 1);
}

static int32_t return_on_gate(void *ud, bgjob_job *job)
{
    (void)job;
    struct held_ctl *h = ud;
    gate_wait(&h->later);
    atomic_store(&h->returned, 1);
    return 0;
}

static void *pause_it(void *p)
{
    bgjob_job_pause(p);
    return NULL;
}

/* Fails before: the RESUME's call starts while the end waits for the
 * PAUSE's (a stream of such calls held the end back for ever:
 * test_attack4's starvation cases). */
static bool test_a_returned_workers_end_starts_no_control_call(void)
{
    bool ok = true;
    static struct held_ctl h;
    memset(&h, 0, sizeof h);
    gate_init(&h.first);
    gate_init(&h.later);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.control = on_held_ctl;
    o.control_userdata = &h;
    bgjob_job *j = NULL;
    REQUIRE(bgjob_job_create(&o, return_on_gate, &h, NULL, &j) == BGJOB_RESULT_OK);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, pause_it, j) == 0);
    while (!atomic_load(&h.first_in))
        sleep_ms(1);
    /* The PAUSE's call is in flight; the worker returns and its end waits
     * for that call. */
    gate_open(&h.later);
    while (!atomic_load(&h.returned))
        sleep_ms(1);
    /* The worker's end is under way: time for it to reach its wait (it
     * takes the callback first thing; a second covers a stalled thread). */
    sleep_ms(1000);
    bgjob_result r = bgjob_job_resume(j);
    CHECKF(r == BGJOB_RESULT_OK || r == BGJOB_RESULT_NOT_ALLOWED, "resume: %s",
           bgjob_result_str(r));
    CHECK_EQ(atomic_load(&h.after_return), 0);
    gate_open(&h.first);
    pthread_join(th, NULL);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(j, 10000, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    gate_destroy(&h.first);
    gate_destroy(&h.later);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_an_external_child_born_cancelled_is_told_cancel),
        TAP_TEST(test_a_handle_looked_up_inside_a_failed_create_can_be_destroyed),
        TAP_TEST(test_a_start_through_a_lookup_inside_a_create_never_fails_it),
        TAP_TEST(test_a_cancel_through_a_lookup_inside_a_create_never_fails_it),
        TAP_TEST(test_a_paused_parent_waiting_for_its_child_reports_no_pause),
        TAP_TEST(test_a_returned_workers_end_starts_no_control_call),
    };
    return tap_run(tests, TAP_COUNT(tests));
}
