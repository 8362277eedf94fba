/* Child processes bound to a job (libxl's child-process watch): exit status
 * and signals reported, output captured line by line, SIGTERM then SIGKILL on
 * cancel, no zombie left (checked in /proc), and the host's own SIGCHLD
 * handling and children left alone. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Whether /proc has an entry for `pid` at all (a zombie has one, state Z). */
static bool proc_exists(pid_t pid)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return stat(path, &st) == 0;
}

/* The state letter in /proc/<pid>/stat, or 0 if there is no such process. */
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
    const char *close_paren = strrchr(buf, ')');
    return close_paren != NULL && close_paren[1] == ' ' ? close_paren[2] : 0;
}

/* Lines a child printed, as the line callback saw them. */
#define MAX_LINES 16
struct lines {
    int n;
    int stream[MAX_LINES];
    char text[MAX_LINES][64];
    size_t len[MAX_LINES];
    atomic_int frees;
    atomic_int off_thread; /* calls not on the waiting thread */
    pthread_t waiter;
};

static void on_line(void *userdata, bgjob_job *job, int32_t stream, const char *line, size_t len)
{
    struct lines *l = userdata;
    (void)job;
    if (!pthread_equal(pthread_self(), l->waiter))
        atomic_fetch_add(&l->off_thread, 1);
    if (l->n < MAX_LINES) {
        l->stream[l->n] = stream;
        l->len[l->n] = len;
        snprintf(l->text[l->n], sizeof l->text[0], "%s", line);
        l->n++;
    }
}

static void lines_free(void *userdata)
{
    struct lines *l = userdata;
    atomic_fetch_add(&l->frees, 1);
}

/* One case's worker: the command to run, how, and what it saw. */
struct run {
    const char *const *argv;
    const char *const *envp;
    const char *cwd;
    uint32_t flags;
    int64_t grace_ms;
    int64_t wait_timeout_ms;
    bool skip_wait;         /* return right after the spawn */
    struct lines *lines;
    atomic_int pid;
    atomic_int spawn_rc;
    atomic_int spawn_errno;
    atomic_int wait_rc;
    atomic_int wstatus;
    atomic_int second_wait_rc;
};

static void run_init(struct run *r, const char *const *argv)
{
    memset(r, 0, sizeof *r);
    r->argv = argv;
    r->grace_ms = BGJOB_CHILD_DEFAULT_GRACE_MS;
    r->wait_timeout_ms = -1;
    atomic_init(&r->pid, 0);
    atomic_init(&r->spawn_rc, -1);
    atomic_init(&r->spawn_errno, 0);
    atomic_init(&r->wait_rc, -1);
    atomic_init(&r->wstatus, -1);
    atomic_init(&r->second_wait_rc, -1);
}

static int32_t child_worker(void *userdata, bgjob_job *job)
{
    struct run *r = userdata;
    bgjob_child_options o;
    if (bgjob_child_options_init(&o, sizeof o) != BGJOB_RESULT_OK)
        return 1;
    o.argv = (const char *const *)r->argv;
    o.envp = (const char *const *)r->envp;
    o.cwd = r->cwd;
    o.flags = r->flags;
    o.grace_ms = r->grace_ms;
    if (r->lines != NULL) {
        r->lines->waiter = pthread_self();
        o.on_line = on_line;
        o.line_userdata = r->lines;
        o.line_free = lines_free;
    }
    int32_t pid = -1;
    errno = 0;
    bgjob_result rc = bgjob_job_spawn_child(job, &o, &pid);
    atomic_store(&r->spawn_errno, errno);
    atomic_store(&r->spawn_rc, rc);
    if (rc != BGJOB_RESULT_OK)
        return 2;
    atomic_store(&r->pid, pid);
    if (r->skip_wait)
        return 0;
    int32_t status = -1;
    rc = bgjob_job_wait_child(job, pid, r->wait_timeout_ms, &status);
    atomic_store(&r->wstatus, status);
    atomic_store(&r->wait_rc, rc);
    atomic_store(&r->second_wait_rc, bgjob_job_wait_child(job, pid, 0, NULL));
    return rc == BGJOB_RESULT_OK ? 0 : 125;
}

static bgjob_job *start(struct run *r)
{
    bgjob_job *job = NULL;
    if (bgjob_job_create(NULL, child_worker, r, NULL, &job) != BGJOB_RESULT_OK)
        return NULL;
    return job;
}

/* A child that exits by itself: its exit status or signal is reported, and a
 * second wait finds nothing (it was reaped). */
static bool test_exit_status_reported(void)
{
    bool ok = true;
    static const char *const exits7[] = {"sh", "-c", "exit 7", NULL};
    static const char *const killed[] = {"sh", "-c", "kill -KILL $$", NULL};
    struct run r;

    run_init(&r, exits7);
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&r.wait_rc), BGJOB_RESULT_OK);
    int ws = atomic_load(&r.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 7, "status 0x%x", ws);
    CHECK_RC(atomic_load(&r.second_wait_rc), BGJOB_RESULT_NOT_FOUND);
    CHECK(!proc_exists(atomic_load(&r.pid)));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    run_init(&r, killed);
    job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    ws = atomic_load(&r.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status 0x%x", ws);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* stdout and stderr captured line by line (\n, \r and \r\n all end a line),
 * on the waiting thread; the line userdata freed once; environment and
 * working directory applied. */
static bool test_output_captured(void)
{
    bool ok = true;
    static const char *const argv[] = {
        "sh", "-c", "printf 'one\\ntwo\\r\\nthree\\r'; echo oops >&2; printf '%s:%s' \"$FOO\" \"$(pwd)\"",
        NULL};
    static const char *const envp[] = {"FOO=bar", "PATH=/usr/bin:/bin", NULL};
    struct lines l;
    memset(&l, 0, sizeof l);
    atomic_init(&l.frees, 0);
    atomic_init(&l.off_thread, 0);
    struct run r;
    run_init(&r, argv);
    r.envp = envp;
    r.cwd = "/tmp";
    r.flags = BGJOB_CHILD_CAPTURE_STDOUT | BGJOB_CHILD_CAPTURE_STDERR;
    r.lines = &l;
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&r.wait_rc), BGJOB_RESULT_OK);
    CHECK_EQ(l.n, 5);
    if (l.n == 5) {
        /* stderr's line may come before or after stdout's. */
        int err = -1;
        for (int i = 0; i < 5; i++)
            if (l.stream[i] == BGJOB_CHILD_STDERR)
                err = i;
        REQUIRE(err >= 0);
        CHECK_STR(l.text[err], "oops");
        const char *want[] = {"one", "two", "three", "bar:/tmp"};
        for (int i = 0, j = 0; i < 5; i++) {
            if (i == err)
                continue;
            CHECK_EQ(l.stream[i], BGJOB_CHILD_STDOUT);
            CHECK_STR(l.text[i], want[j]);
            CHECK_EQ(l.len[i], strlen(want[j]));
            j++;
        }
    }
    CHECK_EQ(atomic_load(&l.off_thread), 0);
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Cancel sends SIGTERM: the wait returns CANCELLED with the signal in the
 * status, the job ends CANCELLED, and the child is gone from /proc. */
static bool test_child_killed_on_cancel(void)
{
    bool ok = true;
    static const char *const argv[] = {"sleep", "60", NULL};
    struct run r;
    run_init(&r, argv);
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&r.spawn_rc, BGJOB_RESULT_OK));
    pid_t pid = atomic_load(&r.pid);
    REQUIRE(pid > 0);
    CHECK(proc_exists(pid));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&r.wait_rc), BGJOB_RESULT_CANCELLED);
    int ws = atomic_load(&r.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM, "status 0x%x", ws);
    CHECKF(!proc_exists(pid), "pid %d still in /proc, state %c", (int)pid, proc_state(pid));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A child that ignores SIGTERM gets SIGKILL when its grace period ends. */
static bool test_sigkill_after_grace(void)
{
    bool ok = true;
    static const char *const argv[] = {"sh", "-c", "trap '' TERM; exec sleep 60", NULL};
    struct run r;
    run_init(&r, argv);
    r.grace_ms = 300;
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&r.spawn_rc, BGJOB_RESULT_OK));
    pid_t pid = atomic_load(&r.pid);
    /* Let the shell set up its trap and exec before the cancel. */
    for (int i = 0; i < 300; i++) {
        char comm[64] = "";
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(comm, sizeof comm, f) == NULL)
                comm[0] = 0;
            fclose(f);
        }
        if (strncmp(comm, "sleep", 5) == 0)
            break;
        sleep_ms(10);
    }
    int64_t t0 = now_ms();
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    int64_t took = now_ms() - t0;
    int ws = atomic_load(&r.wstatus);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status 0x%x", ws);
    CHECKF(took >= 300, "SIGKILL came after %lld ms of a 300 ms grace", (long long)took);
    CHECK(!proc_exists(pid));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A worker that returns without waiting: the child is killed and reaped
 * before the job ends (no zombie, nothing left running). */
static bool test_child_reaped_when_worker_returns(void)
{
    bool ok = true;
    static const char *const argv[] = {"sleep", "60", NULL};
    struct run r;
    run_init(&r, argv);
    r.skip_wait = true;
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    pid_t pid = atomic_load(&r.pid);
    REQUIRE(pid > 0);
    CHECKF(!proc_exists(pid), "pid %d still in /proc, state %c", (int)pid, proc_state(pid));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* A wait with a timeout ends TIMED_OUT and the child stays bound; paused time
 * does not count. */
static bool test_wait_timeout(void)
{
    bool ok = true;
    static const char *const argv[] = {"sleep", "60", NULL};
    struct run r;
    run_init(&r, argv);
    r.wait_timeout_ms = 100;
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.wait_rc), BGJOB_RESULT_TIMED_OUT);
    CHECK_EQ(atomic_load(&r.wstatus), -1);
    /* The second wait (timeout 0) still found it: it was bound until the end. */
    CHECK_RC(atomic_load(&r.second_wait_rc), BGJOB_RESULT_TIMED_OUT);
    CHECK(!proc_exists(atomic_load(&r.pid)));
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Spawn errors: a missing program is SYSTEM with errno ENOENT; bad options are
 * INVALID_ARGUMENT, and the line userdata is freed either way. */
static bool test_spawn_errors(void)
{
    bool ok = true;
    static const char *const missing[] = {"/nonexistent/bgjob-no-such-program", NULL};
    static const char *const empty[] = {NULL};
    static const char *const bad_env[] = {"NOEQUALS", NULL};
    static const char *const sh[] = {"sh", "-c", "true", NULL};
    struct lines l;
    memset(&l, 0, sizeof l);
    atomic_init(&l.frees, 0);
    struct run r;

    run_init(&r, missing);
    r.lines = &l;
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.spawn_rc), BGJOB_RESULT_SYSTEM);
    CHECK_EQ(atomic_load(&r.spawn_errno), ENOENT);
    CHECK_EQ(atomic_load(&l.frees), 1);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    run_init(&r, empty);
    job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.spawn_rc), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    run_init(&r, sh);
    r.envp = bad_env;
    job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.spawn_rc), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    run_init(&r, sh);
    r.flags = BGJOB_CHILD_CAPTURE_STDOUT | BGJOB_CHILD_NULL_STDOUT;
    job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.spawn_rc), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    run_init(&r, sh);
    r.grace_ms = -1;
    job = start(&r);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_FAILED);
    CHECK_RC(atomic_load(&r.spawn_rc), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    /* Not from a job that is not running. */
    bgjob_job_options jo;
    CHECK_RC(bgjob_job_options_init(&jo, sizeof jo), BGJOB_RESULT_OK);
    jo.flags = BGJOB_CREATE_DEFER_START;
    run_init(&r, sh);
    CHECK_RC(bgjob_job_create(&jo, child_worker, &r, NULL, &job), BGJOB_RESULT_OK);
    bgjob_child_options co;
    CHECK_RC(bgjob_child_options_init(&co, sizeof co), BGJOB_RESULT_OK);
    co.argv = sh;
    CHECK_RC(bgjob_job_spawn_child(job, &co, NULL), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_job_spawn_child(job, NULL, NULL), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_wait_child(job, 1, 0, NULL), BGJOB_RESULT_NOT_ALLOWED);
    CHECK_RC(bgjob_child_options_init(&co, 4), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_child_options_init(NULL, sizeof co), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* Watching a child the worker started with posix_spawn; refusals for pids
 * that are not ours, do not exist, or are watched already. */
struct watch {
    atomic_int rcs[6];
    atomic_int wstatus;
};

static int32_t watch_worker(void *userdata, bgjob_job *job)
{
    struct watch *w = userdata;
    char *argv[] = {"sh", "-c", "exit 3", NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "sh", NULL, NULL, argv, environ) != 0)
        return 1;
    atomic_store(&w->rcs[0], bgjob_job_watch_child(job, pid, 1000));
    atomic_store(&w->rcs[1], bgjob_job_watch_child(job, pid, 1000));
    atomic_store(&w->rcs[2], bgjob_job_watch_child(job, 1, 1000));
    atomic_store(&w->rcs[3], bgjob_job_watch_child(job, 0, 1000));
    atomic_store(&w->rcs[4], bgjob_job_watch_child(job, pid, -1));
    int32_t status = -1;
    atomic_store(&w->rcs[5], bgjob_job_wait_child(job, pid, -1, &status));
    atomic_store(&w->wstatus, status);
    return 0;
}

static bool test_watch_existing_child(void)
{
    bool ok = true;
    struct watch w;
    for (int i = 0; i < 6; i++)
        atomic_init(&w.rcs[i], -1);
    atomic_init(&w.wstatus, -1);
    bgjob_job *job = NULL;
    CHECK_RC(bgjob_job_create(NULL, watch_worker, &w, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
    CHECK_RC(atomic_load(&w.rcs[0]), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&w.rcs[1]), BGJOB_RESULT_INVALID_ARGUMENT); /* already watched */
    CHECK_RC(atomic_load(&w.rcs[2]), BGJOB_RESULT_INVALID_ARGUMENT); /* init: not our child */
    CHECK_RC(atomic_load(&w.rcs[3]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.rcs[4]), BGJOB_RESULT_INVALID_ARGUMENT);
    CHECK_RC(atomic_load(&w.rcs[5]), BGJOB_RESULT_OK);
    int ws = atomic_load(&w.wstatus);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 3, "status 0x%x", ws);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    return ok;
}

/* The host's own SIGCHLD handler and its own children: bgjob changes neither
 * the handler nor reaps a child it was not given. */
static atomic_int host_sigchld;

static void host_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&host_sigchld, 1);
}

static bool test_host_sigchld_undisturbed(void)
{
    bool ok = true;
    struct sigaction sa, before, after;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = host_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGCHLD, &sa, &before) == 0);

    /* The host's own child, which it will reap itself. */
    char *host_argv[] = {"sh", "-c", "exit 5", NULL};
    pid_t host_child;
    REQUIRE(posix_spawnp(&host_child, "sh", NULL, NULL, host_argv, environ) == 0);

    static const char *const argv[] = {"sleep", "60", NULL};
    struct run r;
    run_init(&r, argv);
    bgjob_job *job = start(&r);
    REQUIRE(job != NULL);
    REQUIRE(poll_int_eq(&r.spawn_rc, BGJOB_RESULT_OK));
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);

    REQUIRE(sigaction(SIGCHLD, NULL, &after) == 0);
    CHECK(after.sa_handler == host_handler);
    int ws = -1;
    CHECK_EQ(waitpid(host_child, &ws, 0), host_child); /* still ours to reap */
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 5, "status 0x%x", ws);
    CHECK(atomic_load(&host_sigchld) >= 1); /* the kernel still told the host */
    REQUIRE(sigaction(SIGCHLD, &before, NULL) == 0);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_exit_status_reported),
        TAP_TEST(test_output_captured),
        TAP_TEST(test_child_killed_on_cancel),
        TAP_TEST(test_sigkill_after_grace),
        TAP_TEST(test_child_reaped_when_worker_returns),
        TAP_TEST(test_wait_timeout),
        TAP_TEST(test_spawn_errors),
        TAP_TEST(test_watch_existing_child),
        TAP_TEST(test_host_sigchld_undisturbed),
    };
    return tap_run(tests, TAP_COUNT(tests));
}
