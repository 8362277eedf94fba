/* Sub-jobs (bgjob_job_options.parent): cancel flows down with cause PARENT,
 * recursively; a parent whose worker returned stays WAITING until every child
 * has ended, then ends with its own outcome; a child's failure does not fail
 * the parent; a detached parent still waits for its children and then frees
 * itself; the listing shows the tree. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static bgjob_result create_child(struct tracker *t, bgjob_worker_callback w, bgjob_job *parent,
                                 uint32_t flags, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.parent = parent;
    o.flags = flags;
    return bgjob_job_create(&o, w, ud_new(t), ud_free, out);
}

static int32_t cause_of(bgjob_job *job)
{
    bgjob_info info;
    return info_of(job, &info) ? info.cancel_cause : -1;
}

static bool test_cancel_flows_down_with_cause_parent(void)
{
    bool ok = true;
    struct tracker tp, tc;
    tracker_init(&tp);
    tracker_init(&tc);
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) ==
            BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_until_cancel, p, 0, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(p, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(c), BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_EQ(cause_of(p), BGJOB_CANCEL_CAUSE_CALLER);
    CHECK_EQ(atomic_load(&tc.saw_cancel), 1);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    return ok;
}

static bool test_cancelling_a_child_leaves_the_parent_alone(void)
{
    bool ok = true;
    struct tracker tp, tc;
    tracker_init(&tp);
    tracker_init(&tc);
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) ==
            BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_until_cancel, p, 0, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(c, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(state_of(p), BGJOB_STATE_RUNNING);
    CHECK_EQ(cause_of(p), BGJOB_CANCEL_CAUSE_NONE);
    CHECK_RC(bgjob_job_cancel(p, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    return ok;
}

static bool test_parent_waits_for_a_running_child(void)
{
    bool ok = true;
    struct tracker tp, tc;
    struct gate g;
    tracker_init(&tp);
    tracker_init(&tc);
    gate_init(&g);
    tc.gate = &g;
    bgjob_job *p = NULL, *c = NULL;
    /* The parent is created deferred so the child is linked before its
     * worker can return. */
    REQUIRE(job_create(&tp, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                       &p) == BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_gated, p, 0, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(p), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&tp.frees, 1)); /* its worker has returned */
    CHECK(poll_state(p, BGJOB_STATE_WAITING));
    CHECK_RC(bgjob_job_wait(p, 0, NULL), BGJOB_RESULT_TIMED_OUT);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_finalize(p), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(state_of(c), BGJOB_STATE_RUNNING);
    gate_open(&g);
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    /* The parent ended, so its child had ended before. */
    CHECK_STATE(state_of(c), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_child_failure_leaves_parent_completed(void)
{
    bool ok = true;
    struct tracker tp, tc;
    struct gate g;
    tracker_init(&tp);
    tracker_init(&tc);
    gate_init(&g);
    tp.gate = &g;
    tc.rc = 5;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_return, p, 0, &c) == BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_FAILED);
    gate_open(&g);
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_nested_three_levels(void)
{
    bool ok = true;
    struct tracker t[3];
    bgjob_job *j[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        tracker_init(&t[i]);
    REQUIRE(job_create(&t[0], worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &j[0]) ==
            BGJOB_RESULT_OK);
    REQUIRE(create_child(&t[1], worker_until_cancel, j[0], 0, &j[1]) == BGJOB_RESULT_OK);
    REQUIRE(create_child(&t[2], worker_until_cancel, j[1], 0, &j[2]) == BGJOB_RESULT_OK);
    /* The listing shows the tree. */
    bgjob_job_entry e[64];
    size_t n = 0;
    CHECK_RC(bgjob_list_jobs(e, 64, &n), BGJOB_RESULT_OK);
    int found = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        if (e[i].id == id_of(j[0]))
            found += e[i].parent_id == 0;
        if (e[i].id == id_of(j[1]))
            found += e[i].parent_id == id_of(j[0]);
        if (e[i].id == id_of(j[2]))
            found += e[i].parent_id == id_of(j[1]);
    }
    CHECK_EQ(found, 3);
    /* Cancelling the middle one reaches its child, not its parent. */
    CHECK_RC(bgjob_job_cancel(j[1], NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(j[1]), BGJOB_STATE_CANCELLED);
    CHECK_STATE(state_of(j[2]), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(j[2]), BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_STATE(state_of(j[0]), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_cancel(j[0], NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(j[0]), BGJOB_STATE_CANCELLED);
    for (int i = 2; i >= 0; i--)
        CHECK_RC(bgjob_job_destroy(j[i]), BGJOB_RESULT_OK);
    return ok;
}

static bool test_cancel_of_the_top_reaches_the_grandchild(void)
{
    bool ok = true;
    struct tracker t[3];
    bgjob_job *j[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        tracker_init(&t[i]);
    REQUIRE(job_create(&t[0], worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &j[0]) ==
            BGJOB_RESULT_OK);
    REQUIRE(create_child(&t[1], worker_until_cancel, j[0], 0, &j[1]) == BGJOB_RESULT_OK);
    REQUIRE(create_child(&t[2], worker_until_cancel, j[1], 0, &j[2]) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(j[0], NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(j[0]), BGJOB_STATE_CANCELLED);
    /* The top ended last: both below had ended already. */
    CHECK_STATE(state_of(j[1]), BGJOB_STATE_CANCELLED);
    CHECK_STATE(state_of(j[2]), BGJOB_STATE_CANCELLED);
    CHECK_EQ(cause_of(j[1]), BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_EQ(cause_of(j[2]), BGJOB_CANCEL_CAUSE_PARENT);
    for (int i = 0; i < 3; i++)
        CHECK_RC(bgjob_job_destroy(j[i]), BGJOB_RESULT_OK);
    return ok;
}

static bool test_detached_parent_waits_then_frees_itself(void)
{
    bool ok = true;
    struct tracker tp, tc;
    struct gate g;
    tracker_init(&tp);
    tracker_init(&tc);
    gate_init(&g);
    tc.gate = &g;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_return, BGJOB_CREATE_DEFER_START, BGJOB_JOB_TYPE_BOUNDED, NULL,
                       &p) == BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_gated, p, 0, &c) == BGJOB_RESULT_OK);
    uint64_t pid = id_of(p);
    CHECK_RC(bgjob_job_start(p), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&tp.frees, 1));
    CHECK_RC(bgjob_job_detach(p, 0), BGJOB_RESULT_OK);
    /* Still there, held for its child. */
    bgjob_job *look = NULL;
    CHECK_RC(bgjob_job_lookup(pid, &look), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(look), BGJOB_STATE_WAITING);
    CHECK_RC(bgjob_job_destroy(look), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK(poll_unlisted(pid));
    /* The parent is freed; the child's entry still names it (the header: the
     * parent's id, 0 for none). It read 0 once the parent was gone. */
    bgjob_job_entry e[64];
    size_t n = 0;
    uint64_t cid = id_of(c);
    int seen = 0;
    CHECK_RC(bgjob_list_jobs(e, 64, &n), BGJOB_RESULT_OK);
    for (size_t i = 0; i < n && i < 64; i++)
        if (e[i].id == cid) {
            seen++;
            CHECKF(e[i].parent_id == pid, "the child lists parent id %llu, not %llu",
                   (unsigned long long)e[i].parent_id, (unsigned long long)pid);
        }
    CHECK_EQ(seen, 1);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_bad_parents_are_refused(void)
{
    bool ok = true;
    struct tracker tp, tc;
    tracker_init(&tp);
    tracker_init(&tc);
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_return, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) == BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    long frees = atomic_load(&util_total_frees);
    CHECK_RC(create_child(&tc, worker_return, p, 0, &c), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(create_child(&tc, worker_return, (bgjob_job *)(uintptr_t)0x1234, 0, &c),
             BGJOB_RESULT_INVALID_HANDLE);
    /* Both refused creates freed their userdata. */
    CHECK_EQ(atomic_load(&util_total_frees), frees + 2);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&tc.runs), 0);
    return ok;
}

static bool test_child_of_a_cancelled_parent_is_born_cancelled(void)
{
    bool ok = true;
    struct tracker tp, tc;
    struct gate g;
    tracker_init(&tp);
    tracker_init(&tc);
    gate_init(&g);
    tp.gate = &g;
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(p, NULL), BGJOB_RESULT_OK);
    /* Still running (its worker waits on the gate), cancel requested. */
    CHECK_RC(create_child(&tc, worker_until_cancel, p, 0, &c), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&tc.runs), 1);
    CHECK_EQ(atomic_load(&tc.saw_cancel), 1);
    CHECK_EQ(cause_of(c), BGJOB_CANCEL_CAUSE_PARENT);
    gate_open(&g);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

static bool test_deferred_child_of_a_cancelled_parent_ends_unrun(void)
{
    bool ok = true;
    struct tracker tp, tc;
    tracker_init(&tp);
    tracker_init(&tc);
    bgjob_job *p = NULL, *c = NULL;
    REQUIRE(job_create(&tp, worker_until_cancel, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &p) ==
            BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_return, p, BGJOB_CREATE_DEFER_START, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(p, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    CHECK_STATE(state_of(c), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&tc.runs), 0);
    CHECK_EQ(atomic_load(&tc.frees), 1);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    return ok;
}

/* Where a parent's completion (no context) runs: on its worker's thread when
 * its sub-jobs let go of it before its worker returned; else, once the last
 * one has, on a bgjob thread of its own, named after the parent. */
struct where {
    struct gate *gate;       /* the worker waits here, if set */
    pthread_t worker;        /* the worker's thread */
    atomic_int worker_set;
    pthread_t completion;    /* the completion's thread, and its name */
    char completion_name[32];
    atomic_int completed;
};

static int32_t where_worker(void *userdata, bgjob_job *job)
{
    struct where *w = userdata;
    (void)job;
    w->worker = pthread_self();
    atomic_store(&w->worker_set, 1);
    if (w->gate != NULL)
        gate_wait(w->gate);
    return 0;
}

static void where_completion(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct where *w = userdata;
    (void)job;
    (void)state;
    w->completion = pthread_self();
    pthread_getname_np(pthread_self(), w->completion_name, sizeof w->completion_name);
    atomic_store(&w->completed, 1);
}

static bgjob_result where_create(struct where *w, const char *name, bgjob_job *parent,
                                 uint32_t flags, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.name = name;
    o.parent = parent;
    o.flags = flags;
    o.completion = where_completion;
    o.completion_userdata = w;
    return bgjob_job_create(&o, where_worker, w, NULL, out);
}

/* `child_last`: the child ends after the parent's worker returned. */
static bool parent_completion_thread(bool child_last)
{
    bool ok = true;
    struct gate gp, gc;
    struct where wp, wc;
    bgjob_job *p = NULL, *c = NULL;
    memset(&wp, 0, sizeof wp);
    memset(&wc, 0, sizeof wc);
    gate_init(&gp);
    gate_init(&gc);
    wp.gate = child_last ? NULL : &gp;
    wc.gate = child_last ? &gc : NULL;
    REQUIRE(where_create(&wp, "sj-parent", NULL, BGJOB_CREATE_DEFER_START, &p) ==
            BGJOB_RESULT_OK);
    REQUIRE(where_create(&wc, "sj-child", p, 0, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(p), BGJOB_RESULT_OK);
    if (child_last) {
        CHECK(poll_state(p, BGJOB_STATE_WAITING));
        gate_open(&gc);
    } else {
        CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
        gate_open(&gp);
    }
    CHECK_STATE(wait_end(p), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&wp.completed, 1));
    CHECK(poll_int_eq(&wc.completed, 1));
    CHECK_STR(wp.completion_name, "sj-parent");
    CHECK(!pthread_equal(wp.completion, pthread_self()));
    /* With the sub-job seen ended first, the parent's worker may still
     * return before that sub-job has let go of it (right after its end is
     * published): then it is a bgjob thread of its own, else its worker's;
     * named after the parent either way, as checked above (a pool thread's
     * identity says nothing: the sub-job's, listed idle, may be reused). */
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(p), BGJOB_RESULT_OK);
    gate_destroy(&gp);
    gate_destroy(&gc);
    return ok;
}

static bool test_where_a_parents_completion_runs(void)
{
    bool ok = true;
    for (int i = 0; i < 20; i++) {
        CHECKF(parent_completion_thread(true), "round %d, the sub-job ended last", i);
        CHECKF(parent_completion_thread(false), "round %d, the parent's worker returned last", i);
    }
    return ok;
}

/* A parent whose worker returns (or whose owner ends it) while a sub-job
 * still runs waits for it in WAITING; its work is done all the same, and the
 * header's promises about the work's end hold there: bgjob_job_end (the
 * worker's return) waits for a control call in progress on another thread,
 * the control userdata is freed, and no control call comes after; hooks
 * still registered are removed uncalled, and a later cancel (it reaches the
 * sub-job) calls none. */
struct held {
    struct gate in_pause, let_go; /* the PAUSE call is in; it may return */
    atomic_int pause_calls, calls_after_end, ctl_frees, ended;
    atomic_int hook_calls, hook_frees;
    atomic_int end_rc, end_returned;
    bgjob_job *job;
};

static void held_control(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct held *h = userdata;
    (void)job;
    (void)arg;
    if (atomic_load(&h->ended))
        atomic_fetch_add(&h->calls_after_end, 1);
    if (what == BGJOB_CONTROL_PAUSE && atomic_fetch_add(&h->pause_calls, 1) == 0) {
        gate_open(&h->in_pause);
        gate_wait(&h->let_go);
    }
}

static void held_control_free(void *userdata)
{
    struct held *h = userdata;
    atomic_fetch_add(&h->ctl_frees, 1);
}

static void *held_pause(void *p)
{
    struct held *h = p;
    bgjob_job_pause(h->job);
    return NULL;
}

static void *held_end(void *p)
{
    struct held *h = p;
    atomic_store(&h->end_rc, bgjob_job_end(h->job, 0, NULL));
    atomic_store(&h->ended, 1);
    atomic_store(&h->end_returned, 1);
    return NULL;
}

static void held_hook(void *userdata, bgjob_job *job)
{
    struct held *h = userdata;
    (void)job;
    atomic_fetch_add(&h->hook_calls, 1);
}

static void held_hook_free(void *userdata)
{
    struct held *h = userdata;
    atomic_fetch_add(&h->hook_frees, 1);
}

static bool test_a_waiting_parent_ends_its_work_as_any_job(void)
{
    bool ok = true;
    struct held h;
    struct tracker tc;
    bgjob_job *c = NULL;
    pthread_t pauser, ender;
    memset(&h, 0, sizeof h);
    gate_init(&h.in_pause);
    gate_init(&h.let_go);
    tracker_init(&tc);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.name = "sj-owner";
    o.flags = BGJOB_CREATE_EXTERNAL;
    o.control = held_control;
    o.control_userdata = &h;
    o.control_free = held_control_free;
    REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &h.job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_cancel_hook(h.job, held_hook, &h, held_hook_free, NULL),
             BGJOB_RESULT_OK);
    REQUIRE(create_child(&tc, worker_until_cancel, h.job, 0, &c) == BGJOB_RESULT_OK);
    /* A pause's control call is in progress on another thread... */
    REQUIRE(pthread_create(&pauser, NULL, held_pause, &h) == 0);
    gate_wait(&h.in_pause);
    /* ...when the owner ends the job: the end waits for that call. */
    REQUIRE(pthread_create(&ender, NULL, held_end, &h) == 0);
    for (int i = 0; i < 50; i++) { /* 0.2 s: the end must still be waiting */
        if (atomic_load(&h.end_returned))
            break;
        sleep_ms(4);
    }
    CHECKF(!atomic_load(&h.end_returned),
           "bgjob_job_end returned while a control call ran on another thread");
    gate_open(&h.let_go);
    pthread_join(pauser, NULL);
    pthread_join(ender, NULL);
    CHECK_RC(atomic_load(&h.end_rc), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(h.job), BGJOB_STATE_WAITING);
    /* Its work is done: the control userdata went with it, and the hook
     * nobody called was removed. */
    CHECK_EQ(atomic_load(&h.ctl_frees), 1);
    CHECK_EQ(atomic_load(&h.hook_frees), 1);
    /* A cancel still reaches the sub-job, but calls no hook and tells the
     * owner nothing. */
    CHECK_RC(bgjob_job_cancel(h.job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(h.job), BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&h.hook_calls), 0);
    CHECK_EQ(atomic_load(&h.calls_after_end), 0);
    CHECK_EQ(atomic_load(&h.pause_calls), 1);
    CHECK_EQ(atomic_load(&h.ctl_frees), 1);
    CHECK_EQ(atomic_load(&h.hook_frees), 1);
    CHECK_RC(bgjob_job_destroy(c), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_destroy(h.job), BGJOB_RESULT_OK);
    gate_destroy(&h.in_pause);
    gate_destroy(&h.let_go);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_cancel_flows_down_with_cause_parent),
        TAP_TEST(test_cancelling_a_child_leaves_the_parent_alone),
        TAP_TEST(test_parent_waits_for_a_running_child),
        TAP_TEST(test_child_failure_leaves_parent_completed),
        TAP_TEST(test_nested_three_levels),
        TAP_TEST(test_cancel_of_the_top_reaches_the_grandchild),
        TAP_TEST(test_detached_parent_waits_then_frees_itself),
        TAP_TEST(test_bad_parents_are_refused),
        TAP_TEST(test_child_of_a_cancelled_parent_is_born_cancelled),
        TAP_TEST(test_deferred_child_of_a_cancelled_parent_ends_unrun),
        TAP_TEST(test_where_a_parents_completion_runs),
        TAP_TEST(test_a_waiting_parent_ends_its_work_as_any_job),
    };
    return tap_run(tests, TAP_COUNT(tests));
}
