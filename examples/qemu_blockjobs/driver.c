/*
 * driver.c: QEMU block jobs as bgjob external jobs (see driver.h and
 * docs/qemu.md, "The bgjob glue").
 */

#include "driver.h"
#include "qsd.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_JOBS 16
#define MAX_SENT 64
#define MAX_CTL 64
#define CMD_MS 5000
#define POLL_PERIOD_MS 250

enum outcome { OUT_NONE, OUT_OK, OUT_ERROR, OUT_CANCELLED };

struct qjob {
    struct qdrv *d;
    char name[32];
    char kind[8];
    char target[32];
    char target_file[160];
    bgjob_job *job;
    char qstatus[16];
    bool ended;      /* bgjob_job_end called */
    bool cmd_failed; /* the start command was refused: ignore QEMU's events */
    bool start_pending; /* the start command's reply has not come yet */
    bool null_early;    /* QEMU dropped the job before that reply (a refused transaction) */
    bool reported;      /* a state was reported (waiting, pending, aborting): progress is final */
    enum outcome outcome;
    char error[256];
    uint32_t st_bytes, st_total, st_speed, st_qstatus;
    char ctl_thread[16]; /* guarded by ctl_lock */
};

enum sent_kind { SENT_START, SENT_CTL, SENT_QBJ, SENT_QJOBS, SENT_OTHER };

struct sent {
    uint64_t id;
    enum sent_kind kind;
    struct qjob *qj[2];
    char what[32];
    bgjob_control verb; /* SENT_CTL: the verb forwarded */
};

struct ctl_req {
    struct qjob *qj;
    bgjob_control what;
    int64_t arg;
};

struct qdrv {
    struct qsd daemon;
    struct qmp *qmp;
    bgjob_context *ctx;
    int ctx_fd;
    int ctl_fd;
    pthread_mutex_t ctl_lock;
    struct ctl_req ctl[MAX_CTL];
    size_t nctl;
    struct sent sent[MAX_SENT];
    struct qjob *jobs[MAX_JOBS];
    size_t njobs;
    int64_t next_poll_ms;
    bool gone;
    bool poll_in_flight;
    qdrv_progress_fn progress;
    void *progress_ud;
};

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static const char *policy_str(bgjob_error_policy p)
{
    switch (p) {
    case BGJOB_ERROR_POLICY_IGNORE: return "ignore";
    case BGJOB_ERROR_POLICY_STOP: return "stop";
    case BGJOB_ERROR_POLICY_ENOSPC: return "enospc";
    default: return "report";
    }
}

static struct qjob *find_qjob(struct qdrv *d, const char *id)
{
    for (size_t i = 0; id && i < d->njobs; i++)
        if (strcmp(d->jobs[i]->name, id) == 0)
            return d->jobs[i];
    return NULL;
}

static struct qjob *qjob_of(struct qdrv *d, bgjob_job *job)
{
    for (size_t i = 0; i < d->njobs; i++)
        if (d->jobs[i]->job == job)
            return d->jobs[i];
    return NULL;
}

static void remember(struct qdrv *d, uint64_t id, enum sent_kind kind, struct qjob *a, struct qjob *b, const char *what)
{
    for (size_t i = 0; i < MAX_SENT; i++) {
        if (d->sent[i].id == 0) {
            d->sent[i] = (struct sent){.id = id, .kind = kind, .qj = {a, b}};
            snprintf(d->sent[i].what, sizeof d->sent[i].what, "%s", what);
            return;
        }
    }
    fprintf(stderr, "    [driver] too many commands in flight; reply to %s dropped\n", what);
}

static int send_cmd(struct qdrv *d, const char *cmd, json_t *args, enum sent_kind kind, struct qjob *a,
                    struct qjob *b);

/* A verb forwarded to QEMU: its refusal goes back to bgjob. */
static void send_verb(struct qdrv *d, const char *cmd, json_t *args, struct qjob *qj, bgjob_control verb)
{
    if (send_cmd(d, cmd, args, SENT_CTL, qj, NULL) != 0)
        return;
    for (size_t i = 0; i < MAX_SENT; i++)
        if (d->sent[i].kind == SENT_CTL && d->sent[i].qj[0] == qj && !strcmp(d->sent[i].what, cmd))
            d->sent[i].verb = verb;
}

static int send_cmd(struct qdrv *d, const char *cmd, json_t *args, enum sent_kind kind, struct qjob *a,
                    struct qjob *b)
{
    uint64_t id;
    if (d->gone) {
        json_decref(args);
        return -1;
    }
    if (qmp_send(d->qmp, cmd, args, &id) != QMP_OK) {
        fprintf(stderr, "    [driver] %s: %s\n", cmd, qmp_error(d->qmp));
        return -1;
    }
    remember(d, id, kind, a, b, cmd);
    if (kind == SENT_START) {
        a->start_pending = true;
        if (b)
            b->start_pending = true;
    }
    return 0;
}

int qdrv_cmd(struct qdrv *d, const char *cmd, json_t *args, json_t **ret)
{
    if (d->gone) {
        json_decref(args);
        return -1;
    }
    int rc = qmp_execute(d->qmp, cmd, args, CMD_MS, ret);
    if (rc != QMP_OK) {
        fprintf(stderr, "    [driver] %s\n", qmp_error(d->qmp));
        return -1;
    }
    return 0;
}

int qdrv_cmd_quiet(struct qdrv *d, const char *cmd, json_t *args)
{
    if (d->gone) {
        json_decref(args);
        return -1;
    }
    return qmp_execute(d->qmp, cmd, args, CMD_MS, NULL) == QMP_OK ? 0 : -1;
}

/* The end of a job: bgjob_job_end once, whatever called it. */
static void end_job(struct qjob *qj, int32_t code, const char *msg)
{
    if (qj->ended)
        return;
    qj->ended = true;
    bgjob_result r = bgjob_job_end(qj->job, code, msg);
    if (r != BGJOB_RESULT_OK)
        fprintf(stderr, "    [driver] bgjob_job_end(%s): %s\n", qj->name, bgjob_result_str(r));
}

/* --- the control callback: any thread, queue and wake only ---------------- */

static void on_control(void *userdata, bgjob_job *job, bgjob_control what, int64_t arg)
{
    (void)job;
    struct qjob *qj = userdata;
    struct qdrv *d = qj->d;
    pthread_mutex_lock(&d->ctl_lock);
    pthread_getname_np(pthread_self(), qj->ctl_thread, sizeof qj->ctl_thread);
    bool queued = d->nctl < MAX_CTL;
    if (queued)
        d->ctl[d->nctl++] = (struct ctl_req){qj, what, arg};
    pthread_mutex_unlock(&d->ctl_lock);
    if (!queued)
        fprintf(stderr, "    [driver] %s: control queue full, verb %d dropped\n", qj->name, (int)what);
    uint64_t one = 1;
    if (write(d->ctl_fd, &one, sizeof one) < 0) {
        /* the counter cannot overflow here; nothing else to do */
    }
}

static void drain_controls(struct qdrv *d)
{
    uint64_t n;
    if (read(d->ctl_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        return;
    struct ctl_req reqs[MAX_CTL];
    pthread_mutex_lock(&d->ctl_lock);
    size_t count = d->nctl;
    memcpy(reqs, d->ctl, count * sizeof reqs[0]);
    d->nctl = 0;
    pthread_mutex_unlock(&d->ctl_lock);
    for (size_t i = 0; i < count; i++) {
        struct qjob *qj = reqs[i].qj;
        const char *qs = qj->qstatus;
        if (qj->ended || d->gone)
            continue;
        json_t *id = json_pack("{s:s}", "id", qj->name);
        switch (reqs[i].what) {
        case BGJOB_CONTROL_PAUSE:
            send_verb(d, "job-pause", id, qj, BGJOB_CONTROL_PAUSE);
            break;
        case BGJOB_CONTROL_RESUME:
            send_verb(d, "job-resume", id, qj, BGJOB_CONTROL_RESUME);
            break;
        case BGJOB_CONTROL_COMPLETE:
            send_verb(d, "job-complete", id, qj, BGJOB_CONTROL_COMPLETE);
            break;
        case BGJOB_CONTROL_FINALIZE:
            /* One member of a transaction is told: QEMU finalizes the group. */
            printf("    [driver] %s: FINALIZE -> job-finalize\n", qj->name);
            send_verb(d, "job-finalize", id, qj, BGJOB_CONTROL_FINALIZE);
            break;
        case BGJOB_CONTROL_CANCEL:
            json_decref(id);
            /* QEMU already winding it down (a grouped transaction's sibling). */
            if (!strcmp(qs, "aborting") || !strcmp(qs, "concluded") || !strcmp(qs, "null")) {
                printf("    [driver] %s: cancel not forwarded, QEMU has it %s\n", qj->name, qs);
                break;
            }
            send_verb(d, "block-job-cancel", json_pack("{s:s, s:b}", "device", qj->name, "force", reqs[i].arg != 0),
                      qj, BGJOB_CONTROL_CANCEL);
            break;
        case BGJOB_CONTROL_SET_SPEED:
            json_decref(id);
            bgjob_job_set_stat_u64(qj->job, qj->st_speed, (uint64_t)reqs[i].arg);
            send_verb(d, "block-job-set-speed",
                      json_pack("{s:s, s:I}", "device", qj->name, "speed", (json_int_t)reqs[i].arg), qj,
                      BGJOB_CONTROL_SET_SPEED);
            break;
        default:
            json_decref(id);
        }
    }
}

/* --- QEMU's events --------------------------------------------------------- */

static void cleanup_target(struct qdrv *d, struct qjob *qj)
{
    char node[48];
    qdrv_cmd(d, "blockdev-del", json_pack("{s:s}", "node-name", qj->target), NULL);
    snprintf(node, sizeof node, "%s-dbg", qj->target);
    qdrv_cmd_quiet(d, "blockdev-del", json_pack("{s:s}", "node-name", node)); /* may not exist */
    snprintf(node, sizeof node, "%s-file", qj->target);
    qdrv_cmd(d, "blockdev-del", json_pack("{s:s}", "node-name", node), NULL);
    if (unlink(qj->target_file) != 0)
        fprintf(stderr, "    [driver] unlink %s: %s\n", qj->target_file, strerror(errno));
    else
        printf("    [driver] %s: cleaning up: partial target %s removed\n", qj->name, qj->target);
}

/* QEMU dismissed the job: its outcome is final. */
static void finish(struct qdrv *d, struct qjob *qj)
{
    switch (qj->outcome) {
    case OUT_OK:
        end_job(qj, 0, NULL);
        break;
    case OUT_ERROR:
        end_job(qj, strstr(qj->error, "No space") ? ENOSPC : EIO, qj->error);
        break;
    case OUT_CANCELLED:
        if (qj->target_file[0])
            cleanup_target(d, qj);
        end_job(qj, ECANCELED, "cancelled by QEMU (BLOCK_JOB_CANCELLED)");
        break;
    default:
        /* A refused transaction still shows its first job created and torn
         * down, before the error reply: let the reply give the reason. */
        if (qj->start_pending) {
            qj->null_early = true;
            return;
        }
        end_job(qj, EIO, "the QEMU job went away without an outcome");
    }
}

static void on_progress(struct qdrv *d, json_t *list);

/* QEMU's waiting, pending and aborting: reported to bgjob, which cannot infer
 * them. Progress is final from the first of them on (bgjob refuses updates
 * then), so it is read once, synchronously, before. */
static void report_state(struct qdrv *d, struct qjob *qj, bgjob_state st)
{
    if (!qj->reported) {
        json_t *ret = NULL;
        if (qdrv_cmd(d, "query-jobs", NULL, &ret) == 0)
            on_progress(d, ret);
        json_decref(ret);
        qj->reported = true;
    }
    /* The last update too: a cancelled job's partial target goes at the end. */
    if (st == BGJOB_STATE_ABORTING && qj->target_file[0])
        bgjob_job_set_phase(qj->job, "cleaning up");
    bgjob_result r = bgjob_job_report_state(qj->job, st);
    if (r != BGJOB_RESULT_OK)
        fprintf(stderr, "    [driver] %s: bgjob_job_report_state(%s): %s\n", qj->name, bgjob_state_str(st),
                bgjob_result_str(r));
}

static void on_status(struct qdrv *d, struct qjob *qj, const char *st)
{
    snprintf(qj->qstatus, sizeof qj->qstatus, "%s", st);
    if (qj->ended)
        return;
    bgjob_job_set_stat_string(qj->job, qj->st_qstatus, st);
    if (!strcmp(st, "ready")) {
        bgjob_job_set_ready(qj->job);
    } else if (!strcmp(st, "concluded") && !qj->start_pending) {
        /* (a job of a refused command is dismissed by QEMU itself) */
        send_cmd(d, "job-dismiss", json_pack("{s:s}", "id", qj->name), SENT_OTHER, qj, NULL);
    } else if (!strcmp(st, "null")) {
        finish(d, qj);
        return;
    }
    /* running, paused, standby: bgjob's own state already says it */
    if (!strcmp(st, "waiting"))
        report_state(d, qj, BGJOB_STATE_WAITING);
    else if (!strcmp(st, "pending"))
        report_state(d, qj, BGJOB_STATE_PENDING);
    else if (!strcmp(st, "aborting"))
        report_state(d, qj, BGJOB_STATE_ABORTING);
}

static void on_event(struct qdrv *d, json_t *ev)
{
    const char *name = jstr(ev, "event");
    json_t *data = json_object_get(ev, "data");
    const char *id = jstr(data, "id") ? jstr(data, "id") : jstr(data, "device");
    struct qjob *qj = find_qjob(d, id);
    if (!name || !qj || qj->cmd_failed)
        return;
    if (!strcmp(name, "JOB_STATUS_CHANGE")) {
        on_status(d, qj, jstr(data, "status") ? jstr(data, "status") : "?");
        return;
    }
    if (qj->ended)
        return;
    if (!strcmp(name, "BLOCK_JOB_READY")) {
        bgjob_job_set_ready(qj->job);
    } else if (!strcmp(name, "BLOCK_JOB_ERROR")) {
        const char *action = jstr(data, "action");
        if (action && !strcmp(action, "stop")) {
            /* No errno in the event: io-status says which. */
            send_cmd(d, "query-block-jobs", NULL, SENT_QBJ, qj, NULL);
        } else if (action && !strcmp(action, "ignore")) {
            bgjob_error_action a;
            bgjob_job_report_io_error(qj->job, EIO, "write error (ignored)", &a);
        }
    } else if (!strcmp(name, "BLOCK_JOB_COMPLETED") || !strcmp(name, "BLOCK_JOB_CANCELLED")) {
        /* (progress was read when QEMU said waiting or aborting) */
        if (name[10] == 'C' && name[11] == 'A') {
            qj->outcome = OUT_CANCELLED;
        } else if (jstr(data, "error")) {
            qj->outcome = OUT_ERROR;
            snprintf(qj->error, sizeof qj->error, "%s: %s", qj->kind, jstr(data, "error"));
        } else {
            qj->outcome = OUT_OK;
        }
    }
}

/* --- replies ---------------------------------------------------------------- */

static void on_io_status(struct qjob *qj, json_t *list)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (!jstr(e, "device") || strcmp(jstr(e, "device"), qj->name))
            continue;
        const char *ios = jstr(e, "io-status") ? jstr(e, "io-status") : "ok";
        int code = !strcmp(ios, "nospace") ? ENOSPC : EIO;
        bgjob_error_action action;
        bgjob_result r = bgjob_job_report_io_error(qj->job, code, code == ENOSPC ? "No space left on device"
                                                                                  : "Input/output error",
                                                   &action);
        printf("    [driver] %s: QEMU stopped on a write error, io-status %s -> bgjob_job_report_io_error(%s): %s, "
               "action %s\n",
               qj->name, ios, code == ENOSPC ? "ENOSPC" : "EIO", bgjob_result_str(r),
               action == BGJOB_ERROR_ACTION_STOP ? "STOP" : action == BGJOB_ERROR_ACTION_IGNORE ? "IGNORE" : "REPORT");
        if (r == BGJOB_RESULT_OK && action == BGJOB_ERROR_ACTION_REPORT)
            send_cmd(qj->d, "job-cancel", json_pack("{s:s}", "id", qj->name), SENT_OTHER, qj, NULL);
        return;
    }
}

static void on_progress(struct qdrv *d, json_t *list)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        struct qjob *qj = find_qjob(d, jstr(e, "id"));
        if (!qj || qj->ended || qj->cmd_failed || qj->reported)
            continue;
        uint64_t cur = (uint64_t)json_integer_value(json_object_get(e, "current-progress"));
        uint64_t tot = (uint64_t)json_integer_value(json_object_get(e, "total-progress"));
        bgjob_job_set_total(qj->job, tot);
        bgjob_job_set_current(qj->job, cur);
        bgjob_job_set_stat_u64(qj->job, qj->st_bytes, cur);
        bgjob_job_set_stat_u64(qj->job, qj->st_total, tot);
        if (d->progress)
            d->progress(d->progress_ud, qj->job, jstr(e, "status") ? jstr(e, "status") : "?");
    }
}

static void on_reply(struct qdrv *d, uint64_t id, json_t *reply)
{
    struct sent s = {0};
    for (size_t i = 0; i < MAX_SENT; i++) {
        if (d->sent[i].id == id) {
            s = d->sent[i];
            d->sent[i].id = 0;
            break;
        }
    }
    json_t *err = json_object_get(reply, "error");
    json_t *ret = json_object_get(reply, "return");
    switch (s.kind) {
    case SENT_START:
        for (int k = 0; k < 2; k++)
            if (s.qj[k])
                s.qj[k]->start_pending = false;
        if (err) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s refused: %s", s.what, jstr(err, "desc") ? jstr(err, "desc") : "?");
            for (int k = 0; k < 2; k++) {
                if (s.qj[k] && !s.qj[k]->ended) {
                    s.qj[k]->cmd_failed = true;
                    end_job(s.qj[k], EINVAL, msg);
                }
            }
        } else {
            for (int k = 0; k < 2; k++)
                if (s.qj[k] && s.qj[k]->null_early)
                    finish(d, s.qj[k]);
        }
        break;
    case SENT_CTL:
        if (err && s.qj[0] && !s.qj[0]->ended) {
            /* QEMU refused a forwarded verb: bgjob undoes what it set and
             * tells the user (an event, bgjob_job_get_control_error). */
            const char *desc = jstr(err, "desc") ? jstr(err, "desc") : "?";
            bgjob_result r = bgjob_job_control_failed(s.qj[0]->job, s.verb, EINVAL, desc);
            printf("    [driver] %s %s refused by QEMU: %s -> bgjob_job_control_failed: %s\n", s.what,
                   s.qj[0]->name, desc, bgjob_result_str(r));
        }
        break;
    case SENT_OTHER:
        if (err)
            printf("    [driver] %s %s refused by QEMU: %s\n", s.what, s.qj[0] ? s.qj[0]->name : "",
                   jstr(err, "desc") ? jstr(err, "desc") : "?");
        break;
    case SENT_QBJ:
        if (ret && s.qj[0] && !s.qj[0]->ended)
            on_io_status(s.qj[0], ret);
        break;
    case SENT_QJOBS:
        d->poll_in_flight = false;
        if (ret)
            on_progress(d, ret);
        break;
    }
}

/* --- the daemon's end --------------------------------------------------------- */

static void daemon_gone(struct qdrv *d)
{
    if (d->gone)
        return;
    d->gone = true;
    qsd_stop(&d->daemon, SIGKILL, 2000);
    char msg[160];
    int st = d->daemon.status;
    if (WIFSIGNALED(st))
        snprintf(msg, sizeof msg, "qemu-storage-daemon exited (killed by signal %d): the QEMU job is lost",
                 WTERMSIG(st));
    else
        snprintf(msg, sizeof msg, "qemu-storage-daemon exited (status %d): the QEMU job is lost",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    printf("    [driver] %s\n", msg);
    for (size_t i = 0; i < d->njobs; i++)
        end_job(d->jobs[i], EPIPE, msg);
}

static void process_qmp(struct qdrv *d)
{
    if (!d->gone && qmp_process(d->qmp) == QMP_EDISCONNECTED) {
        /* what was read before the end is handled first */
    }
    uint64_t id;
    json_t *reply, *ev;
    while (qmp_take_any_reply(d->qmp, &id, &reply) == 1) {
        on_reply(d, id, reply);
        json_decref(reply);
    }
    while ((ev = qmp_next_event(d->qmp))) {
        on_event(d, ev);
        json_decref(ev);
    }
    if (!d->gone && qmp_disconnected(d->qmp))
        daemon_gone(d);
}

static bool any_live(struct qdrv *d)
{
    for (size_t i = 0; i < d->njobs; i++)
        if (!d->jobs[i]->ended)
            return true;
    return false;
}

void qdrv_run(struct qdrv *d, int ms)
{
    int64_t now = qmp_now_ms();
    int wait = ms;
    if (any_live(d) && !d->gone) {
        int64_t to_poll = d->next_poll_ms - now;
        if (to_poll < wait)
            wait = to_poll < 0 ? 0 : (int)to_poll;
    }
    struct pollfd fds[3] = {
        {.fd = d->gone ? -1 : qmp_fd(d->qmp), .events = POLLIN},
        {.fd = d->ctl_fd, .events = POLLIN},
        {.fd = d->ctx_fd, .events = POLLIN},
    };
    if (qmp_pending_events(d->qmp) > 0)
        wait = 0;
    if (poll(fds, 3, wait) < 0 && errno != EINTR)
        return;
    process_qmp(d);
    drain_controls(d);
    process_qmp(d);
    now = qmp_now_ms();
    if (!d->gone && any_live(d) && now >= d->next_poll_ms && !d->poll_in_flight) {
        d->next_poll_ms = now + POLL_PERIOD_MS;
        if (send_cmd(d, "query-jobs", NULL, SENT_QJOBS, NULL, NULL) == 0)
            d->poll_in_flight = true;
    }
    size_t ran;
    bgjob_context_dispatch(d->ctx, 0, &ran);
}

static bool in_mask(bgjob_job *job, unsigned mask)
{
    bgjob_state st;
    return bgjob_job_get_state(job, &st) == BGJOB_RESULT_OK && (mask & (1u << st));
}

int qdrv_run_until_state(struct qdrv *d, bgjob_job *job, unsigned mask, int timeout_ms)
{
    int64_t end = qmp_now_ms() + timeout_ms;
    while (!in_mask(job, mask)) {
        int64_t left = end - qmp_now_ms();
        if (left <= 0)
            return -1;
        qdrv_run(d, left > 50 ? 50 : (int)left);
    }
    qdrv_run(d, 0); /* deliver the events of the change */
    return 0;
}

int qdrv_run_until_ended(struct qdrv *d, bgjob_job *job, int timeout_ms)
{
    unsigned term = 1u << BGJOB_STATE_COMPLETED | 1u << BGJOB_STATE_FAILED | 1u << BGJOB_STATE_CANCELLED;
    return qdrv_run_until_state(d, job, term, timeout_ms);
}

int qdrv_run_until_qstatus(struct qdrv *d, bgjob_job *job, const char *status, int timeout_ms)
{
    struct qjob *qj = qjob_of(d, job);
    int64_t end = qmp_now_ms() + timeout_ms;
    while (qj && strcmp(qj->qstatus, status)) {
        int64_t left = end - qmp_now_ms();
        if (left <= 0 || d->gone)
            return -1;
        qdrv_run(d, left > 50 ? 50 : (int)left);
    }
    return qj ? 0 : -1;
}

/* --- jobs ------------------------------------------------------------------------ */

static struct qjob *job_create(struct qdrv *d, const struct qdrv_spec *s)
{
    if (d->njobs >= MAX_JOBS || d->gone)
        return NULL;
    struct qjob *qj = calloc(1, sizeof *qj);
    if (!qj)
        return NULL;
    qj->d = d;
    snprintf(qj->name, sizeof qj->name, "%s", s->name);
    snprintf(qj->kind, sizeof qj->kind, "%s", s->kind);
    snprintf(qj->target, sizeof qj->target, "%s", s->target);
    snprintf(qj->target_file, sizeof qj->target_file, "%s", s->target_file ? s->target_file : "");
    char owner[48];
    snprintf(owner, sizeof owner, "qemu-storage-daemon pid %d", (int)d->daemon.pid);
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    /* QEMU runs with auto-finalize off: bgjob's finalize is forwarded. */
    o.flags = BGJOB_CREATE_EXTERNAL | BGJOB_CREATE_DEFER_START | BGJOB_CREATE_MANUAL_FINALIZE;
    o.name = s->name;
    o.operation = s->kind;
    o.owner = owner;
    o.context = d->ctx;
    o.error_policy = s->policy;
    o.deadline_ms = s->deadline_ms;
    o.control = on_control;
    o.control_userdata = qj;
    o.event = s->event;
    o.event_userdata = s->event_userdata;
    bgjob_result r = bgjob_job_create(&o, NULL, NULL, NULL, &qj->job);
    if (r != BGJOB_RESULT_OK) {
        fprintf(stderr, "    [driver] bgjob_job_create(%s): %s\n", s->name, bgjob_result_str(r));
        free(qj);
        return NULL;
    }
    bgjob_job_add_stat(qj->job, "bytes", BGJOB_STAT_TYPE_U64, "bytes", &qj->st_bytes);
    bgjob_job_add_stat(qj->job, "total_bytes", BGJOB_STAT_TYPE_U64, "bytes", &qj->st_total);
    bgjob_job_add_stat(qj->job, "speed", BGJOB_STAT_TYPE_U64, "bytes/s", &qj->st_speed);
    bgjob_job_add_stat(qj->job, "qemu_status", BGJOB_STAT_TYPE_STRING, NULL, &qj->st_qstatus);
    bgjob_job_set_stat_u64(qj->job, qj->st_speed, s->speed);
    d->jobs[d->njobs++] = qj;
    return qj;
}

static json_t *job_args(const struct qdrv_spec *s)
{
    json_t *a = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:b, s:b}", "job-id", s->name, "device", s->device,
                          "target", s->target, "sync", "full", "speed", (json_int_t)s->speed, "on-target-error",
                          policy_str(s->policy), "auto-finalize", 0, "auto-dismiss", 0);
    if (!strcmp(s->kind, "mirror"))
        json_object_set_new(a, "buf-size", json_integer(1024 * 1024));
    return a;
}

bgjob_job *qdrv_job_start(struct qdrv *d, const struct qdrv_spec *s)
{
    struct qjob *qj = job_create(d, s);
    if (!qj)
        return NULL;
    const char *cmd = !strcmp(s->kind, "mirror") ? "blockdev-mirror" : "blockdev-backup";
    /* Start bgjob's side first: QEMU's created/running come before its reply. */
    bgjob_job_start(qj->job);
    if (send_cmd(d, cmd, job_args(s), SENT_START, qj, NULL) != 0)
        end_job(qj, EPIPE, "could not send the command");
    return qj->job;
}

int qdrv_group_start(struct qdrv *d, const struct qdrv_spec *specs, size_t n, bgjob_job **jobs_out)
{
    if (n != 2)
        return -1;
    bgjob_txn *txn;
    if (bgjob_txn_create(BGJOB_TXN_MANUAL_FINALIZE, &txn) != BGJOB_RESULT_OK)
        return -1;
    struct qjob *qj[2] = {0};
    json_t *actions = json_array();
    for (size_t i = 0; i < n; i++) {
        qj[i] = job_create(d, &specs[i]);
        if (!qj[i] || bgjob_txn_add(txn, qj[i]->job) != BGJOB_RESULT_OK) {
            json_decref(actions);
            bgjob_txn_destroy(txn);
            return -1;
        }
        jobs_out[i] = qj[i]->job;
        json_array_append_new(actions, json_pack("{s:s, s:o}", "type", "blockdev-backup", "data", job_args(&specs[i])));
    }
    bgjob_txn_start(txn);
    bgjob_txn_destroy(txn);
    json_t *args = json_pack("{s:o, s:{s:s}}", "actions", actions, "properties", "completion-mode", "grouped");
    if (send_cmd(d, "transaction", args, SENT_START, qj[0], qj[1]) != 0) {
        end_job(qj[0], EPIPE, "could not send the transaction");
        end_job(qj[1], EPIPE, "could not send the transaction");
    }
    return 0;
}

/* --- lifecycle --------------------------------------------------------------------- */

int qdrv_start(struct qdrv **out, const char *dir, char *err, size_t errlen)
{
    struct qdrv *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&d->ctl_lock, NULL);
    d->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->ctl_fd < 0 || bgjob_context_create(&d->ctx) != BGJOB_RESULT_OK ||
        bgjob_context_get_fd(d->ctx, &d->ctx_fd) != BGJOB_RESULT_OK) {
        snprintf(err, errlen, "eventfd or bgjob context: %s", strerror(errno));
        return -1;
    }
    if (qsd_start(&d->daemon, dir, 5000, err, errlen) != 0)
        return -1;
    if (qmp_connect(&d->qmp, d->daemon.sock, 5000, err, errlen) != QMP_OK) {
        qsd_stop(&d->daemon, SIGKILL, 2000);
        return -1;
    }
    *out = d;
    return 0;
}

void qdrv_set_progress(struct qdrv *d, qdrv_progress_fn fn, void *ud)
{
    d->progress = fn;
    d->progress_ud = ud;
}

pid_t qdrv_daemon_pid(const struct qdrv *d) { return d->daemon.pid; }
bool qdrv_daemon_gone(const struct qdrv *d) { return d->gone; }

const char *qdrv_qstatus(struct qdrv *d, bgjob_job *job)
{
    struct qjob *qj = qjob_of(d, job);
    return qj ? qj->qstatus : "";
}

const char *qdrv_last_control_thread(struct qdrv *d, bgjob_job *job)
{
    static char buf[16];
    struct qjob *qj = qjob_of(d, job);
    pthread_mutex_lock(&d->ctl_lock);
    snprintf(buf, sizeof buf, "%s", qj ? qj->ctl_thread : "");
    pthread_mutex_unlock(&d->ctl_lock);
    return buf;
}

void qdrv_stop(struct qdrv *d)
{
    if (!d)
        return;
    if (!d->gone) {
        qmp_execute(d->qmp, "quit", NULL, 1000, NULL);
        d->gone = true;
    }
    if (d->daemon.pid > 0)
        qsd_stop(&d->daemon, SIGTERM, 2000);
    for (size_t i = 0; i < d->njobs; i++)
        end_job(d->jobs[i], ECANCELED, "the driver stopped");
    size_t ran;
    bgjob_context_dispatch(d->ctx, 0, &ran);
    for (size_t i = 0; i < d->njobs; i++) {
        bgjob_job_destroy(d->jobs[i]->job);
        free(d->jobs[i]);
    }
    bgjob_context_destroy(d->ctx);
    qmp_close(d->qmp);
    close(d->ctl_fd);
    pthread_mutex_destroy(&d->ctl_lock);
    free(d);
}
