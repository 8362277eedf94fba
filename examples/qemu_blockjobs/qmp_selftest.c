/*
 * qmp_selftest: the QEMU side of the qemu_blockjobs example, checked with
 * plain QMP (no bgjob yet): it starts qemu-storage-daemon, builds images with
 * qemu-img / qemu-io, and runs six block-job scenarios, checking the events
 * and states QEMU reports for each:
 *
 *   1  mirror: progress, pause/resume, set-speed, READY, complete, finalize,
 *      dismiss, the copy compared with qemu-img compare;
 *      1b a soft cancel (block-job-cancel) of a READY mirror completes it;
 *   2  mirror cancelled mid-way; the partial target removed;
 *   3  EIO injected (blkdebug) with on-target-error=stop: the job pauses with
 *      io-status failed, resumes and reaches READY; 3b the same with ENOSPC
 *      gives io-status nospace;
 *   4  a grouped transaction of two backups where one target fails: the
 *      other is cancelled by QEMU;
 *   5  a throttled job cancelled by our own deadline;
 *   6  the daemon killed with SIGKILL mid-job: the client sees the end of the
 *      connection, nothing hangs, no daemon is left.
 *
 * Exit 0 when every step behaved, 1 otherwise, 77 (with the reason) when
 * qemu-storage-daemon / qemu-img / qemu-io are missing. QMP_TRACE=1 prints
 * every QMP message.
 */
#include "qmp.h"
#include "qsd.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024LL * 1024LL)
#define IMAGE_MIB 64
#define CMD_MS 5000  /* bound on one QMP command */
#define STEP_MS 8000 /* bound on one awaited event */

static struct qmp *q;
static struct qsd qsd;
static char dir[64];
static int failures;
static char step_name[64];
static int64_t step_start;
/* The events of the current step, in short form, for the report. */
static char seq[4096];

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A failed check: says what and where, counts it; the step goes on only
 * where it can. */
#define CHECK(cond, ...)                                                                        \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  FAIL [%s] line %d: ", step_name, __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
            failures++;                                                                        \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

static void step_begin(const char *name)
{
    snprintf(step_name, sizeof step_name, "%s", name);
    seq[0] = 0;
    step_start = qmp_now_ms();
    printf("step %s\n", name);
    fflush(stdout);
}

static void step_end(int rc)
{
    printf("  events: %s\n", seq);
    printf("  %s: %s in %.2f s\n", step_name, rc == 0 ? "ok" : "FAILED",
           (double)(qmp_now_ms() - step_start) / 1000.0);
    fflush(stdout);
}

/* Records an event in the step's sequence: JOB_STATUS_CHANGE as "id:status",
 * the others by name (with the job and the interesting fields). */
static void note_event(json_t *ev)
{
    const char *name = json_string_value(json_object_get(ev, "event"));
    json_t *data = json_object_get(ev, "data");
    if (!name)
        return;
    if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
        trail_add(seq, sizeof seq, "%s:%s", json_string_value(json_object_get(data, "id")),
                json_string_value(json_object_get(data, "status")));
    } else if (strcmp(name, "BLOCK_JOB_ERROR") == 0) {
        trail_add(seq, sizeof seq, "ERROR(%s,%s,%s)", json_string_value(json_object_get(data, "device")),
                json_string_value(json_object_get(data, "operation")),
                json_string_value(json_object_get(data, "action")));
    } else if (strncmp(name, "BLOCK_JOB_", 10) == 0) {
        const char *err = json_string_value(json_object_get(data, "error"));
        const char *job = json_string_value(json_object_get(data, "device"));
        if (!job) /* BLOCK_JOB_PENDING names the job "id" */
            job = json_string_value(json_object_get(data, "id"));
        trail_add(seq, sizeof seq, "%s(%s%s%s)", name + 10, job ? job : "?",
                err ? ",error=" : "", err ? err : "");
    } else {
        trail_add(seq, sizeof seq, "%s", name);
    }
}

/* Waits for event `name` about job `job` (JOB_STATUS_CHANGE: with status
 * `status`), recording every event on the way. *data_out (may be NULL) gets
 * the event's data (a new reference). */
static int wait_event(const char *name, const char *job, const char *status, int timeout_ms, json_t **data_out)
{
    int64_t deadline = qmp_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - qmp_now_ms();
        json_t *ev = NULL;
        int rc = qmp_wait_any_event(q, left > 0 ? (int)left : 0, &ev);
        if (rc != QMP_OK) {
            fprintf(stderr, "  [%s] waiting for %s %s %s: %s\n", step_name, name, job, status ? status : "",
                    qmp_error(q));
            return rc;
        }
        note_event(ev);
        const char *ename = json_string_value(json_object_get(ev, "event"));
        json_t *data = json_object_get(ev, "data");
        const char *id = json_string_value(json_object_get(data, "id"));
        if (!id)
            id = json_string_value(json_object_get(data, "device"));
        bool match = ename && strcmp(ename, name) == 0 && id && strcmp(id, job) == 0;
        if (match && status) {
            const char *st = json_string_value(json_object_get(data, "status"));
            match = st && strcmp(st, status) == 0;
        }
        if (match) {
            if (data_out)
                *data_out = json_incref(data);
            json_decref(ev);
            return QMP_OK;
        }
        json_decref(ev);
    }
}

static int wait_status(const char *job, const char *status)
{
    return wait_event("JOB_STATUS_CHANGE", job, status, STEP_MS, NULL);
}

/* Runs a command; a failure is printed and returned. */
static int run(const char *cmd, json_t *args, json_t **ret)
{
    int rc = qmp_execute(q, cmd, args, CMD_MS, ret);
    if (rc != QMP_OK)
        fprintf(stderr, "  [%s] %s\n", step_name, qmp_error(q));
    return rc;
}

/* The query-jobs entry of a job (a new reference) or NULL. */
static json_t *query_job(const char *job)
{
    json_t *list = NULL;
    if (run("query-jobs", NULL, &list) != QMP_OK)
        return NULL;
    size_t i;
    json_t *e, *found = NULL;
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "id"));
        if (id && strcmp(id, job) == 0)
            found = json_incref(e);
    }
    json_decref(list);
    return found;
}

static json_t *query_block_job(const char *job)
{
    json_t *list = NULL;
    if (run("query-block-jobs", NULL, &list) != QMP_OK)
        return NULL;
    size_t i;
    json_t *e, *found = NULL;
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "device"));
        if (id && strcmp(id, job) == 0)
            found = json_incref(e);
    }
    json_decref(list);
    return found;
}

static const char *jstr(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }
static long long jint(json_t *o, const char *key) { return (long long)json_integer_value(json_object_get(o, key)); }

/* Progress of a job: 0 and the figures, -1 when it is not listed. */
static int progress(const char *job, long long *cur, long long *tot, char *status, size_t slen)
{
    json_t *j = query_job(job);
    if (!j)
        return -1;
    *cur = jint(j, "current-progress");
    *tot = jint(j, "total-progress");
    if (status)
        snprintf(status, slen, "%s", jstr(j, "status") ? jstr(j, "status") : "?");
    json_decref(j);
    return 0;
}

static void print_progress(const char *job)
{
    long long cur, tot;
    char st[32];
    if (progress(job, &cur, &tot, st, sizeof st) == 0)
        printf("    %-4s %-9s %6.1f / %.1f MiB\n", job, st, (double)cur / MIB, (double)tot / MIB);
}

/* Waits (bounded) until a job's current progress is above zero; drains the
 * events meanwhile. */
static int wait_progress(const char *job, long long above)
{
    int64_t deadline = qmp_now_ms() + STEP_MS;
    while (qmp_now_ms() < deadline) {
        long long cur, tot;
        if (progress(job, &cur, &tot, NULL, 0) != 0)
            return -1;
        if (cur > above)
            return 0;
        json_t *ev;
        if (qmp_wait_any_event(q, 50, &ev) == QMP_OK) {
            note_event(ev);
            json_decref(ev);
        } else if (qmp_disconnected(q)) {
            return -1;
        }
    }
    return -1;
}

/* Images ------------------------------------------------------------------ */

static int image_create(const char *path, const char *extra_io_cmds[])
{
    char err[512], size[32];
    snprintf(size, sizeof size, "%dM", IMAGE_MIB);
    char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", (char *)path, size, NULL};
    int rc = run_cmd(argv, 10000, NULL, 0, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "  qemu-img create %s: %s\n", path, rc < 0 ? err : "failed");
        return -1;
    }
    for (int i = 0; extra_io_cmds && extra_io_cmds[i]; i++) {
        char *io[] = {"qemu-io", "-f", "qcow2", "-c", (char *)extra_io_cmds[i], (char *)path, NULL};
        char out[256];
        rc = run_cmd(io, 10000, out, sizeof out, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "  qemu-io %s: %s\n", extra_io_cmds[i], rc < 0 ? err : out);
            return -1;
        }
    }
    return 0;
}

static void path_of(char *buf, size_t n, const char *node) { snprintf(buf, n, "%s/%s.qcow2", dir, node); }

/* A qcow2 node `node` over file node `node`-file, with a blkdebug node
 * `node`-dbg between them when err_no != 0 (one write error of that errno at
 * the first data write). */
static int node_add(const char *node, int err_no, bool create)
{
    char path[128], file[80], dbg[80];
    path_of(path, sizeof path, node);
    snprintf(file, sizeof file, "%s-file", node);
    snprintf(dbg, sizeof dbg, "%s-dbg", node);
    if (create && image_create(path, NULL) != 0)
        return -1;
    if (run("blockdev-add", json_pack("{s:s, s:s, s:s}", "driver", "file", "node-name", file, "filename", path), NULL))
        return -1;
    const char *below = file;
    if (err_no) {
        json_t *rule = json_pack("[{s:s, s:i, s:b}]", "event", "write_aio", "errno", err_no, "once", 1);
        if (run("blockdev-add", json_pack("{s:s, s:s, s:s, s:o}", "driver", "blkdebug", "node-name", dbg, "image",
                                          file, "inject-error", rule),
                NULL))
            return -1;
        below = dbg;
    }
    return run("blockdev-add", json_pack("{s:s, s:s, s:s}", "driver", "qcow2", "node-name", node, "file", below), NULL)
               ? -1
               : 0;
}

/* Removes the nodes of node_add (top first) and, when remove_file, the image. */
static int node_del(const char *node, bool remove_file)
{
    char path[128], name[80];
    int rc = run("blockdev-del", json_pack("{s:s}", "node-name", node), NULL) ? -1 : 0;
    snprintf(name, sizeof name, "%s-dbg", node);
    qmp_execute(q, "blockdev-del", json_pack("{s:s}", "node-name", name), CMD_MS, NULL); /* may not exist */
    snprintf(name, sizeof name, "%s-file", node);
    if (run("blockdev-del", json_pack("{s:s}", "node-name", name), NULL))
        rc = -1;
    if (remove_file) {
        path_of(path, sizeof path, node);
        if (unlink(path) != 0)
            rc = -1;
    }
    return rc;
}

/* buf-size 1 MiB: progress moves in steps of at most 1 MiB (the default
 * buffer moves it in 16 MiB jumps), so a throttled job shows live progress. */
static json_t *mirror_args(const char *job, const char *target, long long speed)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "job-id", job, "device", "src", "target", target, "sync",
                     "full", "speed", (json_int_t)speed, "buf-size", (json_int_t)MIB);
}

/* Steps -------------------------------------------------------------------- */

static int step1_mirror(void)
{
    CHECK(node_add("t1", 0, true) == 0, "target t1");
    json_t *a = mirror_args("m1", "t1", 16 * MIB);
    json_object_set_new(a, "auto-finalize", json_false());
    json_object_set_new(a, "auto-dismiss", json_false());
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    CHECK(wait_status("m1", "running") == 0, "m1 running");
    CHECK(wait_progress("m1", 0) == 0, "m1 progress");
    print_progress("m1");

    CHECK(run("job-pause", json_pack("{s:s}", "id", "m1"), NULL) == 0, "job-pause");
    CHECK(wait_status("m1", "paused") == 0, "m1 paused");
    long long c1, c2, tot;
    char st[32];
    CHECK(progress("m1", &c1, &tot, st, sizeof st) == 0, "query-jobs");
    CHECK(strcmp(st, "paused") == 0, "m1 listed %s while paused", st);
    sleep_ms(400);
    CHECK(progress("m1", &c2, &tot, st, sizeof st) == 0, "query-jobs");
    printf("    m1   paused at %.1f MiB, %.1f MiB 400 ms later\n", (double)c1 / MIB, (double)c2 / MIB);
    CHECK(c1 == c2, "progress moved while paused: %lld -> %lld", c1, c2);

    CHECK(run("job-resume", json_pack("{s:s}", "id", "m1"), NULL) == 0, "job-resume");
    CHECK(wait_status("m1", "running") == 0, "m1 running again");
    /* Live progress every 250 ms until READY; half-way, the throttle is
     * raised (bgjob's SET_SPEED). */
    bool ready = false, raised = false;
    int64_t until = qmp_now_ms() + STEP_MS;
    while (!ready) {
        CHECK(qmp_now_ms() < until, "m1 not READY within %d ms", STEP_MS);
        print_progress("m1");
        long long cur;
        CHECK(progress("m1", &cur, &tot, NULL, 0) == 0, "query-jobs");
        if (!raised && cur >= tot / 2) {
            CHECK(run("block-job-set-speed", json_pack("{s:s, s:I}", "device", "m1", "speed", (json_int_t)(64 * MIB)),
                      NULL) == 0,
                  "set-speed");
            printf("    m1   speed raised to 64 MiB/s\n");
            raised = true;
        }
        int64_t tick = qmp_now_ms() + 250;
        json_t *ev;
        while (!ready && qmp_wait_any_event(q, (int)(tick - qmp_now_ms()), &ev) == QMP_OK) {
            note_event(ev);
            const char *name = jstr(ev, "event");
            ready = name && strcmp(name, "BLOCK_JOB_READY") == 0;
            json_decref(ev);
        }
        CHECK(!qmp_disconnected(q), "%s", qmp_error(q));
    }
    print_progress("m1");
    json_t *j = query_job("m1");
    CHECK(j && strcmp(jstr(j, "status"), "ready") == 0, "m1 not listed ready");
    CHECK(jint(j, "current-progress") == jint(j, "total-progress"), "ready with %lld/%lld",
          jint(j, "current-progress"), jint(j, "total-progress"));
    json_decref(j);

    CHECK(run("job-complete", json_pack("{s:s}", "id", "m1"), NULL) == 0, "job-complete");
    CHECK(wait_status("m1", "pending") == 0, "m1 pending");
    CHECK(run("job-finalize", json_pack("{s:s}", "id", "m1"), NULL) == 0, "job-finalize");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m1", NULL, STEP_MS, &data) == 0, "m1 COMPLETED");
    CHECK(!json_object_get(data, "error"), "m1 completed with error %s", jstr(data, "error"));
    json_decref(data);
    CHECK(wait_status("m1", "concluded") == 0, "m1 concluded");
    CHECK(run("job-dismiss", json_pack("{s:s}", "id", "m1"), NULL) == 0, "job-dismiss");
    CHECK(wait_status("m1", "null") == 0, "m1 null");
    j = query_job("m1");
    CHECK(!j, "m1 still listed after dismiss");

    /* Close the copy (flushes it), then compare the files. */
    CHECK(node_del("t1", false) == 0, "close t1");
    char a_path[128], b_path[128], out[512], err[256];
    path_of(a_path, sizeof a_path, "src");
    path_of(b_path, sizeof b_path, "t1");
    char *argv[] = {"qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a_path, b_path, NULL};
    int rc = run_cmd(argv, 10000, out, sizeof out, err, sizeof err);
    printf("    qemu-img compare: %s", rc < 0 ? err : out);
    CHECK(rc == 0, "qemu-img compare: exit %d", rc);
    unlink(b_path);
    return 0;
}

/* A soft cancel (block-job-cancel, force false) of a READY mirror completes
 * it without pivoting: BLOCK_JOB_COMPLETED, not CANCELLED. */
static int step1b_soft_cancel(void)
{
    CHECK(node_add("t1b", 0, true) == 0, "target t1b");
    CHECK(run("blockdev-mirror", mirror_args("m1b", "t1b", 0), NULL) == 0, "blockdev-mirror");
    CHECK(wait_event("BLOCK_JOB_READY", "m1b", NULL, STEP_MS, NULL) == 0, "m1b READY");
    CHECK(run("block-job-cancel", json_pack("{s:s}", "device", "m1b"), NULL) == 0, "block-job-cancel");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m1b", NULL, STEP_MS, &data) == 0, "m1b COMPLETED");
    CHECK(!json_object_get(data, "error"), "m1b error %s", jstr(data, "error"));
    json_decref(data);
    CHECK(wait_status("m1b", "null") == 0, "m1b dismissed");
    CHECK(node_del("t1b", true) == 0, "remove t1b");
    return 0;
}

/* The verbs' edges the glue must know: job-complete before READY is refused;
 * a pause of a READY mirror is STANDBY; a second job-pause is refused (QEMU
 * keeps one user pause, bgjob's pauses nest); the speed set shows in
 * query-block-jobs. */
static int step1c_verb_edges(void)
{
    CHECK(node_add("t1c", 0, true) == 0, "target t1c");
    CHECK(run("blockdev-mirror", mirror_args("m1c", "t1c", 8 * MIB), NULL) == 0, "blockdev-mirror");
    CHECK(wait_status("m1c", "running") == 0, "m1c running");
    int rc = qmp_execute(q, "job-complete", json_pack("{s:s}", "id", "m1c"), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "job-complete before READY: rc %d", rc);
    printf("    before READY: %s\n", qmp_error(q));
    CHECK(run("block-job-set-speed", json_pack("{s:s, s:i}", "device", "m1c", "speed", 0), NULL) == 0, "set-speed");
    json_t *bj = query_block_job("m1c");
    CHECK(bj && jint(bj, "speed") == 0, "speed %lld after set-speed 0", bj ? jint(bj, "speed") : -1);
    json_decref(bj);
    CHECK(wait_event("BLOCK_JOB_READY", "m1c", NULL, STEP_MS, NULL) == 0, "m1c READY");
    CHECK(run("job-pause", json_pack("{s:s}", "id", "m1c"), NULL) == 0, "job-pause");
    CHECK(wait_status("m1c", "standby") == 0, "m1c standby");
    rc = qmp_execute(q, "job-pause", json_pack("{s:s}", "id", "m1c"), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "second job-pause: rc %d", rc);
    printf("    second pause: %s\n", qmp_error(q));
    CHECK(run("job-resume", json_pack("{s:s}", "id", "m1c"), NULL) == 0, "job-resume");
    CHECK(wait_status("m1c", "ready") == 0, "m1c ready again");
    rc = qmp_execute(q, "job-resume", json_pack("{s:s}", "id", "m1c"), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "resume of a running job: rc %d", rc);
    printf("    resume when not paused: %s\n", qmp_error(q));
    CHECK(run("job-cancel", json_pack("{s:s}", "id", "m1c"), NULL) == 0, "job-cancel");
    CHECK(wait_event("BLOCK_JOB_CANCELLED", "m1c", NULL, STEP_MS, NULL) == 0, "m1c CANCELLED");
    CHECK(wait_status("m1c", "null") == 0, "m1c dismissed");
    rc = qmp_execute(q, "job-cancel", json_pack("{s:s}", "id", "m1c"), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "cancel of a dismissed job: rc %d", rc);
    printf("    cancel after the end: %s\n", qmp_error(q));
    CHECK(node_del("t1c", true) == 0, "remove t1c");
    return 0;
}

static int step2_cancel(void)
{
    CHECK(node_add("t2", 0, true) == 0, "target t2");
    json_t *a = mirror_args("m2", "t2", 8 * MIB);
    json_object_set_new(a, "auto-dismiss", json_false());
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    for (long long mib = 2; mib <= 8; mib += 3) {
        CHECK(wait_progress("m2", mib * MIB) == 0, "m2 progress");
        print_progress("m2");
    }
    CHECK(run("job-cancel", json_pack("{s:s}", "id", "m2"), NULL) == 0, "job-cancel");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_CANCELLED", "m2", NULL, STEP_MS, &data) == 0, "m2 CANCELLED");
    CHECK(jint(data, "offset") < jint(data, "len"), "cancelled at %lld of %lld", jint(data, "offset"),
          jint(data, "len"));
    printf("    m2   cancelled at %.1f / %.1f MiB\n", (double)jint(data, "offset") / MIB,
           (double)jint(data, "len") / MIB);
    json_decref(data);
    CHECK(wait_status("m2", "concluded") == 0, "m2 concluded");
    CHECK(run("job-dismiss", json_pack("{s:s}", "id", "m2"), NULL) == 0, "job-dismiss");
    CHECK(wait_status("m2", "null") == 0, "m2 null");
    /* Cleaning up: the partial target goes. */
    CHECK(node_del("t2", true) == 0, "remove t2");
    char path[128];
    path_of(path, sizeof path, "t2");
    CHECK(access(path, F_OK) != 0, "partial target still there");
    return 0;
}

/* An injected write error with on-target-error=stop. */
static int error_stop(const char *job, const char *target, int err_no, const char *want_iostatus)
{
    CHECK(node_add(target, err_no, true) == 0, "target %s", target);
    json_t *a = mirror_args(job, target, 0);
    json_object_set_new(a, "on-target-error", json_string("stop"));
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_ERROR", job, NULL, STEP_MS, &data) == 0, "%s ERROR", job);
    CHECK(strcmp(jstr(data, "action"), "stop") == 0 && strcmp(jstr(data, "operation"), "write") == 0,
          "error action %s operation %s", jstr(data, "action"), jstr(data, "operation"));
    json_decref(data);
    CHECK(wait_status(job, "paused") == 0, "%s paused by the error", job);
    json_t *bj = query_block_job(job);
    CHECK(bj, "%s not in query-block-jobs", job);
    printf("    %-4s stopped: io-status %s, paused %s, busy %s\n", job, jstr(bj, "io-status"),
           json_is_true(json_object_get(bj, "paused")) ? "yes" : "no",
           json_is_true(json_object_get(bj, "busy")) ? "yes" : "no");
    CHECK(jstr(bj, "io-status") && strcmp(jstr(bj, "io-status"), want_iostatus) == 0, "io-status %s, want %s",
          jstr(bj, "io-status"), want_iostatus);
    json_decref(bj);
    json_t *j = query_job(job);
    CHECK(j && strcmp(jstr(j, "status"), "paused") == 0, "query-jobs status %s", j ? jstr(j, "status") : "-");
    json_decref(j);
    /* The error stop is a user pause in QEMU: a job-pause now is refused. */
    int rc = qmp_execute(q, "job-pause", json_pack("{s:s}", "id", job), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "job-pause of an error-stopped job: rc %d", rc);
    printf("    %-4s pause while stopped: %s\n", job, qmp_error(q));

    CHECK(run("job-resume", json_pack("{s:s}", "id", job), NULL) == 0, "job-resume");
    CHECK(wait_event("BLOCK_JOB_READY", job, NULL, STEP_MS, NULL) == 0, "%s READY after resume", job);
    bj = query_block_job(job);
    CHECK(bj && strcmp(jstr(bj, "io-status"), "ok") == 0, "io-status after resume %s", bj ? jstr(bj, "io-status") : "-");
    json_decref(bj);
    return 0;
}

static int step3_eio(void)
{
    if (error_stop("m3", "t3", 5, "failed") != 0)
        return -1;
    /* Complete it: auto-finalize and auto-dismiss are on. */
    CHECK(run("job-complete", json_pack("{s:s}", "id", "m3"), NULL) == 0, "job-complete");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m3", NULL, STEP_MS, &data) == 0, "m3 COMPLETED");
    CHECK(!json_object_get(data, "error"), "m3 error %s", jstr(data, "error"));
    json_decref(data);
    CHECK(wait_status("m3", "null") == 0, "m3 dismissed");
    CHECK(node_del("t3", true) == 0, "remove t3");
    return 0;
}

static int step3b_enospc(void)
{
    if (error_stop("m3b", "t3b", 28, "nospace") != 0)
        return -1;
    /* A force cancel of a READY mirror: CANCELLED. */
    CHECK(run("job-cancel", json_pack("{s:s}", "id", "m3b"), NULL) == 0, "job-cancel");
    CHECK(wait_event("BLOCK_JOB_CANCELLED", "m3b", NULL, STEP_MS, NULL) == 0, "m3b CANCELLED");
    CHECK(wait_status("m3b", "null") == 0, "m3b dismissed");
    CHECK(node_del("t3b", true) == 0, "remove t3b");
    return 0;
}

/* The report policy: the error ends the job (COMPLETED with an error). */
static int step3c_report(void)
{
    CHECK(node_add("t3c", 5, true) == 0, "target t3c");
    json_t *a = mirror_args("m3c", "t3c", 0);
    json_object_set_new(a, "on-target-error", json_string("report"));
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_ERROR", "m3c", NULL, STEP_MS, &data) == 0, "m3c ERROR");
    CHECK(strcmp(jstr(data, "action"), "report") == 0, "action %s", jstr(data, "action"));
    json_decref(data);
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m3c", NULL, STEP_MS, &data) == 0, "m3c COMPLETED");
    CHECK(json_object_get(data, "error"), "m3c completed without error");
    printf("    m3c  failed: %s\n", jstr(data, "error"));
    json_decref(data);
    CHECK(wait_status("m3c", "null") == 0, "m3c dismissed");
    CHECK(node_del("t3c", true) == 0, "remove t3c");
    return 0;
}

/* The two other policies: enospc reports an EIO (the job fails); ignore
 * carries on past it (the mirror retries the area) to READY, and the copy is
 * whole. */
static int step3d_other_policies(void)
{
    CHECK(node_add("t3d", 5, true) == 0, "target t3d");
    json_t *a = mirror_args("m3d", "t3d", 0);
    json_object_set_new(a, "on-target-error", json_string("enospc"));
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    json_t *data = NULL;
    CHECK(wait_event("BLOCK_JOB_ERROR", "m3d", NULL, STEP_MS, &data) == 0, "m3d ERROR");
    CHECK(strcmp(jstr(data, "action"), "report") == 0, "enospc policy, EIO: action %s", jstr(data, "action"));
    json_decref(data);
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m3d", NULL, STEP_MS, &data) == 0, "m3d COMPLETED");
    CHECK(json_object_get(data, "error"), "m3d completed without error");
    json_decref(data);
    CHECK(wait_status("m3d", "null") == 0, "m3d dismissed");
    CHECK(node_del("t3d", true) == 0, "remove t3d");

    CHECK(node_add("t3e", 5, true) == 0, "target t3e");
    a = mirror_args("m3e", "t3e", 0);
    json_object_set_new(a, "on-target-error", json_string("ignore"));
    CHECK(run("blockdev-mirror", a, NULL) == 0, "blockdev-mirror");
    CHECK(wait_event("BLOCK_JOB_ERROR", "m3e", NULL, STEP_MS, &data) == 0, "m3e ERROR");
    CHECK(strcmp(jstr(data, "action"), "ignore") == 0, "ignore policy: action %s", jstr(data, "action"));
    json_decref(data);
    CHECK(wait_event("BLOCK_JOB_READY", "m3e", NULL, STEP_MS, NULL) == 0, "m3e READY");
    CHECK(run("job-complete", json_pack("{s:s}", "id", "m3e"), NULL) == 0, "job-complete");
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "m3e", NULL, STEP_MS, &data) == 0, "m3e COMPLETED");
    CHECK(!json_object_get(data, "error"), "m3e error %s", jstr(data, "error"));
    json_decref(data);
    CHECK(wait_status("m3e", "null") == 0, "m3e dismissed");
    CHECK(node_del("t3e", false) == 0, "close t3e");
    char a_path[128], b_path[128], out[512], err[256];
    path_of(a_path, sizeof a_path, "src");
    path_of(b_path, sizeof b_path, "t3e");
    char *argv[] = {"qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a_path, b_path, NULL};
    int rc = run_cmd(argv, 10000, out, sizeof out, err, sizeof err);
    printf("    ignore policy, qemu-img compare: %s", rc < 0 ? err : out);
    CHECK(rc == 0, "qemu-img compare after an ignored error: exit %d", rc);
    unlink(b_path);
    return 0;
}

/* A transaction QEMU rejects (its second action names a node that does not
 * exist): the command fails, yet the job of the first action was created and
 * reports its status changes on the way to null. A driver must not take those
 * events for a job of its own. */
static int step4b_rejected_transaction(void)
{
    CHECK(node_add("t4c", 0, true) == 0, "target t4c");
    json_t *actions = json_pack("[{s:s, s:{s:s, s:s, s:s, s:s}}, {s:s, s:{s:s, s:s, s:s, s:s}}]", "type",
                                "blockdev-backup", "data", "job-id", "b4c", "device", "src", "target", "t4c",
                                "sync", "full", "type", "blockdev-backup", "data", "job-id", "b4d", "device",
                                "src", "target", "no-such-node", "sync", "full");
    CHECK(actions, "json_pack");
    int rc = qmp_execute(q, "transaction",
                         json_pack("{s:o, s:{s:s}}", "actions", actions, "properties", "completion-mode", "grouped"),
                         CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "transaction rc %d", rc);
    printf("    rejected: %s\n", qmp_error(q));
    CHECK(wait_status("b4c", "null") == 0, "b4c's status changes");
    CHECK(!query_job("b4c"), "b4c listed");
    CHECK(node_del("t4c", true) == 0, "remove t4c");
    return 0;
}

static int step4_transaction(void)
{
    CHECK(node_add("t4a", 0, true) == 0, "target t4a");
    CHECK(node_add("t4b", 5, true) == 0, "target t4b");
    json_t *actions = json_pack("[{s:s, s:{s:s, s:s, s:s, s:s, s:I}}, {s:s, s:{s:s, s:s, s:s, s:s}}]",
                                "type", "blockdev-backup", "data", "job-id", "b4a", "device", "src", "target", "t4a",
                                "sync", "full", "speed", (json_int_t)(4 * MIB), "type", "blockdev-backup", "data",
                                "job-id", "b4b", "device", "src", "target", "t4b", "sync", "full");
    CHECK(actions, "json_pack");
    CHECK(run("transaction",
              json_pack("{s:o, s:{s:s}}", "actions", actions, "properties", "completion-mode", "grouped"),
              NULL) == 0,
          "transaction");
    json_t *da = NULL, *db = NULL;
    CHECK(wait_event("BLOCK_JOB_COMPLETED", "b4b", NULL, STEP_MS, &db) == 0, "b4b COMPLETED");
    CHECK(json_object_get(db, "error"), "b4b completed without error");
    printf("    b4b  failed: %s\n", jstr(db, "error"));
    json_decref(db);
    CHECK(wait_event("BLOCK_JOB_CANCELLED", "b4a", NULL, STEP_MS, &da) == 0, "b4a CANCELLED");
    printf("    b4a  cancelled by QEMU at %.1f / %.1f MiB\n", (double)jint(da, "offset") / MIB,
           (double)jint(da, "len") / MIB);
    json_decref(da);
    CHECK(wait_status("b4a", "null") == 0, "b4a dismissed");
    CHECK(!query_job("b4b"), "b4b still listed");
    CHECK(node_del("t4a", true) == 0, "remove t4a");
    CHECK(node_del("t4b", true) == 0, "remove t4b");
    return 0;
}

/* A deadline, driven the way the bgjob glue will be: one poll loop on the
 * QMP socket (qmp_fd + qmp_process), commands sent without waiting
 * (qmp_send) and their replies matched by id, a progress tick, and at the
 * deadline a job-cancel; the loop ends when QEMU has dismissed the job. */
static int step5_deadline(void)
{
    CHECK(node_add("t5", 0, true) == 0, "target t5");
    int64_t start = qmp_now_ms();
    int64_t deadline = start + 1500;
    uint64_t mirror_id = 0, cancel_id = 0, query_id = 0;
    CHECK(qmp_send(q, "blockdev-mirror", mirror_args("m5", "t5", 1 * MIB), &mirror_id) == QMP_OK, "send");
    int64_t next_tick = start;
    bool cancelled = false, dismissed = false, mirror_ok = false, cancel_ok = false;
    long long at = -1, len = -1;
    while (!dismissed) {
        int64_t now = qmp_now_ms();
        CHECK(now < deadline + STEP_MS, "m5 not over %d ms after its deadline", STEP_MS);
        if (!cancel_id && now >= deadline) {
            printf("    m5   deadline reached: cancelling\n");
            CHECK(qmp_send(q, "job-cancel", json_pack("{s:s}", "id", "m5"), &cancel_id) == QMP_OK, "send");
        }
        if (now >= next_tick) {
            if (!query_id && !cancel_id)
                CHECK(qmp_send(q, "query-jobs", NULL, &query_id) == QMP_OK, "send");
            next_tick = now + 500;
        }
        int64_t wake = next_tick;
        if (!cancel_id && deadline < wake)
            wake = deadline;
        struct pollfd p = {.fd = qmp_fd(q), .events = POLLIN};
        int n = poll(&p, 1, wake > now ? (int)(wake - now) : 0);
        CHECK(n >= 0 || errno == EINTR, "poll: %s", strerror(errno));
        if (n <= 0)
            continue;
        int rc = qmp_process(q);
        CHECK(rc == QMP_OK, "%s", qmp_error(q));
        uint64_t id;
        json_t *reply, *ev;
        while (qmp_take_any_reply(q, &id, &reply)) {
            bool ok = json_object_get(reply, "return") != NULL;
            if (id == mirror_id)
                mirror_ok = ok;
            else if (id == cancel_id)
                cancel_ok = ok;
            else if (id == query_id) {
                query_id = 0;
                size_t i;
                json_t *e;
                json_array_foreach(json_object_get(reply, "return"), i, e)
                {
                    if (strcmp(jstr(e, "id"), "m5") == 0)
                        printf("    m5   %-9s %6.1f / %.1f MiB\n", jstr(e, "status"),
                               (double)jint(e, "current-progress") / MIB, (double)jint(e, "total-progress") / MIB);
                }
            }
            json_decref(reply);
        }
        while ((ev = qmp_next_event(q))) {
            note_event(ev);
            const char *name = jstr(ev, "event");
            json_t *data = json_object_get(ev, "data");
            if (strcmp(name, "BLOCK_JOB_CANCELLED") == 0 && strcmp(jstr(data, "device"), "m5") == 0) {
                cancelled = true;
                at = jint(data, "offset");
                len = jint(data, "len");
            }
            if (strcmp(name, "JOB_STATUS_CHANGE") == 0 && strcmp(jstr(data, "id"), "m5") == 0 &&
                strcmp(jstr(data, "status"), "null") == 0)
                dismissed = true;
            json_decref(ev);
        }
    }
    CHECK(mirror_ok && cancel_ok, "blockdev-mirror %s, job-cancel %s", mirror_ok ? "ok" : "failed",
          cancel_ok ? "ok" : "failed");
    CHECK(cancelled && at < len, "m5 not cancelled mid-way (%lld of %lld)", at, len);
    printf("    m5   cancelled at %.1f / %.1f MiB\n", (double)at / MIB, (double)len / MIB);
    CHECK(node_del("t5", true) == 0, "remove t5");
    return 0;
}

static int step6_daemon_killed(void)
{
    CHECK(node_add("t6", 0, true) == 0, "target t6");
    CHECK(run("blockdev-mirror", mirror_args("m6", "t6", 2 * MIB), NULL) == 0, "blockdev-mirror");
    CHECK(wait_progress("m6", MIB) == 0, "m6 progress");
    print_progress("m6");
    pid_t pid = qsd.pid;
    printf("    killing qemu-storage-daemon (pid %d) with SIGKILL\n", (int)pid);
    kill(pid, SIGKILL);
    /* Every read from now on must end with a disconnect, bounded. */
    int rc = QMP_OK;
    int64_t until = qmp_now_ms() + STEP_MS;
    while (rc == QMP_OK && qmp_now_ms() < until) {
        json_t *ev;
        rc = qmp_wait_any_event(q, 500, &ev);
        if (rc == QMP_OK) {
            note_event(ev);
            json_decref(ev);
        } else if (rc == QMP_ETIMEDOUT) {
            rc = QMP_OK;
        }
    }
    printf("    client: %s\n", qmp_error(q));
    CHECK(rc == QMP_EDISCONNECTED, "rc %d, want a disconnect", rc);
    CHECK(qmp_execute(q, "query-jobs", NULL, CMD_MS, NULL) == QMP_EDISCONNECTED, "a command after the end");
    CHECK(qsd_stop(&qsd, SIGKILL, 2000) == 0, "reap");
    CHECK(WIFSIGNALED(qsd.status) && WTERMSIG(qsd.status) == SIGKILL, "status 0x%x", qsd.status);
    CHECK(!qsd_pid_alive(pid), "daemon pid %d still alive", (int)pid);
    trail_add(seq, sizeof seq, "EOF");
    return 0;
}

/* The client's own errors: clear codes and messages, bounded waits. */
static int step0_client_errors(void)
{
    struct qmp *c = NULL;
    char err[256], path[200];
    memset(path, 'x', 150);
    path[0] = '/';
    path[150] = 0;
    int rc = qmp_connect(&c, path, 100, err, sizeof err);
    CHECK(rc == QMP_EINVAL && !c, "long path: rc %d", rc);
    printf("    %.70s...\n", err);
    snprintf(path, sizeof path, "%s/none.sock", dir);
    int64_t t = qmp_now_ms();
    rc = qmp_connect(&c, path, 200, err, sizeof err);
    CHECK(rc == QMP_EIO && !c, "missing socket: rc %d", rc);
    CHECK(qmp_now_ms() - t < 5000, "missing socket: unbounded wait");
    printf("    %s\n", err);
    rc = qmp_execute(q, "no-such-command", NULL, CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "unknown command: rc %d", rc);
    printf("    %s\n", qmp_error(q));
    rc = qmp_execute(q, "blockdev-mirror", json_pack("{s:s}", "job-id", "x"), CMD_MS, NULL);
    CHECK(rc == QMP_ECOMMAND, "missing arguments: rc %d", rc);
    printf("    %s\n", qmp_error(q));
    return 0;
}

static int setup(void)
{
    snprintf(step_name, sizeof step_name, "setup");
    const char *src_io[] = {"write -P 0x5a 0 24M", "write -P 0xa5 32M 8M", NULL};
    char path[128];
    path_of(path, sizeof path, "src");
    int64_t t0 = qmp_now_ms();
    if (image_create(path, src_io) != 0)
        return -1;
    int64_t t1 = qmp_now_ms();
    char err[512];
    if (qsd_start(&qsd, dir, 5000, err, sizeof err) != 0) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    if (qmp_connect(&q, qsd.sock, 5000, err, sizeof err) != QMP_OK) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    int64_t t2 = qmp_now_ms();
    printf("setup: source image %d MiB (32 MiB data) in %.2f s; daemon pid %d, QMP ready in %.3f s\n", IMAGE_MIB,
           (double)(t1 - t0) / 1000.0, (int)qsd.pid, (double)(t2 - t1) / 1000.0);
    return node_add("src", 0, false);
}

/* Every image the test may leave in its directory is named at start
 * (`images`), so the removal is async-signal-safe (unlink and rmdir only): it
 * runs at exit and from qsd.c's signal handlers too. */
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const char *const images[] = {"src", "t1", "t1b", "t1c", "t2", "t3", "t3b", "t3c", "t3d", "t3e", "t4a", "t4b", "t4c", "t5", "t6", NULL};
    int rc = qsd_scratch_open("qmp_selftest", dir, sizeof dir, images);
    if (rc != 0)
        return rc;
    int64_t t0 = qmp_now_ms();
    if (setup() != 0) {
        fprintf(stderr, "qmp_selftest: setup failed\n");
        qmp_close(q);
        qsd_stop(&qsd, SIGKILL, 2000);
        qsd_scratch_remove();
        return 1;
    }
    struct {
        const char *name;
        int (*fn)(void);
    } steps[] = {
        {"0 client errors", step0_client_errors},
        {"1 mirror", step1_mirror},
        {"1b soft cancel of a ready mirror", step1b_soft_cancel},
        {"1c verbs at their edges", step1c_verb_edges},
        {"2 cancel mid-way", step2_cancel},
        {"3 EIO, stop policy", step3_eio},
        {"3b ENOSPC, stop policy", step3b_enospc},
        {"3c EIO, report policy", step3c_report},
        {"3d EIO, enospc and ignore policies", step3d_other_policies},
        {"4 grouped transaction", step4_transaction},
        {"4b rejected transaction", step4b_rejected_transaction},
        {"5 deadline", step5_deadline},
        {"6 daemon killed", step6_daemon_killed},
    };
    int failed_steps = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        step_begin(steps[i].name);
        int rc = steps[i].fn();
        step_end(rc);
        if (rc != 0)
            failed_steps++;
        if (qmp_disconnected(q) && steps[i].fn != step6_daemon_killed) {
            fprintf(stderr, "qmp_selftest: the daemon went away during step %s; stopping\n", steps[i].name);
            failed_steps++;
            break;
        }
    }
    pid_t pid = qsd.pid;
    qmp_close(q);
    qsd_stop(&qsd, SIGKILL, 2000);
    bool left = pid > 0 && qsd_pid_alive(pid);
    qsd_scratch_remove();
    printf("qmp_selftest: %s (%d failed step(s), %d failed check(s)), %.2f s, no daemon left: %s\n",
           failed_steps == 0 && !left ? "ok" : "FAILED", failed_steps, failures,
           (double)(qmp_now_ms() - t0) / 1000.0, left ? "NO" : "yes");
    return failed_steps == 0 && !left ? 0 : 1;
}
