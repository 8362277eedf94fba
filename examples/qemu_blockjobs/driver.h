/*
 * driver.h: a miniature block-job driver that exposes each QEMU block job of a
 * qemu-storage-daemon as a bgjob EXTERNAL job (no bgjob thread per job).
 *
 * One thread (the caller's) runs the loop, qdrv_run(): it polls the QMP
 * socket, an eventfd the control callback writes, the bgjob context's fd and a
 * progress timer. bgjob verbs (pause, resume, complete, cancel, set_speed, a
 * deadline, a transaction's abort) reach the driver through the control
 * callback, on whatever thread made them; the callback only queues the verb
 * and wakes the loop, which sends the QMP command. QEMU's events drive the
 * bgjob job: running -> start, ready -> bgjob_job_set_ready, an error stop ->
 * bgjob_job_report_io_error, the end (after job-dismiss) -> bgjob_job_end.
 */
#ifndef QDRV_H
#define QDRV_H

#include <bgjob.h>
#include "qmp.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct qdrv;

/* What to start: a mirror ("blockdev-mirror", sync full, buf-size 1 MiB) or a
 * backup ("blockdev-backup", sync full) of node `device` to node `target`. */
struct qdrv_spec {
    const char *kind;           /* "mirror" or "backup" */
    const char *name;           /* bgjob name and QEMU job-id */
    const char *device;         /* source node */
    const char *target;         /* target node (qcow2 over "<target>-file", maybe "<target>-dbg") */
    const char *target_file;    /* removed in the cleaning-up phase of a cancelled job; may be NULL */
    uint64_t speed;             /* bytes/s, 0 = unlimited */
    bgjob_error_policy policy;  /* on-target-error, the same table in QEMU and bgjob */
    int64_t deadline_ms;        /* bgjob deadline, 0 = none */
    bgjob_event_callback event; /* optional: the bgjob events, on the loop's thread */
    void *event_userdata;
};

/* Progress hook: called by the loop after each query-jobs poll, per live job. */
typedef void (*qdrv_progress_fn)(void *userdata, bgjob_job *job, const char *qemu_status);

/* Starts the daemon in dir (short path: the socket is dir/qmp.sock), connects,
 * makes the context and the eventfd. 0, or -1 with a message in err. */
int qdrv_start(struct qdrv **out, const char *dir, char *err, size_t errlen);

/* Creates the bgjob job (EXTERNAL | DEFER_START, statistics declared), sends the
 * QMP command and starts the job. The handle is the driver's, valid until
 * qdrv_stop. NULL on failure (message on stderr). */
bgjob_job *qdrv_job_start(struct qdrv *d, const struct qdrv_spec *spec);

/* A grouped transaction: n backup jobs in one bgjob transaction and one QMP
 * `transaction` with completion-mode grouped. jobs_out gets the n handles.
 * 0 or -1. */
int qdrv_group_start(struct qdrv *d, const struct qdrv_spec *specs, size_t n, bgjob_job **jobs_out);

/* Runs the loop for up to ms milliseconds (returns earlier when something was
 * handled; callers loop on their own condition). */
void qdrv_run(struct qdrv *d, int ms);

/* Runs the loop until the job has ended (terminal bgjob state) or timeout_ms
 * passed. 0 when it ended. */
int qdrv_run_until_ended(struct qdrv *d, bgjob_job *job, int timeout_ms);

/* Runs the loop until the job is in one of the states of mask (1 << state).
 * 0 when it got there. */
int qdrv_run_until_state(struct qdrv *d, bgjob_job *job, unsigned mask, int timeout_ms);

/* Runs the loop until QEMU reported this status for the job's QEMU job. */
int qdrv_run_until_qstatus(struct qdrv *d, bgjob_job *job, const char *status, int timeout_ms);

/* A synchronous QMP command from the loop's thread (node set-up), bounded.
 * args is consumed. 0 or -1 (message on stderr). */
int qdrv_cmd(struct qdrv *d, const char *cmd, json_t *args, json_t **ret);

/* The same, failure not reported (a node that may not exist). */
int qdrv_cmd_quiet(struct qdrv *d, const char *cmd, json_t *args);

void qdrv_set_progress(struct qdrv *d, qdrv_progress_fn fn, void *userdata);
pid_t qdrv_daemon_pid(const struct qdrv *d);
/* True once the daemon has gone (end of file on QMP). */
bool qdrv_daemon_gone(const struct qdrv *d);
/* The last QEMU status of the job ("" if none). */
const char *qdrv_qstatus(struct qdrv *d, bgjob_job *job);
/* The thread name the last control call for this job ran on. */
const char *qdrv_last_control_thread(struct qdrv *d, bgjob_job *job);

/* quit, stop the daemon (bounded), destroy every job handle and the context. */
void qdrv_stop(struct qdrv *d);

#endif
