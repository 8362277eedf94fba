/*
 * test_loader_lock.c: a child forked while another thread of the parent was
 * inside dlopen may make, run and destroy jobs of its own (the header's
 * fork promise), its process's first ones included.
 *
 * In such a child the dynamic loader's state is half-changed (glibc resets
 * its lock in the child, not its lists): a dlopen there aborts the process
 * ("Inconsistency detected by ld.so"). So bgjob's one-time setup (the clock,
 * the barrier) must not call the loader from the first job's create. The
 * parent here never makes a job, so each child's create is its process's
 * first.
 */

#include "util.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHILD_ALARM_S 20
#define FORKS 150
#define LOADERS 3

/* A worker that reports progress once (the clock read the setup prepares). */
static int32_t worker_progress_once(void *userdata, bgjob_job *job)
{
    (void)userdata;
    return bgjob_job_add_units(job, 1) == BGJOB_RESULT_OK ? 0 : 1;
}

/* ---- forked while another thread loads and unloads a library ------------- */

static atomic_int stop_loading;

static void *load_loop(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_loading)) {
        void *h = dlopen("libanl.so.1", RTLD_NOW | RTLD_LOCAL);
        if (h != NULL)
            dlclose(h);
    }
    return NULL;
}

static bool child_makes_its_first_job(void)
{
    bool ok = true;
    struct tracker t;
    bgjob_job *job = NULL;

    tracker_init(&t);
    CHECK_RC(job_create(&t, worker_progress_once, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &job),
             BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

static bool test_first_create_in_a_child_forked_during_dlopen(void)
{
    bool ok = true;
    pthread_t loader[LOADERS];

    atomic_store(&stop_loading, 0);
    for (int i = 0; i < LOADERS; i++)
        REQUIRE(pthread_create(&loader[i], NULL, load_loop, NULL) == 0);
    for (int i = 0; i < FORKS && ok; i++) {
        CHECK(in_child(CHILD_ALARM_S, child_makes_its_first_job));
        sleep_us(50 + 7 * (i % 50));
    }
    atomic_store(&stop_loading, 1);
    for (int i = 0; i < LOADERS; i++)
        pthread_join(loader[i], NULL);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_first_create_in_a_child_forked_during_dlopen),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
