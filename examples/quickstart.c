/* The README's quick start: one job that counts to a total, watched from main.
 * Build it against an installed bgjob with:
 *   cc -std=c11 quickstart.c $(pkg-config --cflags --libs bgjob) -o quickstart
 */
#define _POSIX_C_SOURCE 200809L
#include <bgjob.h>
#include <stdio.h>
#include <time.h>

static int count_worker(void *userdata, bgjob_job *job)
{
    const unsigned long blocks = *(const unsigned long *)userdata;
    bgjob_job_set_total(job, blocks);
    bgjob_job_set_phase(job, "counting");
    for (unsigned long i = 0; i < blocks; i++) {
        /* Parks here while paused; says so when cancelled. */
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
            return 125; /* ECANCELED: the job ends CANCELLED */
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL); /* one block of "work" */
        bgjob_job_add_units(job, 1);
    }
    return 0; /* success: the job ends COMPLETED */
}

int main(void)
{
    static unsigned long blocks = 200;
    bgjob_job_options opts;
    bgjob_job *job;
    bgjob_result rc;

    bgjob_job_options_init(&opts, sizeof opts);
    opts.name = "quickstart";
    rc = bgjob_job_create(&opts, count_worker, &blocks, NULL, &job);
    if (rc != BGJOB_RESULT_OK) {
        fprintf(stderr, "create: %s\n", bgjob_result_str(rc));
        return 1;
    }

    int32_t state;
    while (bgjob_job_wait(job, 50, &state) == BGJOB_RESULT_TIMED_OUT) {
        bgjob_info info = {.struct_size = sizeof info};
        if (bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK)
            printf("%s: %3d%%  eta %lld ms\n", bgjob_state_str(info.state), info.percent,
                   (long long)info.remaining_ms);
    }
    printf("finished: %s (bgjob %s)\n", bgjob_state_str(state), bgjob_version());
    bgjob_job_destroy(job);
    return state == BGJOB_STATE_COMPLETED ? 0 : 1;
}
