/* An event-driven progress display: a poll() loop that never polls a job.
 *
 * Every job carries an event callback delivered through one context, the
 * same fd and dispatch as the completions. The loop sleeps in poll() with no
 * timeout; each event (a state change, an I/O-error stop, the end) wakes it,
 * and the handler redraws that job's line from the event plus one
 * bgjob_job_get_info snapshot. The loop also reacts to events, as a
 * hypervisor driver reacts to QEMU's: an ENOSPC stop is "fixed" and the job
 * resumed from the event handler, and the unbounded mirror job is cancelled
 * when the last copy's END arrives.
 *
 * Progress alone makes no event (a worker may update it a million times a
 * second): a line shows the progress as of its job's last event.
 *
 * It checks what it shows (every event on the loop's thread, seq strictly
 * increasing per job, END before each completion, each job's userdata freed
 * once) and exits non-zero if anything is off; `make test-examples` runs it.
 */
#define _POSIX_C_SOURCE 200809L
#include <bgjob.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NJOBS 3
#define MIRROR 2 /* runs until cancelled */
#define FULL_DISK 1 /* hits ENOSPC once, half way */

typedef struct {
    const char *name;
    int blocks;
    bgjob_job *job;
    uint64_t last_seq;
    int events;
    int io_stops;
    bool ended; /* END seen */
    bool completed; /* completion seen */
    bool end_before_completion;
    int frees;
} row;

static row rows[NJOBS] = {
    {.name = "vm1-disk0", .blocks = 40},
    {.name = "vm1-disk1", .blocks = 60},
    {.name = "vm1-mirror", .blocks = 0},
};
static pthread_t loop_thread;
static int off_thread, bad_seq, copies_left = NJOBS - 1, outstanding = NJOBS;
static bool space_added;

static void nap_ms(long ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) == -1 && errno == EINTR) {
    }
}

static int32_t copy_worker(void *userdata, bgjob_job *job)
{
    row *r = userdata;
    bool unbounded = r->blocks == 0;
    if (!unbounded)
        bgjob_job_set_total(job, (uint64_t)r->blocks);
    for (int i = 0; unbounded || i < r->blocks; i++) {
        if (r == &rows[FULL_DISK] && i == r->blocks / 2 && !space_added) {
            bgjob_error_action action = BGJOB_ERROR_ACTION_REPORT;
            bgjob_job_report_io_error(job, ENOSPC, "no space left on the target", &action);
            if (action != BGJOB_ERROR_ACTION_STOP)
                return ENOSPC;
            /* Parked here until the loop resumes it; then the block is retried. */
            if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
                return 125;
            i--;
            continue;
        }
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
            return 125;
        nap_ms(2);
        bgjob_job_add_units(job, 1);
    }
    return 0;
}

static void redraw(row *r, const bgjob_event *ev)
{
    bgjob_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (bgjob_job_get_info(r->job, &info) != BGJOB_RESULT_OK)
        return;
    char what[64];
    switch (ev->kind) {
    case BGJOB_EVENT_KIND_IO_ERROR:
        snprintf(what, sizeof what, "I/O error %d: %s", ev->error_code,
                 ev->action == BGJOB_ERROR_ACTION_STOP ? "stopped" : "reported");
        break;
    case BGJOB_EVENT_KIND_END:
        snprintf(what, sizeof what, "ended %s", bgjob_state_str(ev->new_state));
        break;
    default:
        snprintf(what, sizeof what, "%s -> %s%s", bgjob_state_str(ev->old_state),
                 bgjob_state_str(ev->new_state), ev->coalesced ? " (merged)" : "");
        break;
    }
    if (info.percent >= 0)
        printf("  #%-3llu %-11s %-28s %3d%% (%llu/%llu)\n", (unsigned long long)ev->seq, r->name,
               what, info.percent, (unsigned long long)info.current,
               (unsigned long long)info.total);
    else
        printf("  #%-3llu %-11s %-28s %llu blocks\n", (unsigned long long)ev->seq, r->name, what,
               (unsigned long long)info.current);
}

static void on_event(void *userdata, bgjob_job *job, const bgjob_event *ev)
{
    (void)job;
    row *r = userdata;
    if (!pthread_equal(pthread_self(), loop_thread))
        off_thread++;
    if (ev->seq <= r->last_seq)
        bad_seq++;
    r->last_seq = ev->seq;
    r->events++;
    redraw(r, ev);
    if (ev->kind == BGJOB_EVENT_KIND_IO_ERROR && ev->action == BGJOB_ERROR_ACTION_STOP)
        r->io_stops++;
    /* The stop's PAUSED change follows its IO_ERROR event: add space, resume. */
    if (ev->kind == BGJOB_EVENT_KIND_STATE_CHANGED && ev->new_state == BGJOB_STATE_PAUSED &&
        r->io_stops > 0 && !space_added) {
        printf("  ---- %s: adding space, resuming\n", r->name);
        space_added = true;
        bgjob_job_resume(r->job);
    }
    if (ev->kind == BGJOB_EVENT_KIND_END) {
        r->ended = true;
        if (r != &rows[MIRROR] && --copies_left == 0) {
            printf("  ---- copies done: cancelling the mirror\n");
            bgjob_job_cancel(rows[MIRROR].job, NULL);
        }
    }
}

static void on_free(void *userdata)
{
    ((row *)userdata)->frees++;
}

static void on_done(void *userdata, bgjob_job *job, bgjob_state state)
{
    (void)job;
    (void)state;
    row *r = userdata;
    if (!pthread_equal(pthread_self(), loop_thread))
        off_thread++;
    r->completed = true;
    r->end_before_completion = r->ended;
    outstanding--;
}

int main(void)
{
    loop_thread = pthread_self();
    alarm(60); /* a hang fails the run instead of blocking `make` */
    bgjob_context *ctx = NULL;
    int fd = -1;
    if (bgjob_context_create(&ctx) != BGJOB_RESULT_OK ||
        bgjob_context_get_fd(ctx, &fd) != BGJOB_RESULT_OK)
        return 1;
    for (int i = 0; i < NJOBS; i++) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.name = rows[i].name;
        o.context = ctx;
        o.job_type = rows[i].blocks ? BGJOB_JOB_TYPE_BOUNDED : BGJOB_JOB_TYPE_UNBOUNDED;
        o.error_policy = BGJOB_ERROR_POLICY_ENOSPC;
        o.completion = on_done;
        o.completion_userdata = &rows[i];
        o.event = on_event;
        o.event_userdata = &rows[i];
        o.event_free = on_free;
        if (bgjob_job_create(&o, copy_worker, &rows[i], NULL, &rows[i].job) != BGJOB_RESULT_OK) {
            fprintf(stderr, "create %s failed\n", rows[i].name);
            return 1;
        }
    }
    /* The loop: no timeout, no timer; only the context's fd wakes it. */
    while (outstanding > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return 1;
        if (p.revents & POLLIN)
            bgjob_context_dispatch(ctx, 0, NULL);
    }
    bool ok = off_thread == 0 && bad_seq == 0 && space_added;
    for (int i = 0; i < NJOBS; i++) {
        row *r = &rows[i];
        bgjob_state s = -1;
        bgjob_job_get_state(r->job, &s);
        bool want = i == MIRROR ? s == BGJOB_STATE_CANCELLED : s == BGJOB_STATE_COMPLETED;
        ok = ok && want && r->ended && r->completed && r->end_before_completion && r->frees == 1;
        bgjob_job_destroy(r->job);
    }
    ok = ok && rows[FULL_DISK].io_stops == 1;
    bgjob_context_destroy(ctx);
    printf("events_loop: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
