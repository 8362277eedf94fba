/* bgjob jobs completing inside GLib's main loop.
 *
 * The context's fd is added to the default GMainContext with g_unix_fd_add();
 * when it is readable the loop calls bgjob_context_dispatch(), so every
 * completion callback runs on the loop's thread, as GTask callbacks do. The
 * jobs start from an idle callback and complete while the loop runs; one of
 * them starts a follow-up job from its completion callback, and one is
 * cancelled by a timeout source.
 *
 * It checks what it shows and exits non-zero if anything is off; `make test`
 * builds and runs it (GLib's development files: Debian's libglib2.0-dev).
 */
#include <bgjob.h>

#include <glib-unix.h>
#include <glib.h>
#include <stdio.h>

#define NJOBS 5

typedef struct {
    GMainLoop *loop;
    bgjob_context *ctx;
    GThread *loop_thread;
    bgjob_job *slow;
    int outstanding;
    int completed, cancelled, off_thread, followups;
} app;

static int copy_worker(void *userdata, bgjob_job *job)
{
    guint blocks = GPOINTER_TO_UINT(userdata);
    bgjob_job_set_total(job, blocks);
    for (guint i = 0; i < blocks; i++) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED)
            return 125;
        g_usleep(1000);
        bgjob_job_add_units(job, 1);
    }
    return 0;
}

static void job_done(void *userdata, bgjob_job *job, int32_t state);

static void submit(app *a, const char *name, guint blocks, bgjob_job **job_out)
{
    bgjob_result rc = bgjob_run_in_thread(a->ctx, name, copy_worker, GUINT_TO_POINTER(blocks),
                                          NULL, job_done, a, NULL, job_out);
    g_assert_cmpint(rc, ==, BGJOB_RESULT_OK);
    a->outstanding++;
}

static void job_done(void *userdata, bgjob_job *job, int32_t state)
{
    app *a = userdata;
    char name[32];
    bgjob_job_get_name(job, name, sizeof name, NULL);
    if (g_thread_self() != a->loop_thread)
        a->off_thread++;
    g_print("  %-10s %s\n", name, bgjob_state_str(state));
    if (state == BGJOB_STATE_COMPLETED)
        a->completed++;
    else if (state == BGJOB_STATE_CANCELLED)
        a->cancelled++;
    /* A callback may start new jobs: the first one to finish asks for more. */
    if (state == BGJOB_STATE_COMPLETED && a->followups == 0) {
        a->followups++;
        submit(a, "follow-up", 10, NULL);
    }
    if (job == a->slow) {
        bgjob_job_destroy(job); /* destroying the job inside its own callback */
        a->slow = NULL;
    }
    if (--a->outstanding == 0)
        g_main_loop_quit(a->loop);
}

static gboolean on_context_readable(gint fd, GIOCondition cond, gpointer userdata)
{
    (void)fd;
    (void)cond;
    app *a = userdata;
    bgjob_context_dispatch(a->ctx, 0, NULL);
    return G_SOURCE_CONTINUE;
}

static gboolean start_jobs(gpointer userdata)
{
    app *a = userdata;
    for (int i = 0; i < NJOBS; i++) {
        char name[16];
        g_snprintf(name, sizeof name, "copy-%d", i);
        submit(a, name, 20 + 10 * (guint)i, NULL);
    }
    submit(a, "slow", 100000, &a->slow);
    return G_SOURCE_REMOVE;
}

static gboolean cancel_slow(gpointer userdata)
{
    app *a = userdata;
    if (a->slow)
        bgjob_job_cancel(a->slow, NULL);
    return G_SOURCE_REMOVE;
}

static gboolean give_up(gpointer userdata)
{
    app *a = userdata;
    g_printerr("timed out with %d jobs outstanding\n", a->outstanding);
    g_main_loop_quit(a->loop);
    return G_SOURCE_REMOVE;
}

int main(void)
{
    app a = {0};
    int fd;
    a.loop = g_main_loop_new(NULL, FALSE);
    a.loop_thread = g_thread_self();
    g_assert_cmpint(bgjob_context_create(&a.ctx), ==, BGJOB_RESULT_OK);
    g_assert_cmpint(bgjob_context_get_fd(a.ctx, &fd), ==, BGJOB_RESULT_OK);

    guint watch = g_unix_fd_add(fd, G_IO_IN, on_context_readable, &a);
    g_idle_add(start_jobs, &a);
    g_timeout_add(100, cancel_slow, &a);
    guint guard = g_timeout_add_seconds(20, give_up, &a);
    g_main_loop_run(a.loop);

    g_source_remove(guard);
    g_source_remove(watch);
    bgjob_context_destroy(a.ctx);
    g_main_loop_unref(a.loop);

    g_print("%d completed, %d cancelled, %d follow-up, %d callbacks off the loop thread\n",
            a.completed, a.cancelled, a.followups, a.off_thread);
    gboolean ok = a.outstanding == 0 && a.completed == NJOBS + 1 && a.cancelled == 1 &&
                  a.off_thread == 0 && a.slow == NULL;
    g_print("glib_loop: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
