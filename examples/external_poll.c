/* External jobs driven from a poll loop: each job's work is done by a child
 * process (`sh -c` printing one progress percentage per line); the loop
 * watches the children's pipes and bgjob's completion context, turns lines
 * into progress and a child's exit into bgjob_job_end. No job has a thread:
 * verbs reach the loop's side through the control callback, which forwards
 * them to the child — PAUSE as SIGSTOP, RESUME as SIGCONT, CANCEL as SIGTERM.
 * One job has a deadline: bgjob's timer cancels it (cause TIMEOUT) and the
 * control callback, called on the bgjob thread that runs that cancel
 * ("bgjob-deadline", a thread that runs no job), sends the SIGTERM.
 *
 * The example checks itself: it exits 0 only when every job ended as it
 * should, and while it waits no thread of the process is named after a job
 * (/proc/self/task/<tid>/comm). bgjob's own threads here are the timer thread
 * ("bgjob-timer") that deadlines need, and the short-lived thread a deadline's
 * cancel runs on; neither runs a job.
 *
 *   make target/c/examples/external_poll && target/c/examples/external_poll
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <bgjob.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { NJOBS = 4 };

struct work {
    const char *name;
    const char *script;     /* what the child runs */
    int64_t deadline_ms;    /* -1: none */
    bgjob_state want;       /* how the job must end */
    bgjob_cancel_cause want_cause;
    /* Filled at run time. */
    pid_t pid;
    int fd;                 /* read end of the child's stdout; -1 at EOF */
    bgjob_job *job;
    char buf[256];
    size_t len;
    atomic_int controls;    /* control calls seen */
    atomic_int stopped;     /* SIGSTOP sent and not undone */
    int completed;          /* completion delivered (loop thread only) */
    bgjob_state final;
};

static const char *const PROGRESS =
    "i=0; while [ $i -lt 100 ]; do i=$((i+10)); echo $i; sleep 0.05; done";
/* The one the loop pauses: slow enough (3 s) to be still running when the
 * loop gets to it, however late that is. */
static const char *const PROGRESS_SLOW =
    "i=0; while [ $i -lt 100 ]; do i=$((i+10)); echo $i; sleep 0.3; done";
static const char *const FOREVER = "while :; do echo 1; sleep 0.05; done";
static const char *const SILENT = "exec sleep 1000";

static struct work works[NJOBS] = {
    { .name = "ext-copy", .deadline_ms = -1, .want = BGJOB_STATE_COMPLETED,
      .want_cause = BGJOB_CANCEL_CAUSE_NONE },
    { .name = "ext-paused", .deadline_ms = -1, .want = BGJOB_STATE_COMPLETED,
      .want_cause = BGJOB_CANCEL_CAUSE_NONE },
    { .name = "ext-cancel", .deadline_ms = -1, .want = BGJOB_STATE_CANCELLED,
      .want_cause = BGJOB_CANCEL_CAUSE_CALLER },
    { .name = "ext-deadline", .deadline_ms = 300, .want = BGJOB_STATE_CANCELLED,
      .want_cause = BGJOB_CANCEL_CAUSE_TIMEOUT },
};

static int failures;

static void fail(const char *what, const char *name)
{
    fprintf(stderr, "external_poll: FAIL: %s (%s)\n", what, name);
    failures++;
}

/* The control callback: forwards a verb to the child doing the work. Any
 * thread (the loop's for its own verbs, a bgjob thread for the deadline);
 * kill() is safe from any of them. */
static void on_control(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    struct work *w = userdata;
    (void)job, (void)arg;
    atomic_fetch_add(&w->controls, 1);
    switch (what) {
    case BGJOB_CONTROL_PAUSE:
        atomic_store(&w->stopped, 1);
        kill(w->pid, SIGSTOP);
        break;
    case BGJOB_CONTROL_RESUME:
        kill(w->pid, SIGCONT);
        atomic_store(&w->stopped, 0);
        break;
    case BGJOB_CONTROL_CANCEL:
        /* A stopped child must run to see the SIGTERM. */
        kill(w->pid, SIGTERM);
        kill(w->pid, SIGCONT);
        break;
    default:
        break;
    }
}

static void on_complete(void *userdata, bgjob_job *job, bgjob_state state)
{
    struct work *w = userdata;
    bgjob_info info = { .struct_size = sizeof info };
    w->completed++;
    w->final = state;
    if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK)
        fail("get_info in completion", w->name);
    else if (info.cancel_cause != w->want_cause)
        fail("cancel cause", w->name);
    printf("%-13s %-9s (%d%%, %lld ms active, %d control call(s))\n", w->name,
           bgjob_state_str(state), info.percent, (long long)info.elapsed_ms,
           atomic_load(&w->controls));
}

static int start_child(struct work *w)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *argv[] = { "sh", "-c", (char *)w->script, NULL };
    int rc = posix_spawn(&w->pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        return -1;
    }
    w->fd = p[0];
    return 0;
}

/* Whether any thread of this process carries a job's name. */
static int thread_named_after_a_job(void)
{
    DIR *d = opendir("/proc/self/task");
    int found = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        for (int i = 0; i < NJOBS; i++)
            if (strncmp(comm, works[i].name, 15) == 0)
                found = 1;
    }
    closedir(d);
    return found;
}

/* A child's output: one percentage per line becomes the job's progress. */
static void read_output(struct work *w)
{
    ssize_t n = read(w->fd, w->buf + w->len, sizeof w->buf - 1 - w->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        /* EOF: the child is done; its exit status is the job's end. */
        close(w->fd);
        w->fd = -1;
        int status = 0;
        while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR) {
        }
        int32_t code = WIFEXITED(status) ? WEXITSTATUS(status) : 125;
        bgjob_result rc = bgjob_job_end(w->job, code, code ? "child did not succeed" : NULL);
        if (rc != BGJOB_RESULT_OK)
            fail("bgjob_job_end", w->name);
        return;
    }
    w->len += (size_t)n;
    w->buf[w->len] = '\0';
    char *line = w->buf, *nl;
    while ((nl = strchr(line, '\n'))) {
        *nl = '\0';
        int pct = atoi(line);
        if (pct >= 0 && pct <= 100)
            bgjob_job_set_percent(w->job, pct);
        line = nl + 1;
    }
    w->len = strlen(line);
    memmove(w->buf, line, w->len + 1);
}

static bool child_stopped(pid_t pid)
{
    char path[64], stat[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool got = fgets(stat, sizeof stat, f) != NULL;
    fclose(f);
    char *p = strrchr(stat, ')');
    return got && p && p[1] == ' ' && p[2] == 'T';
}

int main(void)
{
    works[0].script = PROGRESS;
    works[1].script = PROGRESS_SLOW;
    works[2].script = FOREVER;
    works[3].script = SILENT;

    bgjob_context *ctx = NULL;
    int32_t ctx_fd = -1;
    if (bgjob_context_create(&ctx) != BGJOB_RESULT_OK ||
        bgjob_context_get_fd(ctx, &ctx_fd) != BGJOB_RESULT_OK) {
        fprintf(stderr, "external_poll: no context\n");
        return 1;
    }
    for (int i = 0; i < NJOBS; i++) {
        struct work *w = &works[i];
        if (start_child(w) != 0) {
            fprintf(stderr, "external_poll: cannot start a child: %s\n", strerror(errno));
            return 1;
        }
        bgjob_job_options opts;
        bgjob_job_options_init(&opts, sizeof opts);
        opts.flags = BGJOB_CREATE_EXTERNAL;
        opts.name = w->name;
        opts.deadline_ms = w->deadline_ms;
        opts.control = on_control;
        opts.control_userdata = w;
        opts.completion = on_complete;
        opts.completion_userdata = w;
        opts.context = ctx;
        if (bgjob_job_create(&opts, NULL, NULL, NULL, &w->job) != BGJOB_RESULT_OK) {
            fprintf(stderr, "external_poll: create failed\n");
            return 1;
        }
    }

    int done = 0, paused_once = 0, cancelled = 0, checks = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (done < NJOBS) {
        struct pollfd pfd[NJOBS + 1];
        struct work *of[NJOBS + 1];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){ .fd = ctx_fd, .events = POLLIN };
        of[n++] = NULL;
        for (int i = 0; i < NJOBS; i++)
            if (works[i].fd >= 0) {
                pfd[n] = (struct pollfd){ .fd = works[i].fd, .events = POLLIN };
                of[n++] = &works[i];
            }
        /* Waiting here: no thread carries a job's name. */
        if (thread_named_after_a_job() != 0)
            fail("a thread is named after a job", "-");
        checks++;
        int r = poll(pfd, n, 1000);
        if (r < 0 && errno != EINTR)
            return 1;
        for (nfds_t k = 1; k < n; k++)
            if (pfd[k].revents)
                read_output(of[k]);
        if (pfd[0].revents) {
            size_t ran = 0;
            bgjob_context_dispatch(ctx, 0, &ran);
            done += (int)ran;
        }
        /* The driver's side: after the first progress, pause one job (its
         * child is stopped), check it, resume it; cancel another. */
        bgjob_info info = { .struct_size = sizeof info };
        if (!paused_once && bgjob_job_get_info(works[1].job, &info) == BGJOB_RESULT_OK &&
            info.percent > 0) {
            paused_once = 1;
            if (bgjob_job_pause(works[1].job) != BGJOB_RESULT_OK)
                fail("pause", works[1].name);
            for (int tries = 0; tries < 2000 && !child_stopped(works[1].pid); tries++)
                usleep(1000);
            if (!child_stopped(works[1].pid))
                fail("the child was not stopped", works[1].name);
            if (bgjob_job_get_info(works[1].job, &info) != BGJOB_RESULT_OK ||
                info.state != BGJOB_STATE_PAUSED)
                fail("not PAUSED", works[1].name);
            if (bgjob_job_resume(works[1].job) != BGJOB_RESULT_OK)
                fail("resume", works[1].name);
        }
        if (!cancelled && bgjob_job_get_info(works[2].job, &info) == BGJOB_RESULT_OK &&
            info.percent > 0) {
            cancelled = 1;
            if (bgjob_job_cancel(works[2].job, NULL) != BGJOB_RESULT_OK)
                fail("cancel", works[2].name);
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 60) {
            fail("timed out", "-");
            break;
        }
    }

    for (int i = 0; i < NJOBS; i++) {
        struct work *w = &works[i];
        if (w->completed != 1)
            fail("completion count", w->name);
        else if (w->final != w->want)
            fail("final state", w->name);
        bgjob_job_destroy(w->job);
    }
    if (atomic_load(&works[1].controls) != 2)
        fail("PAUSE and RESUME forwarded once each", works[1].name);
    if (atomic_load(&works[2].controls) != 1 || atomic_load(&works[3].controls) != 1)
        fail("CANCEL forwarded once", "ext-cancel/ext-deadline");
    bgjob_context_destroy(ctx);
    if (failures) {
        fprintf(stderr, "external_poll: %d failure(s)\n", failures);
        return 1;
    }
    printf("external_poll: ok (%d waits, no thread named after a job)\n", checks);
    return 0;
}
