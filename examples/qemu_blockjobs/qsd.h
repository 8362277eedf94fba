/*
 * qsd: qemu-storage-daemon's lifecycle and the qemu-img / qemu-io helpers of
 * the qemu_blockjobs example.
 *
 * The daemon runs in a process group of its own with PR_SET_PDEATHSIG
 * (SIGKILL), so it dies with us even when we are killed. Every daemon started
 * is also recorded in a table that an atexit handler and the SIGINT / SIGTERM /
 * SIGHUP handlers (async-signal-safe: kill() only) use to kill its group, so no
 * daemon outlives the program on any path. qsd_stop() kills and reaps it
 * within a bounded time.
 */
#ifndef QSD_H
#define QSD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct qsd {
    pid_t pid;         /* 0 once reaped */
    int status;        /* its wait status, once reaped */
    char sock[108];    /* the QMP socket path */
    char log[256];     /* its stdout+stderr */
};

/* Installs the atexit and signal handlers (once; later calls do nothing). */
void qsd_install_cleanup(void);

/* A function the exit and signal handlers call after killing the daemons
 * (e.g. removing scratch files); it must be async-signal-safe. */
void qsd_set_exit_hook(void (*hook)(void));

/* Starts qemu-storage-daemon with a QMP monitor on dir/qmp.sock (dir must be
 * short: the socket path is at most 107 bytes) and waits up to timeout_ms for
 * the socket to accept connections. On failure err says why (with the tail of
 * the daemon's output when it exited) and no daemon is left. */
int qsd_start(struct qsd *d, const char *dir, int timeout_ms, char *err, size_t errlen);

/* Sends sig to the daemon's process group (when it is still ours) and reaps it,
 * waiting at most timeout_ms, then SIGKILL. Returns 0 when reaped. */
int qsd_stop(struct qsd *d, int sig, int timeout_ms);

/* Reaps the daemon if it has exited (no wait). True when it is gone. */
bool qsd_reap(struct qsd *d);

/* True if a process with this pid exists and is not a zombie of ours. */
bool qsd_pid_alive(pid_t pid);

/* Runs argv (a NULL-terminated list), waiting at most timeout_ms; its output
 * goes to out (NUL-terminated, truncated) when out is not NULL, otherwise to
 * /dev/null. Returns its exit status, or -1 (err says why: not found, killed,
 * timed out). */
int run_cmd(char *const argv[], int timeout_ms, char *out, size_t outlen, char *err, size_t errlen);

/* True when an executable of this name is in PATH. */
bool have_program(const char *name);

/* What both QEMU programs do first: 77 (after printing "prog: SKIPPED: why")
 * when qemu-storage-daemon, qemu-img or qemu-io is missing; else installs the
 * exit handlers, makes a short scratch directory /tmp/qbj.XXXXXX into dir
 * (dirlen >= 16) and registers the removal of dir/<image>.qcow2 for each of
 * the NULL-terminated images, dir/qmp.sock, dir/qsd.log and dir itself with
 * the exit hook. Returns 0, 77, or 1 (mkdtemp failed, perror said why). */
int qsd_scratch_open(const char *prog, char *dir, size_t dirlen, const char *const *images);

/* Removes what qsd_scratch_open registered (also run by the exit hook). */
void qsd_scratch_remove(void);

/* Appends one space-separated item (printf-style) to the trail in `buf`
 * (`size` bytes, NUL-terminated); a full trail stays as it is. The
 * programs record each step's event sequence with it. */
void trail_add(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
