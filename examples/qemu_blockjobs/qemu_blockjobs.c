/*
 * qemu_blockjobs.c: six block-job scenarios, real QEMU block jobs run through
 * bgjob by driver.c (each QEMU job a bgjob external job), self-checking.
 * Exit 0 when every step behaved, 1 otherwise, 77 (SKIPPED) when
 * qemu-storage-daemon, qemu-img or qemu-io is missing.
 */
#include "driver.h"
#include "qsd.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1024ULL * 1024ULL)
#define S(st) (1u << (st))
#define TERMINAL (S(BGJOB_STATE_COMPLETED) | S(BGJOB_STATE_FAILED) | S(BGJOB_STATE_CANCELLED))

static struct qdrv *drv;
static char dir[64];
static int failures;
static char step_name[64];
static char seq[2048]; /* the bgjob events of the step, short form */

#define CHECK(cond, ...)                                                                                    \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            fprintf(stderr, "  FAIL [%s] line %d: ", step_name, __LINE__);                                 \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fprintf(stderr, "\n");                                                                         \
            failures++;                                                                                    \
            return -1;                                                                                     \
        }                                                                                                  \
    } while (0)

static const char *lc_state(bgjob_state st)
{
    static const char *n[] = {"created", "running", "paused", "waiting", "completed", "failed",
                              "cancelled", "ready", "standby", "pending", "aborting"};
    return st >= 0 && st < 11 ? n[st] : "?";
}

/* bgjob's events for the job, on the loop's thread (through the context). */
static void on_event(void *ud, bgjob_job *job, const bgjob_event *ev)
{
    (void)job;
    const char *name = ud;
    switch (ev->kind) {
    case BGJOB_EVENT_KIND_STATE_CHANGED:
        trail_add(seq, sizeof seq, "%s:%s", name, lc_state(ev->new_state));
        break;
    case BGJOB_EVENT_KIND_IO_ERROR:
        trail_add(seq, sizeof seq, "%s:IO_ERROR(%s,%s)", name, ev->error_code == ENOSPC ? "ENOSPC" : "EIO",
                ev->action == BGJOB_ERROR_ACTION_STOP ? "stop" : ev->action == BGJOB_ERROR_ACTION_IGNORE ? "ignore"
                                                                                                     : "report");
        break;
    case BGJOB_EVENT_KIND_READY:
        trail_add(seq, sizeof seq, "%s:READY", name);
        break;
    case BGJOB_EVENT_KIND_END:
        trail_add(seq, sizeof seq, "%s:END", name);
        break;
    case BGJOB_EVENT_KIND_CONTROL_FAILED:
        trail_add(seq, sizeof seq, "%s:CONTROL_FAILED(%d)", name, ev->error_code);
        break;
    }
}

/* Live progress, read back from bgjob (units and the "bytes" statistic). */
static void on_progress(void *ud, bgjob_job *job, const char *qstatus)
{
    (void)ud;
    bgjob_info info = {.struct_size = sizeof info};
    bgjob_stat st[4];
    size_t n = 0;
    char name[32] = "";
    size_t len;
    if (bgjob_job_get_stats(job, &info, st, 4, &n) != BGJOB_RESULT_OK || n < 1)
        return;
    bgjob_job_get_name(job, name, sizeof name, &len);
    /* One line per change: skip a reading equal to the job's last one. */
    static struct {
        char name[32];
        uint64_t cur;
        char qs[16];
    } last[16];
    int k = 0;
    while (k < 15 && last[k].name[0] && strcmp(last[k].name, name))
        k++;
    if (!strcmp(last[k].name, name) && last[k].cur == info.current && !strcmp(last[k].qs, qstatus))
        return;
    snprintf(last[k].name, sizeof last[k].name, "%s", name);
    snprintf(last[k].qs, sizeof last[k].qs, "%s", qstatus);
    last[k].cur = info.current;
    printf("    %-4s %-9s bgjob %-8s %5.1f / %.1f MiB %3d%%  bytes=%llu\n", name, qstatus,
           bgjob_state_str(info.state), (double)info.current / MIB, (double)info.total / MIB, info.percent,
           (unsigned long long)st[0].value.u64);
}

static bgjob_info info_of(bgjob_job *job)
{
    bgjob_info info = {.struct_size = sizeof info};
    bgjob_job_get_info(job, &info);
    return info;
}

/* Images and nodes ------------------------------------------------------- */

static void path_of(char *buf, size_t n, const char *node) { snprintf(buf, n, "%s/%s.qcow2", dir, node); }

static int image_create(const char *path, const char *io_cmds[])
{
    char err[512], out[256];
    char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", (char *)path, "64M", NULL};
    int rc = run_cmd(argv, 10000, NULL, 0, err, sizeof err);
    for (int i = 0; rc == 0 && io_cmds && io_cmds[i]; i++) {
        char *io[] = {"qemu-io", "-f", "qcow2", "-c", (char *)io_cmds[i], (char *)path, NULL};
        rc = run_cmd(io, 10000, out, sizeof out, err, sizeof err);
    }
    if (rc != 0)
        fprintf(stderr, "  image %s: %s\n", path, rc < 0 ? err : "command failed");
    return rc == 0 ? 0 : -1;
}

/* qcow2 `node` over file `node`-file, a blkdebug `node`-dbg between them
 * failing the first data write once with err_no when it is not 0. */
static int node_add(const char *node, int err_no, bool create)
{
    char path[128], file[48], dbg[48];
    path_of(path, sizeof path, node);
    snprintf(file, sizeof file, "%s-file", node);
    snprintf(dbg, sizeof dbg, "%s-dbg", node);
    if (create && image_create(path, NULL) != 0)
        return -1;
    if (qdrv_cmd(drv, "blockdev-add", json_pack("{s:s, s:s, s:s}", "driver", "file", "node-name", file, "filename", path),
                 NULL))
        return -1;
    const char *below = file;
    if (err_no) {
        json_t *rule = json_pack("[{s:s, s:i, s:b}]", "event", "write_aio", "errno", err_no, "once", 1);
        if (qdrv_cmd(drv, "blockdev-add",
                     json_pack("{s:s, s:s, s:s, s:o}", "driver", "blkdebug", "node-name", dbg, "image", file,
                               "inject-error", rule),
                     NULL))
            return -1;
        below = dbg;
    }
    return qdrv_cmd(drv, "blockdev-add", json_pack("{s:s, s:s, s:s}", "driver", "qcow2", "node-name", node, "file", below),
                    NULL);
}

static void node_del(const char *node, bool remove_file)
{
    char name[48], path[128];
    qdrv_cmd(drv, "blockdev-del", json_pack("{s:s}", "node-name", node), NULL);
    snprintf(name, sizeof name, "%s-dbg", node);
    qdrv_cmd_quiet(drv, "blockdev-del", json_pack("{s:s}", "node-name", name)); /* may not exist */
    snprintf(name, sizeof name, "%s-file", node);
    qdrv_cmd(drv, "blockdev-del", json_pack("{s:s}", "node-name", name), NULL);
    if (remove_file) {
        path_of(path, sizeof path, node);
        unlink(path);
    }
}

static bool file_exists(const char *node)
{
    char path[128];
    struct stat st;
    path_of(path, sizeof path, node);
    return stat(path, &st) == 0;
}

static struct qdrv_spec spec(const char *kind, const char *name, const char *target, uint64_t speed,
                             bgjob_error_policy policy, char *file, size_t flen)
{
    path_of(file, flen, target);
    return (struct qdrv_spec){.kind = kind, .name = name, .device = "src", .target = target, .target_file = file,
                              .speed = speed, .policy = policy, .event = on_event, .event_userdata = (void *)name};
}

/* Runs the loop until the job's bgjob progress is above `above` bytes. */
static int wait_current(bgjob_job *job, uint64_t above, int timeout_ms)
{
    int64_t end = qmp_now_ms() + timeout_ms;
    while (info_of(job).current <= above) {
        if (qmp_now_ms() >= end || qdrv_daemon_gone(drv))
            return -1;
        qdrv_run(drv, 50);
    }
    return 0;
}

static void run_for(int ms)
{
    int64_t end = qmp_now_ms() + ms;
    while (qmp_now_ms() < end)
        qdrv_run(drv, (int)(end - qmp_now_ms()));
}

/* No thread of this process is named after a job: no bgjob thread per QEMU job. */
static char thread_names[256];

static int threads_named(const char *const names[], int *nthreads)
{
    thread_names[0] = 0;
    int found = 0;
    *nthreads = 0;
    DIR *dp = opendir("/proc/self/task");
    struct dirent *e;
    while (dp && (e = readdir(dp))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = 0;
        fclose(f);
        (*nthreads)++;
        size_t used = strlen(thread_names);
        snprintf(thread_names + used, sizeof thread_names - used, "%s%s", used ? ", " : "", comm);
        for (int i = 0; names[i]; i++)
            if (!strcmp(comm, names[i]) || !strncmp(comm, "job-", 4))
                found++;
    }
    if (dp)
        closedir(dp);
    return found;
}

/* QEMU runs the jobs with auto-finalize off: once the driver reports
 * PENDING, the user's bgjob_job_finalize is forwarded (job-finalize). */
static int finalize_when_pending(bgjob_job *job)
{
    if (qdrv_run_until_state(drv, job, S(BGJOB_STATE_PENDING) | TERMINAL, 8000) != 0)
        return -1;
    if (info_of(job).state != BGJOB_STATE_PENDING)
        return -1;
    bgjob_result r = bgjob_job_finalize(job);
    char name[32] = "";
    size_t len;
    bgjob_job_get_name(job, name, sizeof name, &len);
    printf("    %-4s PENDING -> bgjob_job_finalize: %s\n", name, bgjob_result_str(r));
    return r == BGJOB_RESULT_OK ? 0 : -1;
}

/* Steps -------------------------------------------------------------------- */

static int step1_mirror(void)
{
    char f[128];
    struct qdrv_spec s = spec("mirror", "m1", "t1", 16 * MIB, BGJOB_ERROR_POLICY_REPORT, f, sizeof f);
    s.target_file = NULL; /* a completed mirror keeps its copy */
    CHECK(node_add("t1", 0, true) == 0, "target t1");
    bgjob_job *j = qdrv_job_start(drv, &s);
    CHECK(j, "start m1");
    CHECK(wait_current(j, 2 * MIB, 8000) == 0, "m1 progress");
    const char *names[] = {"m1", NULL};
    int nthreads;
    int named = threads_named(names, &nthreads);
    printf("    threads while m1 runs: %d (%s), named after a job: %d\n", nthreads, thread_names, named);
    CHECK(named == 0, "a thread is named after the job");

    CHECK(bgjob_job_pause(j) == BGJOB_RESULT_OK, "bgjob_job_pause");
    CHECK(qdrv_run_until_qstatus(drv, j, "paused", 5000) == 0, "QEMU paused m1");
    run_for(300);
    uint64_t c1 = info_of(j).current;
    run_for(400);
    uint64_t c2 = info_of(j).current;
    printf("    m1   paused (bgjob %s) at %.1f MiB, %.1f MiB 400 ms later\n", bgjob_state_str(info_of(j).state),
           (double)c1 / MIB, (double)c2 / MIB);
    CHECK(info_of(j).state == BGJOB_STATE_PAUSED && c1 == c2, "m1 moved while paused");
    CHECK(bgjob_job_resume(j) == BGJOB_RESULT_OK, "bgjob_job_resume");
    CHECK(wait_current(j, 32 * MIB, 8000) == 0, "m1 half-way");
    CHECK(bgjob_job_set_speed(j, 64 * MIB) == BGJOB_RESULT_OK, "bgjob_job_set_speed");
    printf("    m1   bgjob_job_set_speed 64 MiB/s\n");
    CHECK(qdrv_run_until_state(drv, j, S(BGJOB_STATE_READY), 10000) == 0, "m1 READY");
    CHECK(bgjob_job_complete(j) == BGJOB_RESULT_OK, "bgjob_job_complete");
    CHECK(finalize_when_pending(j) == 0, "m1 finalize");
    CHECK(qdrv_run_until_ended(drv, j, 8000) == 0, "m1 end");
    bgjob_info i = info_of(j);
    CHECK(i.state == BGJOB_STATE_COMPLETED, "m1 ended %s", bgjob_state_str(i.state));
    CHECK(i.current == 64 * MIB && i.total == 64 * MIB, "m1 progress %llu/%llu", (unsigned long long)i.current,
          (unsigned long long)i.total);
    printf("    m1   COMPLETED, QEMU job %s (pivot, finalize, dismiss)\n", qdrv_qstatus(drv, j));
    node_del("t1", false); /* closes (flushes) the copy */
    char a[128], b[128], out[512], err[256];
    path_of(a, sizeof a, "src");
    path_of(b, sizeof b, "t1");
    char *argv[] = {"qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b, NULL};
    int rc = run_cmd(argv, 10000, out, sizeof out, err, sizeof err);
    printf("    qemu-img compare: %s", rc < 0 ? err : out);
    unlink(b);
    CHECK(rc == 0, "qemu-img compare: exit %d", rc);
    return 0;
}

static int step2_cancel(void)
{
    char f[128];
    struct qdrv_spec s = spec("mirror", "m2", "t2", 8 * MIB, BGJOB_ERROR_POLICY_REPORT, f, sizeof f);
    CHECK(node_add("t2", 0, true) == 0, "target t2");
    bgjob_job *j = qdrv_job_start(drv, &s);
    CHECK(j, "start m2");
    CHECK(wait_current(j, 8 * MIB, 8000) == 0, "m2 progress");
    bgjob_cancel_status cs;
    CHECK(bgjob_job_cancel(j, &cs) == BGJOB_RESULT_OK, "bgjob_job_cancel");
    CHECK(qdrv_run_until_ended(drv, j, 8000) == 0, "m2 end");
    bgjob_info i = info_of(j);
    char phase[64] = "";
    size_t len;
    bgjob_job_get_phase(j, phase, sizeof phase, &len);
    printf("    m2   %s at %.1f / %.1f MiB, last phase \"%s\", target file %s\n", bgjob_state_str(i.state),
           (double)i.current / MIB, (double)i.total / MIB, phase, file_exists("t2") ? "left" : "removed");
    CHECK(i.state == BGJOB_STATE_CANCELLED && i.cancel_cause == BGJOB_CANCEL_CAUSE_CALLER, "m2 not CANCELLED");
    CHECK(!strcmp(phase, "cleaning up") && !file_exists("t2"), "m2 partial target not removed");
    return 0;
}

/* A one-shot write error errno with the stop policy: PAUSED with iostatus,
 * resumed to READY; then ended by a force cancel (EIO) or soft cancel (ENOSPC). */
static int error_stop(const char *name, const char *target, int err_no, bgjob_iostatus want)
{
    char f[128];
    struct qdrv_spec s = spec("mirror", name, target, 0, BGJOB_ERROR_POLICY_STOP, f, sizeof f);
    CHECK(node_add(target, err_no, true) == 0, "target %s", target);
    bgjob_job *j = qdrv_job_start(drv, &s);
    CHECK(j, "start %s", name);
    CHECK(qdrv_run_until_state(drv, j, S(BGJOB_STATE_PAUSED), 8000) == 0, "%s not stopped", name);
    CHECK(qdrv_run_until_qstatus(drv, j, "paused", 5000) == 0, "QEMU did not pause %s", name);
    bgjob_info i = info_of(j);
    printf("    %-4s stopped: bgjob %s, iostatus %s, pause_requested %d, QEMU %s\n", name, bgjob_state_str(i.state),
           i.iostatus == BGJOB_IOSTATUS_NOSPACE  ? "NOSPACE"
           : i.iostatus == BGJOB_IOSTATUS_FAILED ? "FAILED"
                                                 : "OK",
           i.pause_requested, qdrv_qstatus(drv, j));
    CHECK(i.iostatus == want && i.pause_requested, "%s iostatus %d", name, i.iostatus);
    /* The stop is the job's one user pause, in bgjob as in QEMU. */
    bgjob_result pr = bgjob_job_pause(j);
    printf("    %-4s bgjob_job_pause while stopped: %s\n", name, bgjob_result_str(pr));
    CHECK(pr == BGJOB_RESULT_NOT_ALLOWED, "%s second pause accepted", name);
    CHECK(bgjob_job_resume(j) == BGJOB_RESULT_OK, "resume %s", name);
    CHECK(info_of(j).iostatus == BGJOB_IOSTATUS_OK, "%s iostatus not reset by resume", name);
    CHECK(qdrv_run_until_state(drv, j, S(BGJOB_STATE_READY), 8000) == 0, "%s READY", name);
    printf("    %-4s resumed -> READY\n", name);
    if (err_no == ENOSPC) {
        CHECK(bgjob_job_cancel_soft(j, NULL) == BGJOB_RESULT_OK, "cancel_soft");
        CHECK(finalize_when_pending(j) == 0, "%s finalize", name);
        CHECK(qdrv_run_until_ended(drv, j, 8000) == 0, "%s end", name);
        printf("    %-4s soft cancel at READY -> %s (no pivot)\n", name, bgjob_state_str(info_of(j).state));
        CHECK(info_of(j).state == BGJOB_STATE_COMPLETED, "%s soft cancel", name);
        node_del(target, true);
    } else {
        CHECK(bgjob_job_cancel(j, NULL) == BGJOB_RESULT_OK, "cancel");
        CHECK(qdrv_run_until_ended(drv, j, 8000) == 0, "%s end", name);
        printf("    %-4s cancel at READY -> %s\n", name, bgjob_state_str(info_of(j).state));
        CHECK(info_of(j).state == BGJOB_STATE_CANCELLED, "%s cancel", name);
    }
    return 0;
}

static int step3_eio(void) { return error_stop("m3", "t3", EIO, BGJOB_IOSTATUS_FAILED); }
static int step3b_enospc(void) { return error_stop("m3b", "t3b", ENOSPC, BGJOB_IOSTATUS_NOSPACE); }

static int step4_transaction(void)
{
    char fa[128], fb[128];
    struct qdrv_spec s[2] = {spec("backup", "b4a", "t4a", 4 * MIB, BGJOB_ERROR_POLICY_REPORT, fa, sizeof fa),
                             spec("backup", "b4b", "t4b", 0, BGJOB_ERROR_POLICY_REPORT, fb, sizeof fb)};
    s[1].target_file = NULL;
    CHECK(node_add("t4a", 0, true) == 0 && node_add("t4b", EIO, true) == 0, "targets");
    bgjob_job *j[2];
    CHECK(qdrv_group_start(drv, s, 2, j) == 0, "group start");
    CHECK(qdrv_run_until_ended(drv, j[0], 8000) == 0 && qdrv_run_until_ended(drv, j[1], 8000) == 0, "b4 end");
    bgjob_info a = info_of(j[0]), b = info_of(j[1]);
    char msg[256] = "";
    int32_t code = 0;
    size_t len;
    bgjob_job_get_error(j[1], &code, msg, sizeof msg, &len);
    printf("    b4b  %s: error %d \"%s\"\n", bgjob_state_str(b.state), code, msg);
    printf("    b4a  %s, cause %s, at %.1f MiB; target file %s\n", bgjob_state_str(a.state),
           a.cancel_cause == BGJOB_CANCEL_CAUSE_TRANSACTION ? "TRANSACTION" : "other", (double)a.current / MIB,
           file_exists("t4a") ? "left" : "removed");
    CHECK(b.state == BGJOB_STATE_FAILED && code == EIO, "b4b not FAILED with EIO");
    CHECK(a.state == BGJOB_STATE_CANCELLED && a.cancel_cause == BGJOB_CANCEL_CAUSE_TRANSACTION,
          "b4a not CANCELLED by the transaction");
    node_del("t4b", true);
    return 0;
}

/* QEMU refuses the transaction (a target that does not exist): both bgjob jobs
 * end at once, the events QEMU still sends for the first job are ignored. */
static int step4b_rejected(void)
{
    char fa[128], fb[128];
    struct qdrv_spec s[2] = {spec("backup", "b4c", "t4c", 0, BGJOB_ERROR_POLICY_REPORT, fa, sizeof fa),
                             spec("backup", "b4d", "nonexistent", 0, BGJOB_ERROR_POLICY_REPORT, fb, sizeof fb)};
    s[0].target_file = s[1].target_file = NULL;
    CHECK(node_add("t4c", 0, true) == 0, "target t4c");
    bgjob_job *j[2];
    CHECK(qdrv_group_start(drv, s, 2, j) == 0, "group start");
    for (int k = 0; k < 2; k++) {
        CHECK(qdrv_run_until_ended(drv, j[k], 5000) == 0, "%s end", s[k].name);
        char msg[256] = "";
        int32_t code = 0;
        size_t len;
        bgjob_job_get_error(j[k], &code, msg, sizeof msg, &len);
        bgjob_info i = info_of(j[k]);
        printf("    %-4s %s%s: error %d \"%.70s\"\n", s[k].name, bgjob_state_str(i.state),
               i.cancel_cause == BGJOB_CANCEL_CAUSE_TRANSACTION ? " (cause TRANSACTION)" : "", code, msg);
        CHECK(k == 0 ? i.state == BGJOB_STATE_FAILED
                     : i.state == BGJOB_STATE_CANCELLED && i.cancel_cause == BGJOB_CANCEL_CAUSE_TRANSACTION,
              "%s ended %s", s[k].name, bgjob_state_str(i.state));
        CHECK(code == EINVAL && strstr(msg, "transaction refused"), "%s error", s[k].name);
    }
    run_for(200); /* QEMU's created/aborting/concluded/null for b4c: ignored */
    node_del("t4c", true);
    return 0;
}

static int step5_deadline(void)
{
    char f[128];
    struct qdrv_spec s = spec("mirror", "m5", "t5", 1 * MIB, BGJOB_ERROR_POLICY_REPORT, f, sizeof f);
    s.deadline_ms = 1500;
    CHECK(node_add("t5", 0, true) == 0, "target t5");
    bgjob_job *j = qdrv_job_start(drv, &s);
    CHECK(j, "start m5");
    CHECK(qdrv_run_until_ended(drv, j, 10000) == 0, "m5 end");
    bgjob_info i = info_of(j);
    printf("    m5   %s, cause %s, at %.1f / %.1f MiB after %.2f s active; CANCEL came on thread \"%s\"; QEMU job %s\n",
           bgjob_state_str(i.state), i.cancel_cause == BGJOB_CANCEL_CAUSE_TIMEOUT ? "TIMEOUT" : "other",
           (double)i.current / MIB, (double)i.total / MIB, (double)i.elapsed_ms / 1000.0,
           qdrv_last_control_thread(drv, j), qdrv_qstatus(drv, j));
    CHECK(i.state == BGJOB_STATE_CANCELLED && i.cancel_cause == BGJOB_CANCEL_CAUSE_TIMEOUT, "m5 not TIMEOUT");
    CHECK(!strcmp(qdrv_qstatus(drv, j), "null") && !file_exists("t5"), "m5 not cancelled in QEMU");
    return 0;
}

static int step6_daemon_killed(void)
{
    char fa[128], fb[128];
    struct qdrv_spec s[2] = {spec("mirror", "m6a", "t6a", 2 * MIB, BGJOB_ERROR_POLICY_REPORT, fa, sizeof fa),
                             spec("backup", "b6b", "t6b", 2 * MIB, BGJOB_ERROR_POLICY_REPORT, fb, sizeof fb)};
    /* A second source: the first is busy with m6a's mirror. */
    char s6[128];
    path_of(s6, sizeof s6, "s6");
    const char *s6_io[] = {"write -P 0x11 0 16M", NULL};
    s[1].device = "s6";
    CHECK(image_create(s6, s6_io) == 0 && node_add("s6", 0, false) == 0, "source s6");
    CHECK(node_add("t6a", 0, true) == 0 && node_add("t6b", 0, true) == 0, "targets");
    bgjob_job *j[2] = {qdrv_job_start(drv, &s[0]), qdrv_job_start(drv, &s[1])};
    CHECK(j[0] && j[1], "start");
    for (int k = 0; k < 2; k++) {
        if (wait_current(j[k], 0, 8000) != 0) {
            char msg[256] = "";
            int32_t code = 0;
            size_t len;
            bgjob_job_get_error(j[k], &code, msg, sizeof msg, &len);
            CHECK(0, "%s made no progress (%s, error %d \"%s\")", s[k].name, bgjob_state_str(info_of(j[k]).state),
                  code, msg);
        }
    }
    const char *names[] = {"m6a", "b6b", NULL};
    int nthreads;
    int named = threads_named(names, &nthreads);
    printf("    threads while m6a and b6b run: %d (%s), named after a job: %d\n", nthreads, thread_names, named);
    CHECK(named == 0, "a thread is named after a job");
    pid_t pid = qdrv_daemon_pid(drv);
    printf("    killing qemu-storage-daemon (pid %d) with SIGKILL\n", (int)pid);
    kill(pid, SIGKILL);
    for (int k = 0; k < 2; k++) {
        CHECK(qdrv_run_until_ended(drv, j[k], 5000) == 0, "job %d did not end", k);
        bgjob_info i = info_of(j[k]);
        char msg[256] = "";
        int32_t code = 0;
        size_t len;
        bgjob_job_get_error(j[k], &code, msg, sizeof msg, &len);
        printf("    %-4s %s: error %d \"%s\"\n", s[k].name, bgjob_state_str(i.state), code, msg);
        CHECK(i.state == BGJOB_STATE_FAILED && code == EPIPE && strstr(msg, "qemu-storage-daemon exited"),
              "%s not FAILED", s[k].name);
    }
    CHECK(!qsd_pid_alive(pid), "the daemon is still alive");
    return 0;
}

/* A verb QEMU refuses: another QMP client (an operator's qmp-shell, played
 * here by a direct job-pause) paused the READY mirror behind the driver's
 * back, so QEMU has it in standby while bgjob still says READY. The user's
 * pause is forwarded, QEMU answers with an error (the job is paused already),
 * the driver reports it with bgjob_job_control_failed: bgjob undoes the pause
 * (STANDBY back to READY) and the user sees the CONTROL_FAILED event and
 * QEMU's message. Once QEMU is resumed, complete goes through to the end. */
static int step5b_refused_verb(void)
{
    char f[128];
    struct qdrv_spec s = spec("mirror", "m7", "t7", 0, BGJOB_ERROR_POLICY_REPORT, f, sizeof f);
    CHECK(node_add("t7", 0, true) == 0, "target t7");
    bgjob_job *j = qdrv_job_start(drv, &s);
    CHECK(j, "start m7");
    CHECK(qdrv_run_until_state(drv, j, S(BGJOB_STATE_READY), 8000) == 0, "m7 READY");
    CHECK(qdrv_cmd(drv, "job-pause", json_pack("{s:s}", "id", "m7"), NULL) == 0, "direct job-pause");
    CHECK(qdrv_run_until_qstatus(drv, j, "standby", 5000) == 0, "QEMU standby");
    printf("    m7   paused behind the driver's back: QEMU %s, bgjob %s\n", qdrv_qstatus(drv, j),
           bgjob_state_str(info_of(j).state));
    CHECK(bgjob_job_pause(j) == BGJOB_RESULT_OK, "bgjob_job_pause");
    int64_t end = qmp_now_ms() + 5000;
    bool found = false;
    bgjob_control what = BGJOB_CONTROL_CANCEL;
    int32_t code = 0;
    char msg[256] = "";
    size_t len;
    while (!found && qmp_now_ms() < end) {
        qdrv_run(drv, 50);
        bgjob_job_get_control_error(j, &found, &what, &code, msg, sizeof msg, &len);
    }
    CHECK(found, "the refusal never reached bgjob");
    qdrv_run(drv, 0); /* deliver the events */
    printf("    m7   bgjob_job_get_control_error: %s, code %d, \"%s\"; bgjob %s\n",
           what == BGJOB_CONTROL_PAUSE ? "PAUSE" : "other", code, msg, bgjob_state_str(info_of(j).state));
    CHECK(what == BGJOB_CONTROL_PAUSE && code == EINVAL && info_of(j).state == BGJOB_STATE_READY,
          "m7 refusal not visible or the pause not undone");
    CHECK(strstr(seq, "m7:CONTROL_FAILED") != NULL, "no CONTROL_FAILED event");
    CHECK(qdrv_cmd(drv, "job-resume", json_pack("{s:s}", "id", "m7"), NULL) == 0, "direct job-resume");
    CHECK(qdrv_run_until_qstatus(drv, j, "ready", 5000) == 0, "QEMU ready again");
    CHECK(bgjob_job_complete(j) == BGJOB_RESULT_OK, "bgjob_job_complete");
    CHECK(finalize_when_pending(j) == 0, "m7 finalize");
    CHECK(qdrv_run_until_ended(drv, j, 8000) == 0, "m7 end");
    printf("    m7   resumed by QMP, complete -> %s\n", bgjob_state_str(info_of(j).state));
    CHECK(info_of(j).state == BGJOB_STATE_COMPLETED, "m7 not COMPLETED");
    node_del("t7", true);
    return 0;
}

/* Files the run may leave, named up front so the exit hook is async-signal-safe. */
int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const char *const images[] = {"src", "s6",  "t1", "t2", "t3",  "t3b", "t4a",
                                         "t4b", "t4c", "t5", "t7", "t6a", "t6b", NULL};
    int rc = qsd_scratch_open("qemu_blockjobs", dir, sizeof dir, images);
    if (rc != 0)
        return rc;
    int64_t t0 = qmp_now_ms();
    char src[128], err[512];
    path_of(src, sizeof src, "src");
    const char *src_io[] = {"write -P 0x5a 0 24M", "write -P 0xa5 32M 8M", NULL};
    if (image_create(src, src_io) != 0 || qdrv_start(&drv, dir, err, sizeof err) != 0 ||
        node_add("src", 0, false) != 0) {
        fprintf(stderr, "qemu_blockjobs: setup failed: %s\n", err);
        qdrv_stop(drv);
        qsd_scratch_remove();
        return 1;
    }
    pid_t pid = qdrv_daemon_pid(drv);
    qdrv_set_progress(drv, on_progress, NULL);
    printf("setup: source image 64 MiB (32 MiB data), daemon pid %d, %.2f s\n", (int)pid,
           (double)(qmp_now_ms() - t0) / 1000.0);
    struct {
        const char *name;
        int (*fn)(void);
    } steps[] = {
        {"1 mirror: pause/resume, READY, complete, compare", step1_mirror},
        {"2 mirror cancelled mid-way", step2_cancel},
        {"3 EIO with the stop policy", step3_eio},
        {"3b ENOSPC with the stop policy", step3b_enospc},
        {"4 grouped transaction, one backup fails", step4_transaction},
        {"4b transaction refused by QEMU", step4b_rejected},
        {"5 deadline on a throttled mirror", step5_deadline},
        {"5b a verb QEMU refuses reaches the bgjob user", step5b_refused_verb},
        {"6 daemon killed mid-job", step6_daemon_killed},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        snprintf(step_name, sizeof step_name, "%s", steps[i].name);
        seq[0] = 0;
        printf("step %s\n", steps[i].name);
        int64_t ts = qmp_now_ms();
        int rc = steps[i].fn();
        qdrv_run(drv, 0);
        printf("  bgjob events: %s\n", seq);
        printf("  %s: %s in %.2f s\n", steps[i].name, rc == 0 ? "ok" : "FAILED", (double)(qmp_now_ms() - ts) / 1000.0);
        if (rc != 0)
            failed++;
        if (qdrv_daemon_gone(drv) && steps[i].fn != step6_daemon_killed) {
            fprintf(stderr, "qemu_blockjobs: the daemon went away during step %s; stopping\n", steps[i].name);
            failed++;
            break;
        }
    }
    qdrv_stop(drv);
    bool left = pid > 0 && qsd_pid_alive(pid);
    qsd_scratch_remove();
    bool ok = failed == 0 && !left;
    printf("qemu_blockjobs: %s (%d failed step(s), %d failed check(s)), %.2f s, no daemon left: %s\n",
           ok ? "ok" : "FAILED", failed, failures, (double)(qmp_now_ms() - t0) / 1000.0, left ? "NO" : "yes");
    return ok ? 0 : 1;
}
