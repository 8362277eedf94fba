/* Adversarial cases written from the headers alone (include/bgjob.h,
 * README.md, docs/), aimed at what earlier rounds touched least: child
 * processes (captured lines, hostile argv/env/cwd, children that exit at
 * once, close their output, ignore SIGTERM or leave grandchildren behind,
 * cancels during bgjob_job_wait_child), the pool's cap (changed while jobs
 * queue, lowered below what runs, 0, status consistency, fork), transactions
 * crossed with cancels, destroys, detaches and manual finalize, callbacks
 * calling back in, the error policy's races, handle reuse (ABA) and the
 * "exactly once" sentences. Each case quotes the sentence it holds the
 * library to. Every wait is bounded: a hang is a failure, never a hung
 * suite. ATK5_ONLY=<substring> runs only the matching cases.
 *
 * Cases that FAILED on 063191b, where they were written (every run), and
 * pass since the fixes that came with this file:
 * - test_commit_callback_calls_finalize_and_destroy_on_its_job and
 *   test_manual_finalize_passes_through_waiting_while_finalizing: a
 *   manual-finalize job finalized by bgjob_job_finalize runs commit and
 *   clean while it reads PENDING, and its events go RUNNING -> PENDING ->
 *   COMPLETED; the header says the end "passes through WAITING while its
 *   commit/abort and clean callbacks run, as every job does";
 * - test_completion_on_a_capped_worker_thread_may_wait_for_a_queued_job:
 *   under a cap of 1, a completion running on its ended job's worker
 *   thread still holds the slot, so a queued job does not start until the
 *   completion returns (a completion that waits for it times out).
 * The others passed. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

/* Whether a process is alive (a zombie counts as dead). */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] == 0 || p[2] == 0)
        return '?';
    return p[2];
}

static bool proc_alive(pid_t pid)
{
    char s = proc_state(pid);
    return s != 0 && s != 'Z' && s != 'X';
}

static bool poll_dead(pid_t pid, int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (proc_alive(pid)) {
        if (now_ms() > end)
            return false;
        sleep_ms(5);
    }
    return true;
}

static bool comm_is(pid_t pid, const char *want)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    if (fgets(comm, sizeof comm, f) == NULL)
        comm[0] = 0;
    fclose(f);
    return strncmp(comm, want, strlen(want)) == 0;
}

/* ------------------------------------------------------------------ */
/* Child processes                                                      */

#define MAX_LINES 32

struct lines {
    pthread_mutex_t mu;
    int n;
    int stream[MAX_LINES];
    char text[MAX_LINES][128];
    atomic_int frees;
    atomic_int calls;
    /* Optional behaviour on the first line. */
    bool cancel_on_first;          /* bgjob_job_cancel(job) from the callback */
    struct gate *hold;             /* announce, then block here on the first line */
    atomic_int held;               /* set when the callback is holding */
    atomic_int cancel_rc;
};

static void lines_init(struct lines *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
}

static void lines_free(void *ud)
{
    struct lines *l = ud;
    atomic_fetch_add(&l->frees, 1);
}

static void on_line(void *ud, bgjob_job *job, int32_t stream, const char *line, size_t len)
{
    struct lines *l = ud;
    int k = atomic_fetch_add(&l->calls, 1);
    pthread_mutex_lock(&l->mu);
    if (l->n < MAX_LINES) {
        l->stream[l->n] = stream;
        size_t c = len < 127 ? len : 127;
        memcpy(l->text[l->n], line, c);
        l->text[l->n][c] = 0;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
    if (k == 0 && l->cancel_on_first)
        atomic_store(&l->cancel_rc, bgjob_job_cancel(job, NULL));
    if (k == 0 && l->hold != NULL) {
        atomic_store(&l->held, 1);
        gate_wait(l->hold);
    }
}

struct ccase {
    const char *const *argv;
    const char *const *envp;
    const char *cwd;
    uint32_t flags;
    int64_t grace_ms;
    int64_t timeout_ms;
    struct lines *lines;
    bool skip_wait;          /* return without waiting for the child */
    /* Results. */
    atomic_int spawn_rc;
    atomic_int spawn_errno;
    atomic_int pid;
    atomic_int wait_rc;
    atomic_int wstatus;
    atomic_long wait_took_ms; /* from just before the spawn to the wait's return */
    atomic_int wait_done;
    atomic_int frees;
};

static void ccase_init(struct ccase *c, const char *const *argv)
{
    memset(c, 0, sizeof *c);
    c->argv = argv;
    c->grace_ms = BGJOB_CHILD_DEFAULT_GRACE_MS;
    c->timeout_ms = LONG_MS;
    atomic_store(&c->spawn_rc, -1);
    atomic_store(&c->wait_rc, -1);
    atomic_store(&c->wstatus, -1);
}

static void ccase_free(void *ud)
{
    struct ccase *c = ud;
    atomic_fetch_add(&c->frees, 1);
}

static int32_t child_worker(void *ud, bgjob_job *job)
{
    struct ccase *c = ud;
    bgjob_child_options o;
    bgjob_child_options_init(&o, sizeof o);
    o.argv = c->argv;
    o.envp = c->envp;
    o.cwd = c->cwd;
    o.flags = c->flags;
    o.grace_ms = c->grace_ms;
    if (c->lines != NULL) {
        o.on_line = on_line;
        o.line_userdata = c->lines;
        o.line_free = lines_free;
    }
    int32_t pid = -1;
    errno = 0;
    int64_t t0 = now_ms(); /* before the spawn: the child's run is all after it */
    bgjob_result r = bgjob_job_spawn_child(job, &o, &pid);
    atomic_store(&c->spawn_errno, errno);
    atomic_store(&c->pid, pid);
    atomic_store(&c->spawn_rc, r);
    if (r != BGJOB_RESULT_OK || c->skip_wait)
        return r == BGJOB_RESULT_OK ? 0 : 50;
    int32_t ws = -1;
    r = bgjob_job_wait_child(job, pid, c->timeout_ms, &ws);
    atomic_store(&c->wait_took_ms, now_ms() - t0);
    atomic_store(&c->wstatus, ws);
    atomic_store(&c->wait_rc, r);
    atomic_store(&c->wait_done, 1);
    return r == BGJOB_RESULT_OK ? 0 : 60;
}

static bgjob_job *ccase_start(struct ccase *c)
{
    bgjob_job *job = NULL;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    if (bgjob_job_create(&o, child_worker, c, ccase_free, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

static bool lines_has(struct lines *l, const char *want)
{
    bool found = false;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->text[i], want) == 0)
            found = true;
    pthread_mutex_unlock(&l->mu);
    return found;
}

/* "A line ends at `\n`, `\r` (progress meters redraw with it) or `\r\n`;
 * empty lines are skipped". A child that writes and exits at once: every
 * line arrives, split where the header says, none empty, and `line_free`
 * runs exactly once ("when the child has been waited for"). The last line
 * has no terminator: the child's exit ends it. */
static bool test_instant_child_lines_split_on_cr_lf_and_crlf(void)
{
    bool ok = true;
    static const char *const argv[] = {
        "sh", "-c", "printf 'one\\rtwo\\r\\nthree\\n\\n\\r\\nfour'; printf 'err\\n' >&2", NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT | BGJOB_CHILD_CAPTURE_STDERR;
    c.lines = &l;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&c.spawn_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_OK);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "status 0x%x", ws);
    pthread_mutex_lock(&l.mu);
    int n = l.n;
    pthread_mutex_unlock(&l.mu);
    CHECK(lines_has(&l, "one"));
    CHECK(lines_has(&l, "two"));
    CHECK(lines_has(&l, "three"));
    CHECKF(lines_has(&l, "four"), "the unterminated last line was not delivered");
    CHECK(lines_has(&l, "err"));
    for (int i = 0; i < n; i++) {
        CHECKF(l.text[i][0] != 0, "line %d is empty", i);
        if (strcmp(l.text[i], "err") == 0)
            CHECK_EQ(l.stream[i], BGJOB_CHILD_STDERR);
        else
            CHECK_EQ(l.stream[i], BGJOB_CHILD_STDOUT);
    }
    CHECK_EQ(n, 5);
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_EQ(atomic_load(&c.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "Returns when the child has ended and been reaped". A child that closes
 * its captured stdout and stderr and goes on running: the wait must last
 * until it ends and give its status (3), not return at EOF. */
static bool test_child_closing_its_captured_output_is_still_waited_for(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "exec >&- 2>&-; sleep 0.4; exit 3", NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT | BGJOB_CHILD_CAPTURE_STDERR;
    c.lines = &l;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_OK);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 3, "status 0x%x", ws);
    CHECKF(atomic_load(&c.wait_took_ms) >= 300, "the wait returned after %ld ms",
           atomic_load(&c.wait_took_ms));
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "Returns when the child has ended and been reaped". A child that exits at
 * once but leaves a background grandchild holding its captured stdout: the
 * child has ended, so the wait returns with its status (4) — it must not
 * wait for the grandchild's 8 s to drain the pipe. */
static bool test_wait_child_returns_when_the_child_ends_not_its_pipe(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "sleep 8 & echo hi; exit 4", NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    int64_t t0 = now_ms();
    bgjob_state st = -1;
    bgjob_result r = bgjob_job_wait(job, 20000, &st);
    int64_t took = now_ms() - t0;
    CHECK_RC(r, BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_OK);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 4, "status 0x%x", ws);
    CHECKF(atomic_load(&c.wait_took_ms) < 4000,
           "wait_child took %ld ms for a child that exited at once (waited for the pipe?)",
           atomic_load(&c.wait_took_ms));
    CHECK(lines_has(&l, "hi"));
    (void)took;
    if (r == BGJOB_RESULT_OK)
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "On cancel bgjob sends the group SIGTERM, then SIGKILL when `grace_ms` has
 * passed" and "A cancel does not cut the wait short ... returns
 * BGJOB_RESULT_CANCELLED with the status set". A child that ignores SIGTERM,
 * cancelled while the worker is inside wait_child (held there by the line
 * callback): CANCELLED with SIGKILL, after the grace, well before the
 * default 5 s. */
static bool test_cancel_during_wait_child_of_a_term_ignoring_child(void)
{
    bool ok = true;
    static const char *const argv[] = {
        "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done", NULL};
    struct gate g;
    gate_init(&g);
    struct lines l;
    lines_init(&l);
    l.hold = &g;
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    c.grace_ms = 300;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&l.held, 1));
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    int64_t took = now_ms() - t0;
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_CANCELLED);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status 0x%x", ws);
    CHECKF(took >= 250 && took < 4000, "ended %lld ms after a cancel with a 300 ms grace",
           (long long)took);
    CHECK(!proc_alive(atomic_load(&c.pid)));
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* "once the child itself has exited after a cancel, whatever is left of its
 * group gets SIGKILL at once". The child dies of SIGTERM; its grandchild (in
 * its group) ignores SIGTERM. With a 20 s grace, the grandchild must die at
 * once after the child, not 20 s later. */
static bool test_grandchild_ignoring_term_is_killed_once_the_child_exits(void)
{
    bool ok = true;
    static const char *const argv[] = {
        "sh", "-c", "(trap '' TERM; exec sleep 60) & echo $!; wait", NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    c.grace_ms = 20000;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&l.calls, 1));
    pid_t g = (pid_t)atoi(l.text[0]);
    REQUIRE(g > 0);
    for (int i = 0; i < 300 && !comm_is(g, "sleep"); i++)
        sleep_ms(10);
    CHECK(comm_is(g, "sleep"));
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(job, 25000, &st), BGJOB_RESULT_OK);
    int64_t took = now_ms() - t0;
    CHECK_STATE(st, BGJOB_STATE_CANCELLED);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM, "status 0x%x", ws);
    CHECKF(took < 5000, "the job ended %lld ms after the cancel", (long long)took);
    CHECKF(poll_dead(g, 3000), "grandchild %d (ignores SIGTERM) still %c 3 s after its parent died",
           (int)g, proc_state(g));
    if (proc_alive(g))
        kill(g, SIGKILL);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "It may call any bgjob function except waiting for the same child" (the
 * line callback). The callback cancels its own job on the first line: the
 * wait it runs inside returns CANCELLED with the child's SIGTERM status. */
static bool test_line_callback_cancels_its_own_job(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "echo go; exec sleep 30", NULL};
    struct lines l;
    lines_init(&l);
    l.cancel_on_first = true;
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(job, 15000, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&l.cancel_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_CANCELLED);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM, "status 0x%x", ws);
    if (st >= 0)
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "The program is found in `PATH` when `argv[0]` has no `/`: the `PATH` of
 * `envp` if it sets one, else this process's." With envp's PATH naming a
 * directory holding only `mytool5`, `mytool5` runs (exit 7) and `true`
 * (which this process's PATH has) is not found: SYSTEM, ENOENT, line_free
 * once. */
static bool test_envp_path_decides_the_lookup(void)
{
    bool ok = true;
    char dir[] = "/tmp/atk5pathXXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char tool[128], pathvar[160];
    snprintf(tool, sizeof tool, "%s/mytool5", dir);
    snprintf(pathvar, sizeof pathvar, "PATH=%s", dir);
    FILE *f = fopen(tool, "w");
    REQUIRE(f != NULL);
    fputs("#!/bin/sh\nexit 7\n", f);
    fclose(f);
    chmod(tool, 0755);

    const char *envp[] = {pathvar, "X=1", NULL};
    static const char *const argv1[] = {"mytool5", NULL};
    struct ccase c;
    ccase_init(&c, argv1);
    c.envp = envp;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&c.spawn_rc), BGJOB_RESULT_OK);
    int ws = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 7, "status 0x%x", ws);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    static const char *const argv2[] = {"true", NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c2;
    ccase_init(&c2, argv2);
    c2.envp = envp;
    c2.lines = &l;
    c2.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    job = ccase_start(&c2);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&c2.spawn_rc), BGJOB_RESULT_SYSTEM);
    CHECK_EQ(atomic_load(&c2.spawn_errno), ENOENT);
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    unlink(tool);
    rmdir(dir);
    return ok;
}

/* "`BGJOB_RESULT_SYSTEM` if the program could not be started, and did not
 * run". A working directory that does not exist: SYSTEM (the program never
 * ran: the marker file it would make is absent), line_free exactly once.
 * An environment entry without '=' is INVALID_ARGUMENT. */
static bool test_bad_cwd_and_env_are_refused_and_nothing_runs(void)
{
    bool ok = true;
    char marker[] = "/tmp/atk5markXXXXXX";
    int fd = mkstemp(marker);
    REQUIRE(fd >= 0);
    close(fd);
    unlink(marker);
    char script[256];
    snprintf(script, sizeof script, "touch %s", marker);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    struct lines l;
    lines_init(&l);
    struct ccase c;
    ccase_init(&c, argv);
    c.cwd = "/nonexistent/atk5/dir";
    c.lines = &l;
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&c.spawn_rc), BGJOB_RESULT_SYSTEM);
    CHECK_EQ(atomic_load(&c.spawn_errno), ENOENT);
    CHECK(access(marker, F_OK) != 0);
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    const char *envp[] = {"GOOD=1", "NOEQUALS", NULL};
    struct lines l2;
    lines_init(&l2);
    struct ccase c2;
    ccase_init(&c2, argv);
    c2.envp = envp;
    c2.lines = &l2;
    c2.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    job = ccase_start(&c2);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&c2.spawn_rc), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK(access(marker, F_OK) != 0);
    CHECK_EQ(atomic_load(&l2.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    unlink(marker);
    return ok;
}

/* "`BGJOB_RESULT_INVALID_ARGUMENT` for a timeout below −1 or when another
 * thread is waiting for the same child". The worker is inside wait_child
 * (held in the line callback): a second wait on another thread is refused,
 * and the worker's own wait then completes normally. */
static bool test_second_wait_for_the_same_child_is_refused(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "echo x; sleep 0.3; exit 9", NULL};
    struct gate g;
    gate_init(&g);
    struct lines l;
    lines_init(&l);
    l.hold = &g;
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&l.held, 1));
    int32_t ws = -5;
    CHECK_RC(bgjob_job_wait_child(job, atomic_load(&c.pid), 0, &ws),
             BGJOB_RESULT_INVALID_ARGUMENT);
    gate_open(&g);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    int st = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 9, "status 0x%x", st);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* "While the job is paused the worker parks here (the child keeps running)
 * and the paused time does not count toward `timeout_ms`". A 2 s wait for a
 * child that exits after 2.5 s, paused for 3 s from inside the wait: the
 * child ends during the pause, so the wait gives OK with status 5 after the
 * resume — never TIMED_OUT. (2 s: room for a stall before the pause lands.) */
static bool test_paused_time_does_not_count_toward_wait_child_timeout(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "echo x; sleep 2.5; exit 5", NULL};
    struct gate g;
    gate_init(&g);
    struct lines l;
    lines_init(&l);
    l.hold = &g;
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    c.timeout_ms = 2000;
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&l.held, 1));
    CHECK_RC(bgjob_job_pause(job), BGJOB_RESULT_OK);
    gate_open(&g);
    sleep_ms(3000);
    CHECK_EQ(atomic_load(&c.wait_done), 0);
    CHECK_RC(bgjob_job_resume(job), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_OK);
    int st = atomic_load(&c.wstatus);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 5, "status 0x%x", st);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* "A child still bound when the worker returns is killed with its group and
 * reaped before the job ends, so none outlives its job and none is left a
 * zombie." A child (and grandchild) ignoring SIGTERM, with the default 5 s
 * grace, left bound: once the job is seen ended both are gone. */
static bool test_term_ignoring_child_left_bound_is_gone_when_the_job_ends(void)
{
    bool ok = true;
    static const char *const argv[] = {
        "sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait", NULL};
    struct lines l;
    lines_init(&l);
    struct gate g;
    gate_init(&g);
    l.hold = &g;
    struct ccase c;
    ccase_init(&c, argv);
    c.flags = BGJOB_CHILD_CAPTURE_STDOUT;
    c.lines = &l;
    c.timeout_ms = 50; /* times out, the child stays bound; the worker returns */
    bgjob_job *job = ccase_start(&c);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&l.held, 1));
    pid_t gpid = (pid_t)atoi(l.text[0]);
    pid_t pid = atomic_load(&c.pid);
    gate_open(&g);
    bgjob_state st = -1;
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_wait(job, 20000, &st), BGJOB_RESULT_OK);
    int64_t took = now_ms() - t0;
    CHECK_RC(atomic_load(&c.wait_rc), BGJOB_RESULT_TIMED_OUT);
    CHECKF(!proc_alive(pid), "child %d still %c after its job ended", (int)pid, proc_state(pid));
    CHECKF(proc_state(pid) == 0, "child %d left %c after its job ended", (int)pid,
           proc_state(pid));
    /* The grandchild is no child of this process's bgjob: it was sent the
     * group's SIGKILL before the end, and may still be on its way out
     * (state R) as the end is seen, on a loaded machine. */
    CHECKF(gpid <= 0 || poll_dead(gpid, LONG_MS), "grandchild %d still %c after its job ended",
           (int)gpid, proc_state(gpid));
    tap_diag("the end took %lld ms", (long long)took);
    if (gpid > 0 && proc_alive(gpid))
        kill(gpid, SIGKILL);
    if (st >= 0)
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* bgjob_job_watch_child: "`BGJOB_RESULT_INVALID_ARGUMENT` for a pid ≤ 0, a
 * process that is not this process's child, a pid already watched". Then
 * "`bgjob_job_wait_child` reaps it": the status is the child's, and a second
 * wait is NOT_FOUND ("already waited for"). */
struct watch_res {
    atomic_int rc_init, rc_zero, rc_first, rc_twice, rc_wait, rc_again, ws;
};

static int32_t watch_worker(void *ud, bgjob_job *job)
{
    struct watch_res *w = ud;
    atomic_store(&w->rc_init, bgjob_job_watch_child(job, 1, 100));
    atomic_store(&w->rc_zero, bgjob_job_watch_child(job, 0, 100));
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        _exit(11);
    }
    atomic_store(&w->rc_first, bgjob_job_watch_child(job, pid, 100));
    atomic_store(&w->rc_twice, bgjob_job_watch_child(job, pid, 100));
    int32_t ws = -1;
    atomic_store(&w->rc_wait, bgjob_job_wait_child(job, pid, 10000, &ws));
    atomic_store(&w->ws, ws);
    atomic_store(&w->rc_again, bgjob_job_wait_child(job, pid, 0, &ws));
    return 0;
}

static bool test_watch_child_refusals_and_reap(void)
{
    bool ok = true;
    struct watch_res w;
    memset(&w, 0, sizeof w);
    bgjob_job *job = NULL;
    REQUIRE(bgjob_job_create(NULL, watch_worker, &w, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rc_init), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.rc_zero), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.rc_first), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.rc_twice), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.rc_wait), BGJOB_RESULT_OK);
    int ws = atomic_load(&w.ws);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 11, "status 0x%x", ws);
    CHECK_RC(atomic_load(&w.rc_again), BGJOB_RESULT_NOT_FOUND);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* "BGJOB_CHILD_SURVIVES_CANCEL ... `bgjob_job_wait_child` waits for it to its
 * end and returns `BGJOB_RESULT_OK` with its status, cancel or not". Spawned
 * after the cancel (a cleanup step) and waited for: OK, exit 6, after its
 * 300 ms run; an ordinary spawn then is refused with CANCELLED and runs
 * nothing. */
struct survivor {
    atomic_int rc_plain, rc_spawn, rc_wait, ws;
    atomic_long took;
};

static int32_t survivor_worker(void *ud, bgjob_job *job)
{
    struct survivor *s = ud;
    while (bgjob_job_check_cancel(job) != BGJOB_RESULT_CANCELLED)
        sleep_ms(1);
    static const char *const plain[] = {"/bin/true", NULL};
    static const char *const argv[] = {"sh", "-c", "sleep 0.3; exit 6", NULL};
    bgjob_child_options o;
    bgjob_child_options_init(&o, sizeof o);
    o.argv = plain;
    int32_t pid = 0;
    atomic_store(&s->rc_plain, bgjob_job_spawn_child(job, &o, &pid));
    o.argv = argv;
    o.flags = BGJOB_CHILD_SURVIVES_CANCEL;
    o.grace_ms = 0;
    int64_t t0 = now_ms(); /* before the spawn: the child's 300 ms are all after it */
    atomic_store(&s->rc_spawn, bgjob_job_spawn_child(job, &o, &pid));
    int32_t ws = -1;
    atomic_store(&s->rc_wait, bgjob_job_wait_child(job, pid, 10000, &ws));
    atomic_store(&s->took, now_ms() - t0);
    atomic_store(&s->ws, ws);
    return 1;
}

static bool test_cleanup_child_after_cancel_runs_to_its_end(void)
{
    bool ok = true;
    struct survivor s;
    memset(&s, 0, sizeof s);
    bgjob_job *job = NULL;
    REQUIRE(bgjob_job_create(NULL, survivor_worker, &s, NULL, &job) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&s.rc_plain), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&s.rc_spawn), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&s.rc_wait), BGJOB_RESULT_OK);
    int ws = atomic_load(&s.ws);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 6, "status 0x%x", ws);
    CHECK(atomic_load(&s.took) >= 300);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* The pool's cap                                                       */

static atomic_int inflight, inflight_max, inflight_runs;

static int32_t counting_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    int now = atomic_fetch_add(&inflight, 1) + 1;
    int m = atomic_load(&inflight_max);
    while (now > m && !atomic_compare_exchange_weak(&inflight_max, &m, now))
        ;
    atomic_fetch_add(&inflight_runs, 1);
    sleep_ms(3);
    atomic_fetch_sub(&inflight, 1);
    return 0;
}

struct status_reader {
    atomic_int stop;
    atomic_int bad;
    atomic_long samples;
    uint32_t cap;
    char why[128];
};

static void *status_reader_main(void *p)
{
    struct status_reader *s = p;
    while (!atomic_load(&s->stop)) {
        uint32_t m = 99;
        size_t running = 0, queued = 0;
        if (bgjob_pool_get_status(&m, &running, &queued) != BGJOB_RESULT_OK) {
            atomic_store(&s->bad, 1);
            continue;
        }
        atomic_fetch_add(&s->samples, 1);
        if (m != s->cap || running > s->cap) {
            if (!atomic_exchange(&s->bad, 1))
                snprintf(s->why, sizeof s->why, "cap %u running %zu queued %zu", m, running,
                         queued);
        }
    }
    return NULL;
}

/* "With a cap of `n`, at most `n` workers run". 40 short jobs under a cap
 * of 2, with a reader sampling bgjob_pool_get_status: never more than 2
 * workers inside their callbacks, never more than 2 running in the status,
 * and each job runs once. */
static bool test_cap_is_never_exceeded_and_status_agrees(void)
{
    bool ok = true;
    enum { N = 40 };
    atomic_store(&inflight, 0);
    atomic_store(&inflight_max, 0);
    atomic_store(&inflight_runs, 0);
    CHECK_RC(bgjob_pool_set_max_running(2), BGJOB_RESULT_OK);
    struct status_reader s;
    memset(&s, 0, sizeof s);
    s.cap = 2;
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, status_reader_main, &s) == 0);
    bgjob_job *jobs[N];
    for (int i = 0; i < N; i++)
        CHECK_RC(bgjob_job_create(NULL, counting_worker, NULL, NULL, &jobs[i]), BGJOB_RESULT_OK);
    for (int i = 0; i < N; i++) {
        CHECK_STATE(wait_end(jobs[i]), BGJOB_STATE_COMPLETED);
        bgjob_job_destroy(jobs[i]);
    }
    atomic_store(&s.stop, 1);
    pthread_join(th, NULL);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&inflight_runs), N);
    CHECKF(atomic_load(&inflight_max) <= 2, "%d workers ran at once under a cap of 2",
           atomic_load(&inflight_max));
    CHECKF(!atomic_load(&s.bad), "status broke the cap: %s", s.why);
    size_t running = 9, queued = 9;
    CHECK_RC(bgjob_pool_get_status(NULL, &running, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(queued, 0);
    return ok;
}

/* "lowering it stops nothing: running workers finish and queued jobs start
 * only while fewer than the new cap run" and "Raising or removing the cap
 * starts queued jobs at once". Cap 3 with 3 gated workers and 3 queued;
 * lowered to 1: nothing queued starts while 2, then 1, still run; once none
 * runs, exactly one starts; removing the cap (0) starts the rest at once. */
static bool test_lowered_cap_then_removed(void)
{
    bool ok = true;
    enum { R = 3, Q = 3 };
    struct gate g[R], gq;
    struct tracker tr[R], tq[Q];
    bgjob_job *rj[R], *qj[Q];
    gate_init(&gq);
    CHECK_RC(bgjob_pool_set_max_running(3), BGJOB_RESULT_OK);
    for (int i = 0; i < R; i++) {
        gate_init(&g[i]);
        tracker_init(&tr[i]);
        tr[i].gate = &g[i];
        REQUIRE(job_create(&tr[i], worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &rj[i]) ==
                BGJOB_RESULT_OK);
        REQUIRE(poll_int_eq(&tr[i].runs, 1));
    }
    for (int i = 0; i < Q; i++) {
        tracker_init(&tq[i]);
        tq[i].gate = &gq;
        REQUIRE(job_create(&tq[i], worker_gated, 0, BGJOB_JOB_TYPE_BOUNDED, NULL, &qj[i]) ==
                BGJOB_RESULT_OK);
        CHECK_STATE(state_of(qj[i]), BGJOB_STATE_RUNNING);
    }
    uint32_t m = 0;
    size_t running = 0, queued = 0;
    CHECK_RC(bgjob_pool_get_status(&m, &running, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(m, 3);
    CHECK_EQ(running, 3);
    CHECK_EQ(queued, 3);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_pool_get_status(&m, &running, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(m, 1);
    CHECK_EQ(running, 3);
    CHECK_EQ(queued, 3);
    for (int i = 0; i < R - 1; i++) {
        gate_open(&g[i]);
        CHECK_STATE(wait_end(rj[i]), BGJOB_STATE_COMPLETED);
        sleep_ms(100);
        int started = 0;
        for (int k = 0; k < Q; k++)
            started += atomic_load(&tq[k].runs);
        CHECKF(started == 0, "%d queued jobs started while %d ran under a cap of 1", started,
               R - 1 - i);
    }
    gate_open(&g[R - 1]);
    CHECK_STATE(wait_end(rj[R - 1]), BGJOB_STATE_COMPLETED);
    int64_t end = now_ms() + LONG_MS;
    int started = 0;
    while (now_ms() < end) {
        started = 0;
        for (int k = 0; k < Q; k++)
            started += atomic_load(&tq[k].runs);
        if (started >= 1)
            break;
        sleep_ms(1);
    }
    sleep_ms(150);
    started = 0;
    for (int k = 0; k < Q; k++)
        started += atomic_load(&tq[k].runs);
    CHECKF(started == 1, "%d queued jobs started under a cap of 1 with none running", started);
    /* Removing the cap starts the others at once, while the first still runs. */
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    end = now_ms() + LONG_MS;
    while (now_ms() < end) {
        started = 0;
        for (int k = 0; k < Q; k++)
            started += atomic_load(&tq[k].runs);
        if (started == Q)
            break;
        sleep_ms(1);
    }
    CHECK_EQ(started, Q);
    CHECK_RC(bgjob_pool_get_status(&m, &running, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(m, 0);
    CHECK_EQ(queued, 0);
    gate_open(&gq);
    for (int i = 0; i < Q; i++)
        CHECK_STATE(wait_end(qj[i]), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < R; i++) {
        bgjob_job_destroy(rj[i]);
        gate_destroy(&g[i]);
    }
    for (int i = 0; i < Q; i++)
        bgjob_job_destroy(qj[i]);
    gate_destroy(&gq);
    return ok;
}

/* "A queued job that was paused starts when its turn comes and parks at its
 * first pause point, holding its slot." Cap 1: A runs (gated), B is queued
 * and paused, C is queued behind it. A ends: B takes the slot, parks
 * PAUSED; C must not run. Resume B, cancel it: C runs. */
static bool test_paused_queued_job_holds_its_slot(void)
{
    bool ok = true;
    struct gate ga;
    gate_init(&ga);
    struct tracker ta, tb, tc;
    tracker_init(&ta);
    tracker_init(&tb);
    tracker_init(&tc);
    ta.gate = &ga;
    bgjob_job *a, *b, *c;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&ta, worker_gated, 0, 0, NULL, &a) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&ta.runs, 1));
    REQUIRE(job_create(&tb, worker_until_cancel, 0, 0, NULL, &b) == BGJOB_RESULT_OK);
    REQUIRE(job_create(&tc, worker_return, 0, 0, NULL, &c) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(b), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(b), BGJOB_STATE_PAUSED);
    gate_open(&ga);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&tb.runs, 1));
    CHECK(poll_long_ge(&tb.calls, 1));
    sleep_ms(150);
    CHECK_EQ(atomic_load(&tb.iterations), 0); /* parked at its first pause point */
    CHECK_EQ(atomic_load(&tc.runs), 0);
    size_t running = 0, queued = 0;
    CHECK_RC(bgjob_pool_get_status(NULL, &running, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(running, 1);
    CHECK_EQ(queued, 1);
    CHECK_RC(bgjob_job_resume(b), BGJOB_RESULT_OK);
    CHECK(poll_long_ge(&tb.iterations, 1));
    CHECK_RC(bgjob_job_cancel(b, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(b), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(a);
    bgjob_job_destroy(b);
    bgjob_job_destroy(c);
    gate_destroy(&ga);
    return ok;
}

/* bgjob_job_options.parent: "queued under the pool's cap, it ends CANCELLED
 * unrun instead, as a queued job cancelled does" and "A queued job that is
 * cancelled ends `BGJOB_STATE_CANCELLED` before `bgjob_job_cancel` returns".
 * Cap 1, the parent runs (gated), its sub-job is queued; cancelling the
 * parent ends the queued sub-job CANCELLED (cause PARENT), its worker never
 * run, its userdata freed once. */
static bool test_queued_subjob_of_a_cancelled_parent_ends_unrun(void)
{
    bool ok = true;
    struct gate gp;
    gate_init(&gp);
    struct tracker tp, tc;
    tracker_init(&tp);
    tracker_init(&tc);
    tp.gate = &gp;
    bgjob_job *p, *c;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tp, worker_gated, 0, 0, NULL, &p) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tp.runs, 1));
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.parent = p;
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&tc), ud_free, &c) == BGJOB_RESULT_OK);
    CHECK_STATE(state_of(c), BGJOB_STATE_RUNNING);
    CHECK_RC(bgjob_job_cancel(p, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(c), BGJOB_STATE_CANCELLED);
    gate_open(&gp);
    CHECK_STATE(wait_end(c), BGJOB_STATE_CANCELLED);
    CHECK_STATE(wait_end(p), BGJOB_STATE_CANCELLED);
    bgjob_info info;
    if (info_of(c, &info))
        CHECK_EQ(info.cancel_cause, BGJOB_CANCEL_CAUSE_PARENT);
    CHECK_EQ(atomic_load(&tc.runs), 0);
    CHECK_EQ(atomic_load(&tc.frees), 1);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(c);
    bgjob_job_destroy(p);
    gate_destroy(&gp);
    return ok;
}

/* Transactions under the cap: cap 1 held by an outside job; a started
 * transaction's two members are queued. Cancelling one aborts the group
 * ("When any member fails or is cancelled, every other member is
 * cancelled"): both end CANCELLED unrun, neither commit runs, each abort
 * and clean once; completions once; userdata freed once. */
struct fin {
    atomic_int commit, abort, clean, frees, completions;
    _Atomic(bgjob_state) done_state;
    _Atomic(bgjob_state) first_state;
    atomic_long first_thread;
    atomic_long second_thread;
};

static void fin_commit(void *ud, bgjob_job *j) { (void)j; atomic_fetch_add(&((struct fin *)ud)->commit, 1); }
static void fin_abort(void *ud, bgjob_job *j) { (void)j; atomic_fetch_add(&((struct fin *)ud)->abort, 1); }
static void fin_clean(void *ud, bgjob_job *j) { (void)j; atomic_fetch_add(&((struct fin *)ud)->clean, 1); }
static void fin_free(void *ud) { atomic_fetch_add(&((struct fin *)ud)->frees, 1); }
static void fin_completion(void *ud, bgjob_job *j, bgjob_state s)
{
    (void)j;
    struct fin *f = ud;
    atomic_store(&f->done_state, s);
    if (atomic_fetch_add(&f->completions, 1) == 0) {
        atomic_store(&f->first_state, s);
        atomic_store(&f->first_thread, (long)gettid());
    } else {
        atomic_store(&f->second_thread, (long)gettid());
    }
}

static bgjob_result fin_create(struct fin *f, struct tracker *t, bgjob_worker_callback w,
                               uint32_t flags, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = flags;
    o.commit = fin_commit;
    o.abort = fin_abort;
    o.clean = fin_clean;
    o.finalize_userdata = f;
    o.finalize_free = fin_free;
    o.completion = fin_completion;
    o.completion_userdata = f;
    return bgjob_job_create(&o, w, ud_new(t), ud_free, out);
}

static bool test_queued_transaction_member_cancel_aborts_the_group_unrun(void)
{
    bool ok = true;
    struct gate gx;
    gate_init(&gx);
    struct tracker tx, ta, tb;
    tracker_init(&tx);
    tracker_init(&ta);
    tracker_init(&tb);
    tx.gate = &gx;
    struct fin fa, fb;
    memset(&fa, 0, sizeof fa);
    memset(&fb, 0, sizeof fb);
    bgjob_job *x, *a, *b;
    bgjob_txn *txn;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tx, worker_gated, 0, 0, NULL, &x) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tx.runs, 1));
    REQUIRE(bgjob_txn_create(0, &txn) == BGJOB_RESULT_OK);
    REQUIRE(fin_create(&fa, &ta, worker_return, BGJOB_CREATE_DEFER_START, &a) == BGJOB_RESULT_OK);
    REQUIRE(fin_create(&fb, &tb, worker_return, BGJOB_CREATE_DEFER_START, &b) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    size_t queued = 0;
    CHECK_RC(bgjob_pool_get_status(NULL, NULL, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(queued, 2);
    bgjob_cancel_status cs = -1;
    CHECK_RC(bgjob_job_cancel(a, &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_REQUESTED);
    bgjob_state sa = -1, sb = -1;
    CHECK_RC(bgjob_job_wait(a, 10000, &sa), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait(b, 10000, &sb), BGJOB_RESULT_OK);
    CHECK_STATE(sa, BGJOB_STATE_CANCELLED);
    CHECK_STATE(sb, BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&ta.runs) + atomic_load(&tb.runs), 0);
    CHECK_EQ(fa.commit + fb.commit, 0);
    CHECK_EQ(fa.abort, 1);
    CHECK_EQ(fb.abort, 1);
    CHECK_EQ(fa.clean, 1);
    CHECK_EQ(fb.clean, 1);
    CHECK(poll_int_eq(&fa.completions, 1));
    CHECK(poll_int_eq(&fb.completions, 1));
    CHECK_EQ(atomic_load(&ta.frees), 1);
    CHECK_EQ(atomic_load(&tb.frees), 1);
    CHECK_RC(bgjob_pool_get_status(NULL, NULL, &queued), BGJOB_RESULT_OK);
    CHECK_EQ(queued, 0);
    gate_open(&gx);
    CHECK_STATE(wait_end(x), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(a);
    bgjob_job_destroy(b);
    bgjob_job_destroy(x);
    bgjob_txn_destroy(txn);
    gate_destroy(&gx);
    return ok;
}

/* "Threads: any number of threads may cancel the same job at once: exactly
 * one gets REQUESTED." and a queued job cancelled "ends CANCELLED before
 * bgjob_job_cancel returns, without its worker running (its userdata is
 * freed, its completion is delivered as usual)". 8 threads cancel one
 * queued job at once, 50 rounds. */
struct racer {
    pthread_barrier_t *bar;
    bgjob_job *job;
    bgjob_cancel_status st;
    bgjob_state after;
    bool soft;
};

static void *cancel_racer(void *p)
{
    struct racer *r = p;
    pthread_barrier_wait(r->bar);
    r->st = -1;
    if (r->soft)
        bgjob_job_cancel_soft(r->job, &r->st);
    else
        bgjob_job_cancel(r->job, &r->st);
    bgjob_job_get_state(r->job, &r->after);
    return NULL;
}

static bool test_racing_cancels_of_a_queued_job_exactly_one_requested(void)
{
    bool ok = true;
    enum { T = 8, ROUNDS = 50 };
    struct gate gx;
    gate_init(&gx);
    struct tracker tx;
    tracker_init(&tx);
    tx.gate = &gx;
    bgjob_job *x;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tx, worker_gated, 0, 0, NULL, &x) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tx.runs, 1));
    for (int round = 0; round < ROUNDS && ok; round++) {
        struct tracker t;
        tracker_init(&t);
        struct fin f;
        memset(&f, 0, sizeof f);
        bgjob_job *j;
        REQUIRE(fin_create(&f, &t, worker_return, 0, &j) == BGJOB_RESULT_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, T);
        pthread_t th[T];
        struct racer r[T];
        for (int i = 0; i < T; i++) {
            r[i] = (struct racer){.bar = &bar, .job = j};
            pthread_create(&th[i], NULL, cancel_racer, &r[i]);
        }
        int requested = 0;
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            if (r[i].st == BGJOB_CANCEL_STATUS_REQUESTED) {
                requested++;
                CHECKF(r[i].after == BGJOB_STATE_CANCELLED,
                       "round %d: the REQUESTED canceller saw %s after its cancel returned", round,
                       bgjob_state_str(r[i].after));
            }
        }
        pthread_barrier_destroy(&bar);
        CHECKF(requested == 1, "round %d: %d cancels got REQUESTED", round, requested);
        CHECK_STATE(wait_end(j), BGJOB_STATE_CANCELLED);
        CHECK_EQ(atomic_load(&t.runs), 0);
        CHECK_EQ(atomic_load(&t.frees), 1);
        CHECK(poll_int_eq(&f.completions, 1));
        sleep_ms(1);
        CHECK_EQ(atomic_load(&f.completions), 1);
        bgjob_job_destroy(j);
    }
    gate_open(&gx);
    CHECK_STATE(wait_end(x), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(x);
    gate_destroy(&gx);
    return ok;
}

/* A queued job detached without cancel runs when a slot frees and frees
 * itself ("A detached job always reaches a terminal state by itself"). */
static bool test_queued_job_detached_runs_later_and_frees_itself(void)
{
    bool ok = true;
    struct gate gx;
    gate_init(&gx);
    struct tracker tx, t;
    tracker_init(&tx);
    tracker_init(&t);
    tx.gate = &gx;
    bgjob_job *x, *j;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tx, worker_gated, 0, 0, NULL, &x) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tx.runs, 1));
    REQUIRE(job_create(&t, worker_return, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
    uint64_t id = id_of(j);
    CHECK_RC(bgjob_job_detach(j, 0), BGJOB_RESULT_OK);
    sleep_ms(50);
    CHECK_EQ(atomic_load(&t.runs), 0);
    gate_open(&gx);
    CHECK(poll_int_eq(&t.frees, 1));
    CHECK_EQ(atomic_load(&t.runs), 1);
    CHECK(poll_unlisted(id));
    CHECK_STATE(wait_end(x), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(x);
    gate_destroy(&gx);
    return ok;
}

/* Fork with a cap in force: "The child has none of the parent's threads or
 * objects ... and the child may exec, or make, run and destroy objects of
 * every type of its own ... no call there waits on a parent thread." The
 * parent holds its one slot (cap 1) with a gated worker and has a job
 * queued; in the child the parent's running worker does not exist, so the
 * child's own job must run (not queue behind a worker that is not there). */
static struct gate fk_gate;

static bool fork_body_runs_a_job_under_the_inherited_cap(void)
{
    bool ok = true;
    size_t running = 99, queued = 99;
    uint32_t cap = 99;
    CHECK_RC(bgjob_pool_get_status(&cap, &running, &queued), BGJOB_RESULT_OK);
    CHECKF(running == 0 && queued == 0, "the child's pool counts %zu running, %zu queued (cap %u)",
           running, queued, cap);
    struct tracker t;
    tracker_init(&t);
    bgjob_job *j;
    REQUIRE(job_create(&t, worker_return, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(j, 5000, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_COMPLETED);
    if (st >= 0)
        CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    return ok;
}

static bool test_fork_child_is_not_blocked_by_the_parents_pool_slots(void)
{
    bool ok = true;
    gate_init(&fk_gate);
    struct tracker tx, tq;
    tracker_init(&tx);
    tracker_init(&tq);
    tx.gate = &fk_gate;
    bgjob_job *x, *q;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tx, worker_gated, 0, 0, NULL, &x) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tx.runs, 1));
    REQUIRE(job_create(&tq, worker_return, 0, 0, NULL, &q) == BGJOB_RESULT_OK);
    CHECK(in_child(15, fork_body_runs_a_job_under_the_inherited_cap));
    gate_open(&fk_gate);
    CHECK_STATE(wait_end(x), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(q), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(x);
    bgjob_job_destroy(q);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Transactions                                                         */

/* bgjob_job_destroy: "Releases ... one that never started (which is
 * cancelled first: its worker never runs and its userdata is freed now)"
 * and bgjob_txn_create: "When any member fails or is cancelled, every other
 * member is cancelled ... every other one of an aborted transaction
 * CANCELLED". One member of three is destroyed before the transaction
 * starts: the others must end CANCELLED (never COMPLETED, never hanging),
 * with abort (not commit) and clean once each. */
static bool test_member_destroyed_before_start_aborts_the_rest(void)
{
    bool ok = true;
    struct tracker t[3];
    struct fin f[3];
    bgjob_job *j[3];
    bgjob_txn *txn;
    REQUIRE(bgjob_txn_create(0, &txn) == BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        tracker_init(&t[i]);
        memset(&f[i], 0, sizeof f[i]);
        REQUIRE(fin_create(&f[i], &t[i], worker_return, BGJOB_CREATE_DEFER_START, &j[i]) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, j[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_job_destroy(j[1]), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t[1].frees), 1);
    CHECK_EQ(atomic_load(&t[1].runs), 0);
    bgjob_result sr = bgjob_txn_start(txn);
    CHECKF(sr == BGJOB_RESULT_OK || sr == BGJOB_RESULT_NOT_ALLOWED, "txn_start: %s",
           bgjob_result_str(sr));
    for (int i = 0; i < 3; i += 2) {
        bgjob_state st = -1;
        bgjob_result r = bgjob_job_wait(j[i], 10000, &st);
        if (r == BGJOB_RESULT_TIMED_OUT && sr != BGJOB_RESULT_OK) {
            /* Not started by txn_start: that is the library's choice, but
             * then it must still be CREATED and destroyable. */
            CHECK_STATE(state_of(j[i]), BGJOB_STATE_CREATED);
        } else {
            CHECK_RC(r, BGJOB_RESULT_OK);
            CHECK_STATE(st, BGJOB_STATE_CANCELLED);
            CHECK_EQ(atomic_load(&f[i].commit), 0);
        }
    }
    for (int i = 0; i < 3; i += 2) {
        CHECK_RC(bgjob_job_destroy(j[i]), BGJOB_RESULT_OK);
        CHECK_EQ(atomic_load(&t[i].frees), 1);
        CHECK_EQ(atomic_load(&f[i].commit), 0);
        CHECK(poll_int_eq(&f[i].frees, 1));
    }
    CHECK_EQ(atomic_load(&f[1].commit), 0);
    CHECK(poll_int_eq(&f[1].frees, 1));
    for (int i = 0; i < 3; i++)
        CHECK(poll_int_eq(&f[i].completions, 1));
    CHECK_RC(bgjob_txn_destroy(txn), BGJOB_RESULT_OK);
    return ok;
}

/* bgjob_job_finalize: "For a member of a transaction it finalizes the
 * transaction (as soon as every member is done)" and "NOT_ALLOWED unless the
 * job is PENDING or WAITING". A manual-finalize transaction: B is done
 * (WAITING) while A still runs; finalize(B) is OK; when A's worker returns
 * the group commits and ends with no further call. */
static bool test_finalize_of_a_waiting_member_finalizes_the_group_later(void)
{
    bool ok = true;
    struct gate ga;
    gate_init(&ga);
    struct tracker ta, tb;
    tracker_init(&ta);
    tracker_init(&tb);
    ta.gate = &ga;
    struct fin fa, fb;
    memset(&fa, 0, sizeof fa);
    memset(&fb, 0, sizeof fb);
    bgjob_job *a, *b;
    bgjob_txn *txn;
    REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) == BGJOB_RESULT_OK);
    REQUIRE(fin_create(&fa, &ta, worker_gated, BGJOB_CREATE_DEFER_START, &a) == BGJOB_RESULT_OK);
    REQUIRE(fin_create(&fb, &tb, worker_return, BGJOB_CREATE_DEFER_START, &b) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_add(txn, b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait_state(b, BGJOB_STATE_WAITING, 10000, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_WAITING);
    CHECK_RC(bgjob_job_finalize(b), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&fa.commit) + atomic_load(&fb.commit), 0);
    gate_open(&ga);
    bgjob_state sa = -1, sb = -1;
    CHECK_RC(bgjob_job_wait(a, 10000, &sa), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait(b, 10000, &sb), BGJOB_RESULT_OK);
    CHECK_STATE(sa, BGJOB_STATE_COMPLETED);
    CHECK_STATE(sb, BGJOB_STATE_COMPLETED);
    CHECK_EQ(atomic_load(&fa.commit), 1);
    CHECK_EQ(atomic_load(&fb.commit), 1);
    CHECK_EQ(atomic_load(&fa.clean), 1);
    CHECK_EQ(atomic_load(&fb.clean), 1);
    CHECK_EQ(atomic_load(&fa.abort) + atomic_load(&fb.abort), 0);
    CHECK(poll_int_eq(&fa.completions, 1));
    CHECK(poll_int_eq(&fb.completions, 1));
    if (sa >= 0)
        bgjob_job_destroy(a);
    if (sb >= 0)
        bgjob_job_destroy(b);
    bgjob_txn_destroy(txn);
    gate_destroy(&ga);
    return ok;
}

/* A cancel of one PENDING member of a manual-finalize transaction: the
 * completion's thread rule lists "a cancel while WAITING or PENDING" among
 * the calls that end a job, and the transaction "cancelled together,
 * finalized together": every member ends (CANCELLED), abort (never commit)
 * and clean run once each, nothing waits for a finalize any more. */
static bool test_cancel_of_a_pending_member_ends_the_whole_group(void)
{
    bool ok = true;
    struct tracker t[3];
    struct fin f[3];
    bgjob_job *j[3];
    bgjob_txn *txn;
    REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) == BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        tracker_init(&t[i]);
        memset(&f[i], 0, sizeof f[i]);
        REQUIRE(fin_create(&f[i], &t[i], worker_return, BGJOB_CREATE_DEFER_START, &j[i]) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_txn_add(txn, j[i]), BGJOB_RESULT_OK);
    }
    CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
    for (int i = 0; i < 3; i++) {
        bgjob_state st = -1;
        CHECK_RC(bgjob_job_wait_state(j[i], BGJOB_STATE_PENDING, 10000, &st), BGJOB_RESULT_OK);
        CHECK_STATE(st, BGJOB_STATE_PENDING);
    }
    bgjob_cancel_status cs = -1;
    CHECK_RC(bgjob_job_cancel(j[1], &cs), BGJOB_RESULT_OK);
    CHECK_EQ(cs, BGJOB_CANCEL_STATUS_REQUESTED);
    for (int i = 0; i < 3; i++) {
        bgjob_state st = -1;
        CHECK_RC(bgjob_job_wait(j[i], 10000, &st), BGJOB_RESULT_OK);
        CHECKF(st == BGJOB_STATE_CANCELLED, "member %d ended %s", i, bgjob_state_str(st));
    }
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(atomic_load(&f[i].commit), 0);
        CHECK_EQ(atomic_load(&f[i].abort), 1);
        CHECK_EQ(atomic_load(&f[i].clean), 1);
        CHECKF(poll_int_eq(&f[i].completions, 1),
               "member %d: %d completions (first %s on tid %ld, last %s on tid %ld)", i,
               atomic_load(&f[i].completions), bgjob_state_str(atomic_load(&f[i].first_state)),
               atomic_load(&f[i].first_thread), bgjob_state_str(atomic_load(&f[i].done_state)),
               atomic_load(&f[i].second_thread));
        sleep_ms(20);
        CHECK_EQ(atomic_load(&f[i].completions), 1);
    }
    CHECK_RC(bgjob_txn_finalize(txn), BGJOB_RESULT_NOT_ALLOWED);
    for (int i = 0; i < 3; i++)
        bgjob_job_destroy(j[i]);
    bgjob_txn_destroy(txn);
    return ok;
}

/* Finalize from many threads at once: "called at most once" for commit and
 * clean. Two PENDING members; four threads call job_finalize(a),
 * job_finalize(b), txn_finalize, txn_finalize together. 30 rounds. */
struct fin_racer {
    pthread_barrier_t *bar;
    bgjob_job *job;
    bgjob_txn *txn;
    bgjob_result rc;
};

static void *fin_racer_main(void *p)
{
    struct fin_racer *r = p;
    pthread_barrier_wait(r->bar);
    r->rc = r->job ? bgjob_job_finalize(r->job) : bgjob_txn_finalize(r->txn);
    return NULL;
}

static bool test_racing_finalizes_commit_each_member_once(void)
{
    bool ok = true;
    for (int round = 0; round < 30 && ok; round++) {
        struct tracker t[2];
        struct fin f[2];
        bgjob_job *j[2];
        bgjob_txn *txn;
        REQUIRE(bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) == BGJOB_RESULT_OK);
        for (int i = 0; i < 2; i++) {
            tracker_init(&t[i]);
            memset(&f[i], 0, sizeof f[i]);
            REQUIRE(fin_create(&f[i], &t[i], worker_return, BGJOB_CREATE_DEFER_START, &j[i]) ==
                    BGJOB_RESULT_OK);
            CHECK_RC(bgjob_txn_add(txn, j[i]), BGJOB_RESULT_OK);
        }
        CHECK_RC(bgjob_txn_start(txn), BGJOB_RESULT_OK);
        for (int i = 0; i < 2; i++)
            CHECK_RC(bgjob_job_wait_state(j[i], BGJOB_STATE_PENDING, 10000, NULL),
                     BGJOB_RESULT_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 4);
        struct fin_racer r[4] = {{&bar, j[0], NULL, -1}, {&bar, j[1], NULL, -1},
                                 {&bar, NULL, txn, -1}, {&bar, NULL, txn, -1}};
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&th[i], NULL, fin_racer_main, &r[i]);
        int oks = 0;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            oks += r[i].rc == BGJOB_RESULT_OK;
            CHECKF(r[i].rc == BGJOB_RESULT_OK || r[i].rc == BGJOB_RESULT_NOT_ALLOWED,
                   "finalizer %d got %s", i, bgjob_result_str(r[i].rc));
        }
        pthread_barrier_destroy(&bar);
        CHECK(oks >= 1);
        for (int i = 0; i < 2; i++) {
            CHECK_STATE(wait_end(j[i]), BGJOB_STATE_COMPLETED);
            CHECKF(atomic_load(&f[i].commit) == 1, "round %d member %d: %d commits", round, i,
                   atomic_load(&f[i].commit));
            CHECK_EQ(atomic_load(&f[i].clean), 1);
            CHECK(poll_int_eq(&f[i].completions, 1));
            bgjob_job_destroy(j[i]);
        }
        bgjob_txn_destroy(txn);
    }
    return ok;
}

/* Detach vs finalize: bgjob_job_detach "runs its completion, commit/abort
 * and clean exactly once: nobody can finalize it now, so a manual-finalize
 * job (one PENDING already included) finalizes as soon as its work is
 * done". A PENDING manual-finalize job held by two handles: one thread
 * detaches the creator's handle while another finalizes through a ref, at
 * once. 100 rounds: commit and clean once, completion once. */
struct det_racer {
    pthread_barrier_t *bar;
    bgjob_job *job;
    bool detach;
    bgjob_result rc;
};

static void *det_racer_main(void *p)
{
    struct det_racer *r = p;
    pthread_barrier_wait(r->bar);
    r->rc = r->detach ? bgjob_job_detach(r->job, 0) : bgjob_job_finalize(r->job);
    return NULL;
}

static bool test_detach_racing_finalize_of_a_pending_job(void)
{
    bool ok = true;
    for (int round = 0; round < 100 && ok; round++) {
        struct tracker t;
        tracker_init(&t);
        struct fin f;
        memset(&f, 0, sizeof f);
        bgjob_job *j, *ref;
        REQUIRE(fin_create(&f, &t, worker_return, BGJOB_CREATE_MANUAL_FINALIZE, &j) ==
                BGJOB_RESULT_OK);
        CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
        REQUIRE(bgjob_job_ref(j, &ref) == BGJOB_RESULT_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        struct det_racer r[2] = {{&bar, j, true, -1}, {&bar, ref, false, -1}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, det_racer_main, &r[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        CHECK_RC(r[0].rc, BGJOB_RESULT_OK);
        CHECKF(r[1].rc == BGJOB_RESULT_OK || r[1].rc == BGJOB_RESULT_NOT_ALLOWED, "finalize: %s",
               bgjob_result_str(r[1].rc));
        CHECK_STATE(wait_end(ref), BGJOB_STATE_COMPLETED);
        CHECK(poll_int_eq(&f.completions, 1));
        CHECK_EQ(atomic_load(&f.commit), 1);
        CHECK_EQ(atomic_load(&f.clean), 1);
        CHECK_RC(bgjob_job_destroy(ref), BGJOB_RESULT_OK);
        CHECK(poll_int_eq(&f.frees, 1));
        CHECK(poll_int_eq(&t.frees, 1));
    }
    return ok;
}

/* A finalize callback calling verbs on its own job while it is being
 * finalized: bgjob_job_finalize is "NOT_ALLOWED unless ... (and not already
 * being finalized ...)", destroy is NOT_ALLOWED while WAITING/PENDING, and a
 * callback "may call any bgjob function" with no lock held (so none of this
 * may deadlock). */
struct reent_fin {
    atomic_int fin_rc, destroy_rc, state_seen, calls;
};

static void reent_commit(void *ud, bgjob_job *job)
{
    struct reent_fin *r = ud;
    atomic_fetch_add(&r->calls, 1);
    atomic_store(&r->fin_rc, bgjob_job_finalize(job));
    atomic_store(&r->destroy_rc, bgjob_job_destroy(job));
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&r->state_seen, s);
}

static void *finalize_main(void *p)
{
    bgjob_job_finalize(p);
    return NULL;
}

static bool test_commit_callback_calls_finalize_and_destroy_on_its_job(void)
{
    bool ok = true;
    struct reent_fin r;
    memset(&r, 0, sizeof r);
    atomic_store(&r.fin_rc, -1);
    atomic_store(&r.destroy_rc, -1);
    struct tracker t;
    tracker_init(&t);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_MANUAL_FINALIZE;
    o.commit = reent_commit;
    o.finalize_userdata = &r;
    bgjob_job *j;
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &j) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    struct bounded b;
    pthread_t th;
    REQUIRE(bounded_start(&b, &th, finalize_main, j));
    CHECKF(bounded_join(&b, th, 10000), "finalize did not return (deadlock in commit?)");
    CHECK_EQ(atomic_load(&r.calls), 1);
    CHECK_RC(atomic_load(&r.fin_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&r.destroy_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_STATE(atomic_load(&r.state_seen), BGJOB_STATE_WAITING);
    CHECK_STATE(wait_end(j), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Callbacks calling back in                                            */

/* A completion without a context runs "on its worker thread, right after
 * the worker returned" and "may call any bgjob function". There the job has
 * ended: a wait on it must return at once with the terminal state (it is
 * not the worker: its worker has returned), its result is readable, updates
 * are refused, and destroy from inside is allowed. */
struct reent_comp {
    atomic_int wait_rc, wait_state, result_rc, phase_rc, destroy_rc, runs, after_rc;
    atomic_long wait_ms;
};

static void reent_completion(void *ud, bgjob_job *job, bgjob_state state)
{
    struct reent_comp *r = ud;
    (void)state;
    bgjob_state s = -1;
    int64_t t0 = now_ms();
    atomic_store(&r->wait_rc, bgjob_job_wait(job, 15000, &s));
    atomic_store(&r->wait_ms, now_ms() - t0);
    atomic_store(&r->wait_state, s);
    void *res = NULL;
    atomic_store(&r->result_rc, bgjob_job_get_result(job, &res));
    atomic_store(&r->phase_rc, bgjob_job_set_phase(job, "late"));
    atomic_store(&r->destroy_rc, bgjob_job_destroy(job));
    atomic_store(&r->after_rc, bgjob_job_get_state(job, &s));
    atomic_fetch_add(&r->runs, 1);
}

static bool test_completion_on_the_worker_thread_may_wait_and_destroy(void)
{
    bool ok = true;
    struct reent_comp r;
    memset(&r, 0, sizeof r);
    struct tracker t;
    tracker_init(&t);
    t.rc = 3;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = reent_completion;
    o.completion_userdata = &r;
    bgjob_job *j;
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &j) == BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&r.runs, 1));
    CHECK_RC(atomic_load(&r.wait_rc), BGJOB_RESULT_OK);
    CHECKF(atomic_load(&r.wait_ms) < 10000, "the wait took %ld ms", atomic_load(&r.wait_ms));
    CHECK_STATE(atomic_load(&r.wait_state), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.result_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.phase_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&r.destroy_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&r.after_rc), BGJOB_RESULT_INVALID_HANDLE);
    CHECK(poll_int_eq(&t.frees, 1));
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* Cancel hooks: "It may call any bgjob function, including removing itself
 * or cancelling its job (both return at once); `bgjob_job_wait` on its own
 * job is refused with `BGJOB_RESULT_NOT_ALLOWED`". Also a hook added from
 * inside a hook, cancel having been requested, "runs at once on this thread
 * before this returns, and the call returns BGJOB_RESULT_CANCELLED". */
struct hook_state {
    atomic_int runs, wait_rc, cancel_rc, remove_rc, add_rc, inner_runs, frees, pause_rc;
    atomic_int cancel_status;
    uint64_t id;
    pthread_t thread;
    atomic_int inner_same_thread;
};

static void inner_hook(void *ud, bgjob_job *job)
{
    (void)job;
    struct hook_state *h = ud;
    atomic_fetch_add(&h->inner_runs, 1);
    atomic_store(&h->inner_same_thread, pthread_equal(pthread_self(), h->thread) ? 1 : 2);
}

static void hook_free(void *ud)
{
    struct hook_state *h = ud;
    atomic_fetch_add(&h->frees, 1);
}

static void reent_hook(void *ud, bgjob_job *job)
{
    struct hook_state *h = ud;
    h->thread = pthread_self();
    atomic_fetch_add(&h->runs, 1);
    atomic_store(&h->wait_rc, bgjob_job_wait(job, 1000, NULL));
    bgjob_cancel_status cs = -1;
    atomic_store(&h->cancel_rc, bgjob_job_cancel(job, &cs));
    atomic_store(&h->cancel_status, cs);
    atomic_store(&h->remove_rc, bgjob_job_remove_cancel_hook(job, h->id));
    uint64_t id2 = 0;
    atomic_store(&h->add_rc, bgjob_job_add_cancel_hook(job, inner_hook, h, hook_free, &id2));
}

static bool test_cancel_hook_reenters_its_job(void)
{
    bool ok = true;
    struct hook_state h;
    memset(&h, 0, sizeof h);
    struct tracker t;
    tracker_init(&t);
    bgjob_job *j;
    REQUIRE(job_create(&t, worker_until_cancel, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
    REQUIRE(bgjob_job_add_cancel_hook(j, reent_hook, &h, hook_free, &h.id) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(j, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(j), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&h.runs), 1);
    CHECK_RC(atomic_load(&h.wait_rc), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(atomic_load(&h.cancel_rc), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&h.cancel_status), BGJOB_CANCEL_STATUS_ALREADY_REQUESTED);
    CHECK_RC(atomic_load(&h.remove_rc), BGJOB_RESULT_NOT_FOUND);
    CHECK_RC(atomic_load(&h.add_rc), BGJOB_RESULT_CANCELLED);
    CHECK_EQ(atomic_load(&h.inner_runs), 1);
    CHECK_EQ(atomic_load(&h.inner_same_thread), 1);
    CHECK(poll_int_eq(&h.frees, 2));
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    return ok;
}

/* bgjob_job_detach: "The handle is invalid afterwards for the caller (the
 * job's own worker may keep using it until it returns)." The worker detaches
 * its own (only) handle, then keeps reporting progress and reading its state
 * through it: every call succeeds; the job then frees itself. */
struct selfdetach {
    atomic_int detach_rc, bad, runs;
    struct gate *gate;
};

static void selfdetach_free(void *ud)
{
    struct selfdetach *s = ud;
    atomic_fetch_add(&s->runs, 100);
}

static int32_t selfdetach_worker(void *ud, bgjob_job *job)
{
    struct selfdetach *s = ud;
    gate_wait(s->gate);
    atomic_store(&s->detach_rc, bgjob_job_detach(job, 0));
    for (int i = 0; i < 200; i++) {
        bgjob_result r = bgjob_job_add_units(job, 1);
        bgjob_state st;
        bgjob_result r2 = bgjob_job_get_state(job, &st);
        bgjob_result r3 = bgjob_job_set_phase(job, "after-detach");
        bgjob_result r4 = bgjob_job_check_cancel(job);
        if (r != BGJOB_RESULT_OK || r2 != BGJOB_RESULT_OK || r3 != BGJOB_RESULT_OK ||
            r4 != BGJOB_RESULT_OK) {
            atomic_store(&s->bad, 1000 * r + 100 * r2 + 10 * r3 + r4 + 1);
            break;
        }
    }
    atomic_fetch_add(&s->runs, 1);
    return 0;
}

static bool test_worker_detaching_its_own_handle_keeps_using_it(void)
{
    bool ok = true;
    struct gate g;
    gate_init(&g);
    struct selfdetach s;
    memset(&s, 0, sizeof s);
    s.gate = &g;
    atomic_store(&s.detach_rc, -1);
    bgjob_job *j;
    REQUIRE(bgjob_job_create(NULL, selfdetach_worker, &s, selfdetach_free, &j) ==
            BGJOB_RESULT_OK);
    uint64_t id = id_of(j);
    gate_open(&g);
    CHECK(poll_int_eq(&s.runs, 101));
    CHECK_RC(atomic_load(&s.detach_rc), BGJOB_RESULT_OK);
    CHECKF(atomic_load(&s.bad) == 0, "a call through the worker's detached handle failed (code %d)",
           atomic_load(&s.bad) - 1);
    CHECK(poll_unlisted(id));
    gate_destroy(&g);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Error policy races                                                   */

/* "A job whose cancel was requested is never stopped, nor is a detached one
 * (nobody could resume it): either is told to report." and STOP: "call
 * `bgjob_job_pause_point`, which parks until a resume ... or returns
 * CANCELLED (a cancel resets it too)". A worker reports an error under
 * policy STOP exactly as another thread cancels: whichever wins, the job
 * ends (never left PAUSED), iostatus is OK after the cancel, and a STOP
 * answer is only given when the cancel had not been requested. 200 rounds. */
struct io_race {
    pthread_barrier_t *bar;
    atomic_int action, pp_rc, cancel_before;
};

static int32_t io_race_worker(void *ud, bgjob_job *job)
{
    struct io_race *r = ud;
    pthread_barrier_wait(r->bar);
    bgjob_error_action a = -1;
    bgjob_result rc = bgjob_job_report_io_error(job, 5, "EIO", &a);
    if (rc != BGJOB_RESULT_OK)
        return 70;
    atomic_store(&r->action, a);
    if (a == BGJOB_ERROR_ACTION_STOP) {
        atomic_store(&r->pp_rc, bgjob_job_pause_point(job));
        return 1;
    }
    return 5;
}

static void *cancel_at_barrier(void *p)
{
    void **a = p;
    pthread_barrier_wait(a[0]);
    bgjob_job_cancel(a[1], NULL);
    return NULL;
}

static bool test_stop_policy_racing_cancel_never_leaves_a_stopped_job(void)
{
    bool ok = true;
    int stops = 0;
    for (int round = 0; round < 200 && ok; round++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        struct io_race r;
        memset(&r, 0, sizeof r);
        r.bar = &bar;
        atomic_store(&r.action, -1);
        atomic_store(&r.pp_rc, -1);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.error_policy = BGJOB_ERROR_POLICY_STOP;
        bgjob_job *j;
        REQUIRE(bgjob_job_create(&o, io_race_worker, &r, NULL, &j) == BGJOB_RESULT_OK);
        void *args[2] = {&bar, j};
        pthread_t th;
        pthread_create(&th, NULL, cancel_at_barrier, args);
        pthread_join(th, NULL);
        bgjob_state st = -1;
        bgjob_result wr = bgjob_job_wait(j, 5000, &st);
        CHECKF(wr == BGJOB_RESULT_OK, "round %d: the job did not end (%s, state %s, action %d)",
               round, bgjob_result_str(wr), bgjob_state_str(state_of(j)),
               atomic_load(&r.action));
        if (wr != BGJOB_RESULT_OK) {
            bgjob_job_resume(j);
            bgjob_job_wait(j, 5000, &st);
        }
        CHECK_STATE(st, BGJOB_STATE_CANCELLED);
        bgjob_info info;
        if (info_of(j, &info))
            CHECK_EQ(info.iostatus, BGJOB_IOSTATUS_OK);
        if (atomic_load(&r.action) == BGJOB_ERROR_ACTION_STOP) {
            stops++;
            CHECK_RC(atomic_load(&r.pp_rc), BGJOB_RESULT_CANCELLED);
        }
        bgjob_job_destroy(j);
        pthread_barrier_destroy(&bar);
    }
    tap_diag("%d of 200 rounds were told STOP", stops);
    return ok;
}

/* The same race against a detach (no cancel): "nor is a detached one ...
 * told to report" and a detached job "always reaches a terminal state by
 * itself": if STOP won, the detach resumes it ("a paused job is resumed").
 * Every round's job must free itself. */
struct io_race2 {
    pthread_barrier_t *bar;
    atomic_int action, pp_rc, frees;
};

static void io_race2_free(void *ud)
{
    atomic_fetch_add(&((struct io_race2 *)ud)->frees, 1);
}

static int32_t io_race2_worker(void *ud, bgjob_job *job)
{
    struct io_race2 *r = ud;
    pthread_barrier_wait(r->bar);
    bgjob_error_action a = -1;
    if (bgjob_job_report_io_error(job, 28, "ENOSPC", &a) != BGJOB_RESULT_OK)
        return 70;
    atomic_store(&r->action, a);
    if (a == BGJOB_ERROR_ACTION_STOP) {
        atomic_store(&r->pp_rc, bgjob_job_pause_point(job));
        return 0;
    }
    return 28;
}

static void *detach_at_barrier(void *p)
{
    void **a = p;
    pthread_barrier_wait(a[0]);
    bgjob_job_detach(a[1], 0);
    return NULL;
}

static bool test_stop_policy_racing_detach_always_ends(void)
{
    bool ok = true;
    for (int round = 0; round < 200 && ok; round++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        struct io_race2 *r = calloc(1, sizeof *r);
        r->bar = &bar;
        atomic_store(&r->action, -1);
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.error_policy = BGJOB_ERROR_POLICY_ENOSPC;
        bgjob_job *j;
        REQUIRE(bgjob_job_create(&o, io_race2_worker, r, io_race2_free, &j) == BGJOB_RESULT_OK);
        uint64_t id = id_of(j);
        void *args[2] = {&bar, j};
        pthread_t th;
        pthread_create(&th, NULL, detach_at_barrier, args);
        pthread_join(th, NULL);
        int64_t end = now_ms() + 5000;
        while (atomic_load(&r->frees) == 0 && now_ms() < end)
            sleep_ms(1);
        CHECKF(atomic_load(&r->frees) == 1,
               "round %d: the detached job never ended (action %d, listed %d)", round,
               atomic_load(&r->action), job_listed(id));
        if (atomic_load(&r->frees) == 1) {
            CHECK(poll_unlisted(id));
            pthread_barrier_destroy(&bar);
            free(r);
        }
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* Handles: ABA                                                         */

/* "A stale handle never names a later object, however long the process
 * lives: a table slot whose generation would wrap is retired, never
 * reused." 300 000 create/destroy cycles of a never-started job, 100 000 of
 * a transaction and 20 000 of a context: no handle value ever comes back,
 * and the first of each stays invalid. */
static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static size_t count_dups(uintptr_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_ptr);
    size_t d = 0;
    for (size_t i = 1; i < n; i++)
        d += v[i] == v[i - 1];
    return d;
}

static bool test_handle_values_never_come_back(void)
{
    bool ok = true;
    enum { NJ = 300000, NT = 100000, NC = 20000 };
    uintptr_t *v = malloc(sizeof *v * NJ);
    REQUIRE(v != NULL);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    bgjob_job *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < NJ; i++) {
        bgjob_job *j;
        if (bgjob_job_create(&o, worker_return, NULL, NULL, &j) != BGJOB_RESULT_OK) {
            CHECK(!"create failed");
            break;
        }
        if (i == 0)
            first = j;
        v[n++] = (uintptr_t)j;
        if (bgjob_job_destroy(j) != BGJOB_RESULT_OK) {
            CHECK(!"destroy failed");
            break;
        }
    }
    bgjob_state st;
    CHECK_RC(bgjob_job_get_state(first, &st), BGJOB_RESULT_INVALID_HANDLE);
    size_t d = count_dups(v, n);
    CHECKF(d == 0, "%zu job handle values came back over %zu create/destroy cycles", d, n);

    bgjob_txn *tfirst = NULL;
    n = 0;
    for (size_t i = 0; i < NT; i++) {
        bgjob_txn *t;
        if (bgjob_txn_create(0, &t) != BGJOB_RESULT_OK) {
            CHECK(!"txn create failed");
            break;
        }
        if (i == 0)
            tfirst = t;
        v[n++] = (uintptr_t)t;
        bgjob_txn_destroy(t);
    }
    CHECK_RC(bgjob_txn_destroy(tfirst), BGJOB_RESULT_INVALID_HANDLE);
    d = count_dups(v, n);
    CHECKF(d == 0, "%zu txn handle values came back over %zu cycles", d, n);

    bgjob_context *cfirst = NULL;
    n = 0;
    for (size_t i = 0; i < NC; i++) {
        bgjob_context *c;
        if (bgjob_context_create(&c) != BGJOB_RESULT_OK) {
            CHECK(!"context create failed");
            break;
        }
        if (i == 0)
            cfirst = c;
        v[n++] = (uintptr_t)c;
        bgjob_context_destroy(c);
    }
    size_t pending;
    CHECK_RC(bgjob_context_pending(cfirst, &pending), BGJOB_RESULT_INVALID_HANDLE);
    d = count_dups(v, n);
    CHECKF(d == 0, "%zu context handle values came back over %zu cycles", d, n);
    free(v);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Exactly once                                                         */

/* bgjob_job_cancel_soft: "a later `bgjob_job_cancel` makes it a force
 * cancel: soft is cleared, the hooks are called, and that call gets
 * BGJOB_CANCEL_STATUS_REQUESTED" with "exactly one gets REQUESTED" among
 * racing cancels. A READY job, one soft and six force cancels at once, 100
 * rounds: exactly one force cancel gets REQUESTED; the soft one gets it only
 * if it came first; the hook runs exactly once; cancel_is_soft ends false. */
static atomic_int sf_hook_runs;
static void sf_hook(void *ud, bgjob_job *job)
{
    (void)ud;
    (void)job;
    atomic_fetch_add(&sf_hook_runs, 1);
}

/* Runs READY until a force cancel (a soft one alone does not end it). */
static int32_t ready_worker(void *ud, bgjob_job *job)
{
    struct tracker *t = ud_tracker(ud);
    atomic_fetch_add(&t->runs, 1);
    bgjob_job_set_ready(job);
    atomic_store(&t->worker_rc, 1);
    for (;;) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
            bool soft = true;
            if (bgjob_job_cancel_is_soft(job, &soft) == BGJOB_RESULT_OK && !soft)
                break;
        }
        sleep_us(200);
    }
    /* Hooks not yet called when the worker returns are dropped (the
     * header says so): give the force cancel time to reach the hook. */
    int64_t end = now_ms() + 15000;
    while (atomic_load(&sf_hook_runs) == 0 && now_ms() < end)
        sleep_us(200);
    return WORKER_CANCELLED_RC;
}

static bool test_soft_and_force_cancels_racing_exactly_one_force_requested(void)
{
    bool ok = true;
    enum { T = 7 };
    for (int round = 0; round < 100 && ok; round++) {
        struct tracker t;
        tracker_init(&t);
        bgjob_job *j;
        REQUIRE(job_create(&t, ready_worker, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
        REQUIRE(poll_int_eq(&t.worker_rc, 1));
        atomic_store(&sf_hook_runs, 0);
        CHECK_RC(bgjob_job_add_cancel_hook(j, sf_hook, NULL, NULL, NULL), BGJOB_RESULT_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, T);
        struct racer r[T];
        pthread_t th[T];
        for (int i = 0; i < T; i++) {
            r[i] = (struct racer){.bar = &bar, .job = j, .soft = i == 0};
            pthread_create(&th[i], NULL, cancel_racer, &r[i]);
        }
        int force_req = 0;
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            if (i > 0 && r[i].st == BGJOB_CANCEL_STATUS_REQUESTED)
                force_req++;
        }
        pthread_barrier_destroy(&bar);
        CHECKF(force_req == 1, "round %d: %d force cancels got REQUESTED (soft got %d)", round,
               force_req, r[0].st);
        if (force_req != 1)
            for (int i = 1; i < T; i++)
                tap_diag("force %d: status %d, state after %s", i, r[i].st,
                         bgjob_state_str(r[i].after));
        CHECK_STATE(wait_end(j), BGJOB_STATE_CANCELLED);
        CHECKF(atomic_load(&sf_hook_runs) == 1, "round %d: the hook ran %d times", round,
               atomic_load(&sf_hook_runs));
        bool soft = true;
        CHECK_RC(bgjob_job_cancel_is_soft(j, &soft), BGJOB_RESULT_OK);
        CHECK(!soft);
        bgjob_job_destroy(j);
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* Fork inside a worker, while another worker spawns children           */

/* "fork() is safe while jobs run and other threads are inside bgjob calls
 * ... the child may exec, or make, run and destroy objects of every type of
 * its own, deadlines included; no call there waits on a parent thread."
 * One worker spawns and waits for children in a loop (bgjob's child
 * machinery busy) while another forks; the fork child runs a job that
 * spawns a child of its own and a job with a deadline. */
static atomic_int spin_stop;

static int32_t spawner_worker(void *ud, bgjob_job *job)
{
    (void)ud;
    static const char *const argv[] = {"/bin/true", NULL};
    while (!atomic_load(&spin_stop) && bgjob_job_check_cancel(job) == BGJOB_RESULT_OK) {
        bgjob_child_options o;
        bgjob_child_options_init(&o, sizeof o);
        o.argv = argv;
        int32_t pid;
        if (bgjob_job_spawn_child(job, &o, &pid) == BGJOB_RESULT_OK)
            bgjob_job_wait_child(job, pid, 5000, NULL);
    }
    return 0;
}

static int32_t child_spawn_once(void *ud, bgjob_job *job)
{
    (void)ud;
    static const char *const argv[] = {"sh", "-c", "exit 12", NULL};
    bgjob_child_options o;
    bgjob_child_options_init(&o, sizeof o);
    o.argv = argv;
    int32_t pid, ws = -1;
    if (bgjob_job_spawn_child(job, &o, &pid) != BGJOB_RESULT_OK)
        return 90;
    if (bgjob_job_wait_child(job, pid, 5000, &ws) != BGJOB_RESULT_OK)
        return 91;
    return WIFEXITED(ws) && WEXITSTATUS(ws) == 12 ? 0 : 92;
}

static int fork_child_main(bgjob_job *parent_job)
{
    bgjob_state st;
    if (bgjob_job_get_state(parent_job, &st) != BGJOB_RESULT_INVALID_HANDLE)
        return 2;
    bgjob_job *j;
    if (bgjob_job_create(NULL, child_spawn_once, NULL, NULL, &j) != BGJOB_RESULT_OK)
        return 3;
    if (bgjob_job_wait(j, 5000, &st) != BGJOB_RESULT_OK)
        return 4;
    if (st != BGJOB_STATE_COMPLETED)
        return 5;
    bgjob_job_destroy(j);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.deadline_ms = 30;
    /* Lives as long as the job: a compound literal in the if's condition
     * would end with that statement (ASan: stack-use-after-scope). */
    struct tracker t;
    tracker_init(&t);
    if (bgjob_job_create(&o, worker_until_cancel, ud_new(&t), NULL, &j) != BGJOB_RESULT_OK)
        return 6;
    if (bgjob_job_wait(j, 5000, &st) != BGJOB_RESULT_OK)
        return 7;
    if (st != BGJOB_STATE_CANCELLED)
        return 8;
    bgjob_job_destroy(j);
    return 0;
}

struct forker {
    atomic_int status;
    int rounds;
};

static int32_t forker_worker(void *ud, bgjob_job *job)
{
    struct forker *f = ud;
    for (int i = 0; i < f->rounds; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            alarm(15);
            _exit(fork_child_main(job));
        }
        int ws = 0;
        int64_t end = now_ms() + 20000;
        while (waitpid(pid, &ws, WNOHANG) == 0) {
            if (now_ms() > end) {
                kill(pid, SIGKILL);
                waitpid(pid, &ws, 0);
                break;
            }
            sleep_ms(2);
        }
        int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 100 + WTERMSIG(ws);
        if (code != 0) {
            atomic_store(&f->status, code);
            return 1;
        }
    }
    return 0;
}

static bool test_fork_in_a_worker_while_another_spawns_children(void)
{
    bool ok = true;
    atomic_store(&spin_stop, 0);
    bgjob_job *sp, *fk;
    REQUIRE(bgjob_job_create(NULL, spawner_worker, NULL, NULL, &sp) == BGJOB_RESULT_OK);
    struct forker f;
    memset(&f, 0, sizeof f);
    f.rounds = 20;
    REQUIRE(bgjob_job_create(NULL, forker_worker, &f, NULL, &fk) == BGJOB_RESULT_OK);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(fk, 60000, &st), BGJOB_RESULT_OK);
    CHECKF(st == BGJOB_STATE_COMPLETED, "a fork child failed with code %d (%s)",
           atomic_load(&f.status), atomic_load(&f.status) >= 100 ? "killed/hung" : "a check");
    atomic_store(&spin_stop, 1);
    CHECK_STATE(wait_end(sp), BGJOB_STATE_COMPLETED);
    bgjob_job_destroy(sp);
    if (st >= 0)
        bgjob_job_destroy(fk);
    return ok;
}

/* ------------------------------------------------------------------ */
/* More: states seen by finalizers and events                           */

/* BGJOB_STATE_WAITING: "... or its end is being finalized right now
 * (commit/abort and clean running). A job alone passes through it briefly on
 * the way to its terminal state" and bgjob_job_report_state: "Ending the job
 * then passes through WAITING while its commit/abort and clean callbacks
 * run, as every job does." A manual-finalize job finalized by
 * bgjob_job_finalize: its events must show PENDING → WAITING → COMPLETED,
 * and its clean callback must read WAITING. */
struct evlog {
    pthread_mutex_t mu;
    int n;
    bgjob_state from[16], to[16];
    atomic_int clean_state;
    atomic_int end_seen;
};

static void evlog_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    (void)job;
    struct evlog *l = ud;
    if (ev->kind == BGJOB_EVENT_KIND_END) {
        atomic_store(&l->end_seen, 1);
        return;
    }
    if (ev->kind != BGJOB_EVENT_KIND_STATE_CHANGED)
        return;
    pthread_mutex_lock(&l->mu);
    if (l->n < 16) {
        l->from[l->n] = ev->old_state;
        l->to[l->n] = ev->new_state;
        l->n++;
    }
    pthread_mutex_unlock(&l->mu);
}

static void evlog_clean(void *ud, bgjob_job *job)
{
    struct evlog *l = ud;
    bgjob_state s = -1;
    bgjob_job_get_state(job, &s);
    atomic_store(&l->clean_state, s);
}

static bool test_manual_finalize_passes_through_waiting_while_finalizing(void)
{
    bool ok = true;
    struct evlog l;
    memset(&l, 0, sizeof l);
    pthread_mutex_init(&l.mu, NULL);
    atomic_store(&l.clean_state, -1);
    struct tracker t;
    tracker_init(&t);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_MANUAL_FINALIZE;
    o.event = evlog_event;
    o.event_userdata = &l;
    o.clean = evlog_clean;
    o.finalize_userdata = &l;
    bgjob_job *j;
    REQUIRE(bgjob_job_create(&o, worker_return, ud_new(&t), ud_free, &j) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_wait_state(j, BGJOB_STATE_PENDING, 10000, NULL), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_finalize(j), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(j), BGJOB_STATE_COMPLETED);
    CHECK(poll_int_eq(&l.end_seen, 1));
    CHECK_STATE(atomic_load(&l.clean_state), BGJOB_STATE_WAITING);
    pthread_mutex_lock(&l.mu);
    char seq[256] = "";
    for (int i = 0; i < l.n; i++) {
        size_t len = strlen(seq);
        snprintf(seq + len, sizeof seq - len, "%s%s->%s", i ? ", " : "",
                 bgjob_state_str(l.from[i]), bgjob_state_str(l.to[i]));
    }
    bool through_waiting = l.n >= 2 && l.to[l.n - 1] == BGJOB_STATE_COMPLETED &&
                           l.from[l.n - 1] == BGJOB_STATE_WAITING;
    pthread_mutex_unlock(&l.mu);
    CHECKF(through_waiting, "events: %s", seq);
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* A child bound from another thread, waited for there, as the worker    */
/* returns                                                               */

/* Every function "may be called from any thread, concurrently, unless its
 * Threads: line says otherwise" (spawn_child has none), and "A child still
 * bound when the worker returns is killed with its group and reaped before
 * the job ends". The main thread spawns a child bound to a gated job and a
 * helper thread waits for it (wait_child's "meant for the worker thread" is
 * a warning about parking, not a ban); the worker then returns. The job must
 * end, the helper's wait must return (never hang), and the child must be
 * gone. */
struct outside_wait {
    bgjob_job *job;
    int32_t pid;
    atomic_int rc, ws;
};

static void *outside_wait_main(void *p)
{
    struct outside_wait *w = p;
    int32_t ws = -1;
    atomic_store(&w->rc, bgjob_job_wait_child(w->job, w->pid, 20000, &ws));
    atomic_store(&w->ws, ws);
    return NULL;
}

static bool test_worker_returns_while_another_thread_waits_for_its_child(void)
{
    bool ok = true;
    struct gate g;
    gate_init(&g);
    struct tracker t;
    tracker_init(&t);
    t.gate = &g;
    bgjob_job *j;
    REQUIRE(job_create(&t, worker_gated, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&t.runs, 1));
    static const char *const argv[] = {"sleep", "30", NULL};
    bgjob_child_options co;
    bgjob_child_options_init(&co, sizeof co);
    co.argv = argv;
    int32_t pid = -1;
    CHECK_RC(bgjob_job_spawn_child(j, &co, &pid), BGJOB_RESULT_OK);
    if (pid <= 0) {
        gate_open(&g);
        wait_end(j);
        bgjob_job_destroy(j);
        return false;
    }
    struct outside_wait w = {.job = j, .pid = pid};
    atomic_store(&w.rc, -1);
    struct bounded b;
    pthread_t th;
    REQUIRE(bounded_start(&b, &th, outside_wait_main, &w));
    sleep_ms(100);
    gate_open(&g);
    bgjob_state st = -1;
    CHECK_RC(bgjob_job_wait(j, 10000, &st), BGJOB_RESULT_OK);
    CHECK_STATE(st, BGJOB_STATE_COMPLETED);
    CHECKF(bounded_join(&b, th, 10000), "the outside wait_child never returned after the job ended");
    tap_diag("outside wait_child returned %s, status 0x%x", bgjob_result_str(atomic_load(&w.rc)),
             atomic_load(&w.ws));
    CHECK(poll_dead(pid, 3000));
    if (proc_alive(pid))
        kill(pid, SIGKILL);
    if (st >= 0)
        CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    gate_destroy(&g);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Stats: batches against readers and single setters                   */

/* bgjob_job_set_stats: "a reader (`bgjob_job_get_stats`) sees all of them
 * or none, never some old and some new", also with a string in the batch;
 * another thread sets an unrelated statistic with the single setter all the
 * while. Readers check every batch they see is whole. */
struct stat_job {
    uint32_t a, b, s, other;
    atomic_int stop;
    struct gate *ready;
};

static int32_t stat_batch_worker(void *ud, bgjob_job *job)
{
    struct stat_job *sj = ud;
    gate_open(sj->ready);
    char text[32];
    for (uint64_t i = 1; !atomic_load(&sj->stop); i++) {
        snprintf(text, sizeof text, "%llu", (unsigned long long)i);
        bgjob_stat_update u[3] = {
            {.index = sj->a, .value.u64 = i},
            {.index = sj->s, .text = text},
            {.index = sj->b, .value.i64 = -(int64_t)i},
        };
        if (bgjob_job_set_stats(job, u, 3) != BGJOB_RESULT_OK)
            return 1;
    }
    return 0;
}

struct stat_reader {
    bgjob_job *job;
    struct stat_job *sj;
    atomic_int bad;
    atomic_long reads;
    char why[160];
};

static void *stat_reader_main(void *p)
{
    struct stat_reader *r = p;
    bgjob_stat st[8];
    while (!atomic_load(&r->sj->stop)) {
        size_t n = 0;
        if (bgjob_job_get_stats(r->job, NULL, st, 8, &n) != BGJOB_RESULT_OK || n != 4) {
            atomic_store(&r->bad, 1);
            break;
        }
        uint64_t a = st[r->sj->a].value.u64;
        int64_t b = st[r->sj->b].value.i64;
        char want[32];
        snprintf(want, sizeof want, "%llu", (unsigned long long)a);
        if (b != -(int64_t)a || (a != 0 && strcmp(st[r->sj->s].text, want) != 0) ||
            (a == 0 && st[r->sj->s].text[0] != 0)) {
            if (!atomic_exchange(&r->bad, 1))
                snprintf(r->why, sizeof r->why, "torn batch: a=%llu b=%lld s=\"%s\"",
                         (unsigned long long)a, (long long)b, st[r->sj->s].text);
            break;
        }
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

static void *stat_other_setter(void *p)
{
    struct stat_reader *r = p;
    for (uint64_t i = 0; !atomic_load(&r->sj->stop); i++)
        bgjob_job_set_stat_u64(r->job, r->sj->other, i);
    return NULL;
}

static bool test_stat_batches_with_strings_are_whole_under_readers(void)
{
    bool ok = true;
    struct gate ready;
    gate_init(&ready);
    struct stat_job sj;
    memset(&sj, 0, sizeof sj);
    sj.ready = &ready;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    bgjob_job *j;
    REQUIRE(bgjob_job_create(&o, stat_batch_worker, &sj, NULL, &j) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(j, "a", BGJOB_STAT_TYPE_U64, NULL, &sj.a), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(j, "s", BGJOB_STAT_TYPE_STRING, NULL, &sj.s), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(j, "other", BGJOB_STAT_TYPE_U64, "x", &sj.other),
             BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_add_stat(j, "b", BGJOB_STAT_TYPE_I64, NULL, &sj.b), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_start(j), BGJOB_RESULT_OK);
    gate_wait(&ready);
    struct stat_reader r[3];
    pthread_t th[4];
    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].job = j;
        r[i].sj = &sj;
        pthread_create(&th[i], NULL, stat_reader_main, &r[i]);
    }
    pthread_create(&th[3], NULL, stat_other_setter, &r[0]);
    sleep_ms(1500);
    atomic_store(&sj.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_STATE(wait_end(j), BGJOB_STATE_COMPLETED);
    for (int i = 0; i < 3; i++) {
        CHECKF(!atomic_load(&r[i].bad), "reader %d: %s", i, r[i].why);
        CHECK(atomic_load(&r[i].reads) > 0);
    }
    CHECK_RC(bgjob_job_destroy(j), BGJOB_RESULT_OK);
    gate_destroy(&ready);
    return ok;
}

/* ------------------------------------------------------------------ */
/* ABA across fork                                                      */

/* "A stale handle never names a later object, however long the process
 * lives" and after fork "every parent handle of every type ... gets
 * BGJOB_RESULT_INVALID_HANDLE there at once". The parent holds 64 jobs, 8
 * transactions and 8 contexts; the child makes as many of its own: no child
 * handle may equal a parent handle, and the parent's handles must stay
 * invalid in the child after the child's creates. */
enum { AF_J = 64, AF_T = 8, AF_C = 8 };
static bgjob_job *af_pj[AF_J];
static bgjob_txn *af_pt[AF_T];
static bgjob_context *af_pc[AF_C];

static bool af_child(void)
{
    bool ok = true;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    bgjob_job *cj[AF_J];
    bgjob_txn *ct[AF_T];
    bgjob_context *cc[AF_C];
    for (int i = 0; i < AF_J; i++)
        REQUIRE(bgjob_job_create(&o, worker_return, NULL, NULL, &cj[i]) == BGJOB_RESULT_OK);
    for (int i = 0; i < AF_T; i++)
        REQUIRE(bgjob_txn_create(0, &ct[i]) == BGJOB_RESULT_OK);
    for (int i = 0; i < AF_C; i++)
        REQUIRE(bgjob_context_create(&cc[i]) == BGJOB_RESULT_OK);
    int same = 0, valid = 0;
    for (int i = 0; i < AF_J; i++) {
        for (int k = 0; k < AF_J; k++)
            same += cj[i] == af_pj[k];
        bgjob_state st;
        valid += bgjob_job_get_state(af_pj[i], &st) != BGJOB_RESULT_INVALID_HANDLE;
    }
    for (int i = 0; i < AF_T; i++) {
        for (int k = 0; k < AF_T; k++)
            same += ct[i] == af_pt[k];
    }
    for (int i = 0; i < AF_C; i++) {
        for (int k = 0; k < AF_C; k++)
            same += cc[i] == af_pc[k];
        size_t n;
        valid += bgjob_context_pending(af_pc[i], &n) != BGJOB_RESULT_INVALID_HANDLE;
    }
    CHECKF(same == 0, "%d child handles equal a parent handle", same);
    CHECKF(valid == 0, "%d parent handles name objects in the child", valid);
    /* A parent txn handle must not reach the child's txn: adding a child job
     * through it must be INVALID_HANDLE. */
    for (int i = 0; i < AF_T; i++)
        CHECK_RC(bgjob_txn_add(af_pt[i], cj[0]), BGJOB_RESULT_INVALID_HANDLE);
    for (int i = 0; i < AF_J; i++)
        bgjob_job_destroy(cj[i]);
    return ok;
}

static bool test_fork_child_handles_never_equal_parent_handles(void)
{
    bool ok = true;
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_DEFER_START;
    for (int i = 0; i < AF_J; i++)
        REQUIRE(bgjob_job_create(&o, worker_return, NULL, NULL, &af_pj[i]) == BGJOB_RESULT_OK);
    for (int i = 0; i < AF_T; i++)
        REQUIRE(bgjob_txn_create(0, &af_pt[i]) == BGJOB_RESULT_OK);
    for (int i = 0; i < AF_C; i++)
        REQUIRE(bgjob_context_create(&af_pc[i]) == BGJOB_RESULT_OK);
    CHECK(in_child(15, af_child));
    for (int i = 0; i < AF_J; i++)
        CHECK_RC(bgjob_job_destroy(af_pj[i]), BGJOB_RESULT_OK);
    for (int i = 0; i < AF_T; i++)
        CHECK_RC(bgjob_txn_destroy(af_pt[i]), BGJOB_RESULT_OK);
    for (int i = 0; i < AF_C; i++)
        CHECK_RC(bgjob_context_destroy(af_pc[i]), BGJOB_RESULT_OK);
    return ok;
}

/* ------------------------------------------------------------------ */
/* External job: the owner's STOP racing a cancel                      */

/* bgjob_job_report_io_error: "A job whose cancel was requested is never
 * stopped" and bgjob_job_cancel: "A paused job is resumed so its worker can
 * see the cancel". An external job's owner reports an error under policy
 * STOP on one thread as another cancels. Whichever wins, once both returned
 * the job must not be left PAUSED with the cancel requested, and iostatus
 * must be OK ("resume and cancel reset it"). 500 rounds. */
struct ext_race {
    pthread_barrier_t *bar;
    bgjob_job *job;
    bgjob_error_action action;
    bgjob_result rc;
};

static void *ext_report_main(void *p)
{
    struct ext_race *r = p;
    pthread_barrier_wait(r->bar);
    r->rc = bgjob_job_report_io_error(r->job, 5, NULL, &r->action);
    return NULL;
}

static void *ext_cancel_main(void *p)
{
    struct ext_race *r = p;
    pthread_barrier_wait(r->bar);
    r->rc = bgjob_job_cancel(r->job, NULL);
    return NULL;
}

static bool test_external_stop_racing_cancel_never_leaves_it_paused(void)
{
    bool ok = true;
    int stops = 0, bad = 0;
    for (int round = 0; round < 500 && bad < 3; round++) {
        bgjob_job_options o;
        bgjob_job_options_init(&o, sizeof o);
        o.flags = BGJOB_CREATE_EXTERNAL;
        o.error_policy = BGJOB_ERROR_POLICY_STOP;
        bgjob_job *j;
        REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &j) == BGJOB_RESULT_OK);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        struct ext_race a = {&bar, j, -1, -1}, b = {&bar, j, -1, -1};
        pthread_t ta, tb;
        pthread_create(&ta, NULL, ext_report_main, &a);
        pthread_create(&tb, NULL, ext_cancel_main, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&bar);
        if (a.action == BGJOB_ERROR_ACTION_STOP)
            stops++;
        bgjob_info info;
        if (info_of(j, &info)) {
            if (info.state != BGJOB_STATE_RUNNING || info.iostatus != BGJOB_IOSTATUS_OK ||
                !info.cancel_requested || info.pause_requested) {
                bad++;
                CHECKF(false,
                       "round %d: after report (%s, action %d) and cancel: state %s, iostatus %d, "
                       "cancel %d, pause %d",
                       round, bgjob_result_str(a.rc), a.action, bgjob_state_str(info.state),
                       info.iostatus, info.cancel_requested, info.pause_requested);
            }
        }
        CHECK_RC(bgjob_job_end(j, 125, NULL), BGJOB_RESULT_OK);
        CHECK_STATE(wait_end(j), BGJOB_STATE_CANCELLED);
        bgjob_job_destroy(j);
    }
    tap_diag("%d of 500 rounds were told STOP", stops);
    return ok;
}

/* Under the cap: a queued job that was paused and is then cancelled — "A
 * queued job that is cancelled ends BGJOB_STATE_CANCELLED before
 * bgjob_job_cancel returns, without its worker running" — also when it was
 * paused first; and DETACH_CANCEL of a queued job frees it at once,
 * unrun. */
static bool test_paused_queued_job_cancelled_ends_before_cancel_returns(void)
{
    bool ok = true;
    struct gate gx;
    gate_init(&gx);
    struct tracker tx, t, t2;
    tracker_init(&tx);
    tracker_init(&t);
    tracker_init(&t2);
    tx.gate = &gx;
    bgjob_job *x, *j, *j2;
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    REQUIRE(job_create(&tx, worker_gated, 0, 0, NULL, &x) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&tx.runs, 1));
    REQUIRE(job_create(&t, worker_until_cancel, 0, 0, NULL, &j) == BGJOB_RESULT_OK);
    REQUIRE(job_create(&t2, worker_return, 0, 0, NULL, &j2) == BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_pause(j), BGJOB_RESULT_OK);
    CHECK_RC(bgjob_job_cancel(j, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(state_of(j), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.frees), 1);
    CHECK_RC(bgjob_job_detach(j2, BGJOB_DETACH_CANCEL), BGJOB_RESULT_OK);
    CHECK_EQ(atomic_load(&t2.frees), 1);
    gate_open(&gx);
    CHECK_STATE(wait_end(x), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(j), BGJOB_STATE_CANCELLED);
    CHECK_EQ(atomic_load(&t.runs), 0);
    CHECK_EQ(atomic_load(&t2.runs), 0);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(x);
    bgjob_job_destroy(j);
    gate_destroy(&gx);
    return ok;
}

/* "`BGJOB_RESULT_SYSTEM` if the program could not be started, and did not
 * run (errno: ENOENT, EACCES, ...)". An argument vector over the kernel's
 * limit (E2BIG) and a directory as the program (EACCES): SYSTEM, errno set,
 * line_free once each. */
/* valgrind cannot go on after an execve that fails past its own checks
 * (E2BIG: "EXEC FAILED: I can't recover from execve() failing"): its child
 * dies with status 101 instead of returning the errno. */
static bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

static bool test_unstartable_programs_report_system_with_errno(void)
{
    bool ok = true;
    int first = 0;
    if (under_valgrind()) {
        tap_diag("under valgrind: the E2BIG case is skipped (valgrind's execve cannot fail)");
        first = 1;
    }
    size_t big = 4u << 20;
    char *arg = malloc(big);
    REQUIRE(arg != NULL);
    memset(arg, 'x', big - 1);
    arg[big - 1] = 0;
    const char *argv1[] = {"/bin/true", arg, NULL};
    static const char *const argv2[] = {"/tmp", NULL};
    const char *const *argvs[2] = {argv1, argv2};
    int want[2] = {E2BIG, EACCES};
    for (int i = first; i < 2; i++) {
        struct lines l;
        lines_init(&l);
        struct ccase c;
        ccase_init(&c, argvs[i]);
        c.lines = &l;
        c.flags = BGJOB_CHILD_CAPTURE_STDERR;
        bgjob_job *job = ccase_start(&c);
        REQUIRE(job != NULL);
        CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
        CHECK_RC(atomic_load(&c.spawn_rc), BGJOB_RESULT_SYSTEM);
        CHECKF(atomic_load(&c.spawn_errno) == want[i], "case %d: errno %d, expected %d", i,
               atomic_load(&c.spawn_errno), want[i]);
        CHECK_EQ(atomic_load(&l.frees), 1);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    free(arg);
    return ok;
}

/* ------------------------------------------------------------------ */
/* The cap and completions on the worker thread                         */

/* bgjob_pool_set_max_running: "a thread whose job ended takes the oldest
 * queued one straight away", and the completion "may call any bgjob
 * function ... create and start new ones". Cap 1: A runs, C is queued.
 * A's completion (no context: on A's worker thread, after A ended) waits up
 * to 5 s for C. A has ended, so its slot is free and C must run; the cap's
 * deadlock warning is about *workers* waiting for other jobs. */
struct cap_comp {
    bgjob_job *wait_for;
    atomic_int rc, state, runs;
    atomic_long took;
};

static void cap_completion(void *ud, bgjob_job *job, bgjob_state state)
{
    (void)job;
    (void)state;
    struct cap_comp *c = ud;
    bgjob_state st = -1;
    int64_t t0 = now_ms();
    atomic_store(&c->rc, bgjob_job_wait(c->wait_for, 5000, &st));
    atomic_store(&c->took, now_ms() - t0);
    atomic_store(&c->state, st);
    atomic_fetch_add(&c->runs, 1);
}

static bool test_completion_on_a_capped_worker_thread_may_wait_for_a_queued_job(void)
{
    bool ok = true;
    struct gate ga;
    gate_init(&ga);
    struct tracker ta, tc;
    tracker_init(&ta);
    tracker_init(&tc);
    ta.gate = &ga;
    struct cap_comp cc;
    memset(&cc, 0, sizeof cc);
    atomic_store(&cc.rc, -1);
    CHECK_RC(bgjob_pool_set_max_running(1), BGJOB_RESULT_OK);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.completion = cap_completion;
    o.completion_userdata = &cc;
    bgjob_job *a, *c;
    REQUIRE(bgjob_job_create(&o, worker_gated, ud_new(&ta), ud_free, &a) == BGJOB_RESULT_OK);
    REQUIRE(poll_int_eq(&ta.runs, 1));
    REQUIRE(job_create(&tc, worker_return, 0, 0, NULL, &c) == BGJOB_RESULT_OK);
    cc.wait_for = c;
    gate_open(&ga);
    CHECK(poll_int_eq(&cc.runs, 1));
    CHECKF(atomic_load(&cc.rc) == BGJOB_RESULT_OK,
           "the completion's wait for the queued job gave %s after %ld ms (C ran %d times)",
           bgjob_result_str(atomic_load(&cc.rc)), atomic_load(&cc.took), atomic_load(&tc.runs));
    CHECK_STATE(wait_end(c), BGJOB_STATE_COMPLETED);
    CHECK_STATE(wait_end(a), BGJOB_STATE_COMPLETED);
    CHECK_RC(bgjob_pool_set_max_running(0), BGJOB_RESULT_OK);
    bgjob_job_destroy(a);
    bgjob_job_destroy(c);
    gate_destroy(&ga);
    return ok;
}

/* A control callback that ends and destroys its external job from inside
 * CANCEL: the callback "may call any other bgjob function, on this job too:
 * ... end it (from inside CANCEL, say)"; after the end the job is terminal,
 * so its last handle's destroy is allowed. The cancel must return, the
 * control userdata be freed once ("when that call returns"), the completion
 * run once, and the handle be invalid afterwards. */
struct ctl_state {
    atomic_int end_rc, destroy_rc, calls, frees, completions;
};

static void ctl_free(void *ud) { atomic_fetch_add(&((struct ctl_state *)ud)->frees, 1); }

static void ctl_cb(void *ud, bgjob_job *job, bgjob_control what, int64_t arg)
{
    (void)arg;
    struct ctl_state *c = ud;
    atomic_fetch_add(&c->calls, 1);
    if (what != BGJOB_CONTROL_CANCEL)
        return;
    atomic_store(&c->end_rc, bgjob_job_end(job, 125, "cancelled by owner"));
    atomic_store(&c->destroy_rc, bgjob_job_destroy(job));
}

static void ctl_completion(void *ud, bgjob_job *job, bgjob_state st)
{
    (void)job;
    (void)st;
    atomic_fetch_add(&((struct ctl_state *)ud)->completions, 1);
}

static void *cancel_main(void *p)
{
    bgjob_job_cancel(p, NULL);
    return NULL;
}

static bool test_control_callback_ends_and_destroys_its_external_job(void)
{
    bool ok = true;
    struct ctl_state c;
    memset(&c, 0, sizeof c);
    atomic_store(&c.end_rc, -1);
    atomic_store(&c.destroy_rc, -1);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.flags = BGJOB_CREATE_EXTERNAL;
    o.control = ctl_cb;
    o.control_userdata = &c;
    o.control_free = ctl_free;
    o.completion = ctl_completion;
    o.completion_userdata = &c;
    bgjob_job *j;
    REQUIRE(bgjob_job_create(&o, NULL, NULL, NULL, &j) == BGJOB_RESULT_OK);
    struct bounded b;
    pthread_t th;
    REQUIRE(bounded_start(&b, &th, cancel_main, j));
    CHECKF(bounded_join(&b, th, 10000), "the cancel never returned");
    CHECK_RC(atomic_load(&c.end_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&c.destroy_rc), BGJOB_RESULT_OK);
    CHECK(poll_int_eq(&c.completions, 1));
    CHECK(poll_int_eq(&c.frees, 1));
    CHECK_EQ(atomic_load(&c.calls), 1);
    bgjob_state st;
    CHECK_RC(bgjob_job_get_state(j, &st), BGJOB_RESULT_INVALID_HANDLE);
    return ok;
}

/* ------------------------------------------------------------------ */

static const struct tap_test tests[] = {
    TAP_TEST(test_instant_child_lines_split_on_cr_lf_and_crlf),
    TAP_TEST(test_child_closing_its_captured_output_is_still_waited_for),
    TAP_TEST(test_wait_child_returns_when_the_child_ends_not_its_pipe),
    TAP_TEST(test_cancel_during_wait_child_of_a_term_ignoring_child),
    TAP_TEST(test_grandchild_ignoring_term_is_killed_once_the_child_exits),
    TAP_TEST(test_line_callback_cancels_its_own_job),
    TAP_TEST(test_envp_path_decides_the_lookup),
    TAP_TEST(test_bad_cwd_and_env_are_refused_and_nothing_runs),
    TAP_TEST(test_second_wait_for_the_same_child_is_refused),
    TAP_TEST(test_paused_time_does_not_count_toward_wait_child_timeout),
    TAP_TEST(test_term_ignoring_child_left_bound_is_gone_when_the_job_ends),
    TAP_TEST(test_watch_child_refusals_and_reap),
    TAP_TEST(test_cleanup_child_after_cancel_runs_to_its_end),
    TAP_TEST(test_cap_is_never_exceeded_and_status_agrees),
    TAP_TEST(test_lowered_cap_then_removed),
    TAP_TEST(test_paused_queued_job_holds_its_slot),
    TAP_TEST(test_queued_subjob_of_a_cancelled_parent_ends_unrun),
    TAP_TEST(test_queued_transaction_member_cancel_aborts_the_group_unrun),
    TAP_TEST(test_racing_cancels_of_a_queued_job_exactly_one_requested),
    TAP_TEST(test_queued_job_detached_runs_later_and_frees_itself),
    TAP_TEST(test_fork_child_is_not_blocked_by_the_parents_pool_slots),
    TAP_TEST(test_member_destroyed_before_start_aborts_the_rest),
    TAP_TEST(test_finalize_of_a_waiting_member_finalizes_the_group_later),
    TAP_TEST(test_cancel_of_a_pending_member_ends_the_whole_group),
    TAP_TEST(test_racing_finalizes_commit_each_member_once),
    TAP_TEST(test_detach_racing_finalize_of_a_pending_job),
    TAP_TEST(test_commit_callback_calls_finalize_and_destroy_on_its_job),
    TAP_TEST(test_completion_on_the_worker_thread_may_wait_and_destroy),
    TAP_TEST(test_cancel_hook_reenters_its_job),
    TAP_TEST(test_worker_detaching_its_own_handle_keeps_using_it),
    TAP_TEST(test_stop_policy_racing_cancel_never_leaves_a_stopped_job),
    TAP_TEST(test_stop_policy_racing_detach_always_ends),
    TAP_TEST(test_handle_values_never_come_back),
    TAP_TEST(test_soft_and_force_cancels_racing_exactly_one_force_requested),
    TAP_TEST(test_fork_in_a_worker_while_another_spawns_children),
    TAP_TEST(test_manual_finalize_passes_through_waiting_while_finalizing),
    TAP_TEST(test_worker_returns_while_another_thread_waits_for_its_child),
    TAP_TEST(test_stat_batches_with_strings_are_whole_under_readers),
    TAP_TEST(test_fork_child_handles_never_equal_parent_handles),
    TAP_TEST(test_external_stop_racing_cancel_never_leaves_it_paused),
    TAP_TEST(test_paused_queued_job_cancelled_ends_before_cancel_returns),
    TAP_TEST(test_unstartable_programs_report_system_with_errno),
    TAP_TEST(test_completion_on_a_capped_worker_thread_may_wait_for_a_queued_job),
    TAP_TEST(test_control_callback_ends_and_destroys_its_external_job),
};

int main(void)
{
    /* ATK5_ONLY=substring runs only the cases whose names contain it. */
    const char *only = getenv("ATK5_ONLY");
    if (only == NULL || *only == 0)
        return tap_run(tests, TAP_COUNT(tests));
    static struct tap_test some[TAP_COUNT(tests)];
    size_t n = 0;
    for (size_t i = 0; i < TAP_COUNT(tests); i++)
        if (strstr(tests[i].name, only) != NULL)
            some[n++] = tests[i];
    return tap_run(some, n);
}
