/*
 * demo.c: a small "driver" built on bgjob, meant to be copied from.
 *
 *     demo DIR
 *
 * Starts four background jobs in DIR. Each one does what a disk-image job of a
 * hypervisor driver does, at a smaller scale:
 *
 *   1. writing  - generates a file of FILE_MIB MiB in 1 MiB blocks (fdatasync
 *                 every 64 MiB, so dirty pages never pile up and the progress
 *                 follows the disk, not the page cache), checksumming the data;
 *   2. syncing  - fsyncs it;
 *   3. copying  - copies it block by block to a second file, checking that what
 *                 it reads back matches what it wrote;
 *   4. syncing  - fsyncs the copy and the directory;
 *   5. done.
 *
 * Progress is counted in bytes: the total is 2 * FILE_MIB MiB (written once,
 * copied once), and every block adds its bytes. After every block the worker
 * stops at a pause point: it parks there while the job is paused and learns
 * there that the job was cancelled.
 *
 * Meanwhile the main thread shows live progress of every job a few times a
 * second (redrawn in place on a terminal; a plain line per job each second
 * otherwise, so captured logs stay readable), and plays a scenario:
 *
 *   - vm-bravo is paused for two seconds once it is a quarter done, then
 *     resumed (the live lines show it PAUSED, its rate and ETA standing still);
 *   - vm-charlie is cancelled in the middle of its copy: its worker removes its
 *     partial files (phase "cleaning up", then "cleaned up"), records why it
 *     stopped, and returns non-zero, so the job ends CANCELLED;
 *   - vm-alpha and vm-delta run to completion.
 *
 * At the end it waits for every job, prints each job's outcome, verifies every
 * surviving copy against the checksum taken while the data was generated,
 * checks that the cancelled job left no file behind, destroys every handle and
 * exits 0 only if all of that went as expected.
 *
 * Ctrl-C (SIGINT) or SIGTERM cancels every job; the workers clean up after
 * themselves and the demo exits 1.
 *
 * Each job keeps to a speed limit (96 MiB/s of progress by default), as a
 * driver's block jobs do, so the demo takes about 10 s on any disk that keeps
 * up with four such jobs, and its ETAs hold (on the VM this was written on,
 * four parallel writers got anywhere from 250 MB/s to 2 GB/s in all, depending
 * on what else was running; a slower disk just makes the run longer).
 *
 * Environment (optional): BGJOB_DEMO_MIB sets FILE_MIB (default 384: each job
 * writes 2 * FILE_MIB and reads FILE_MIB); BGJOB_DEMO_SPEED sets the speed
 * limit in MiB/s (0: as fast as the disk goes). Small files with no limit on a
 * fast disk can finish between two looks of the main thread, before they can be
 * paused or cancelled; the demo then says so and fails.
 */

#include <bgjob.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NJOBS 4
#define MIB (UINT64_C(1) << 20)
#define BLOCK_SIZE ((size_t)MIB)          /* one read/write and one progress update */
#define SYNC_EVERY (64 * MIB)             /* fdatasync period while writing/copying */
#define DEFAULT_FILE_MIB 384
#define DEFAULT_SPEED_MIB 96              /* per-job speed limit, MiB/s; 0 = none */
#define MAX_BURST_S 0.1                   /* speed limit: catch-up allowed after a stall */
#define TICK_MS 250                       /* live display refresh period */
#define PLAIN_EVERY_TICKS 4               /* non-TTY: one set of lines per second */
#define PAUSE_AT_PERCENT 25               /* when vm-bravo is paused... */
#define PAUSE_FOR_S 2.0                   /* ...and for how long */
#define CANCEL_AT_COPY_FRACTION 0.3       /* vm-charlie: cancel 30% into its copy */

/* ------------------------------------------------------------------------- */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* A signal interrupted the sleep: sleep the rest (the flag is polled). */
    }
}

/* A thread-safe strerror (the GNU strerror_r, which _GNU_SOURCE selects). */
static const char *errstr(int err, char *buf, size_t len)
{
    return strerror_r(err, buf, len);
}

/* Word number `i` of a job's generated data: the splitmix64 mix of a counter.
 * Cheap, reproducible, and independent per word, so it pipelines well. */
static uint64_t gen_word(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + i * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* A 64-bit checksum over whole words: four interleaved FNV-style lanes (so the
 * multiplies overlap), folded together at the end. Not cryptographic; enough to
 * tell a good copy from a damaged, truncated or reordered one. */
struct checksum {
    uint64_t lane[4];
};

#define CHECKSUM_PRIME UINT64_C(0x100000001b3)

static void checksum_init(struct checksum *c)
{
    for (int j = 0; j < 4; j++)
        c->lane[j] = UINT64_C(0xcbf29ce484222325) + (uint64_t)j;
}

static uint64_t checksum_step(uint64_t h, uint64_t w)
{
    h = (h ^ w) * CHECKSUM_PRIME;
    return h ^ (h >> 29);
}

/* Adds nwords words. Blocks are multiples of 4 words, so a stream's lanes see
 * the same words however it is cut into blocks (the tail only in the last). */
static void checksum_update(struct checksum *c, const uint64_t *w, size_t nwords)
{
    uint64_t a = c->lane[0], b = c->lane[1], d = c->lane[2], e = c->lane[3];
    size_t i = 0;
    for (; i + 4 <= nwords; i += 4) {
        a = checksum_step(a, w[i]);
        b = checksum_step(b, w[i + 1]);
        d = checksum_step(d, w[i + 2]);
        e = checksum_step(e, w[i + 3]);
    }
    for (; i < nwords; i++)
        a = checksum_step(a, w[i]);
    c->lane[0] = a;
    c->lane[1] = b;
    c->lane[2] = d;
    c->lane[3] = e;
}

static uint64_t checksum_value(const struct checksum *c)
{
    uint64_t h = c->lane[0];
    for (int j = 1; j < 4; j++)
        h = checksum_step(h, c->lane[j]);
    return h;
}

/* write(2) until everything is written; 0 or an errno value. */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* read(2) until len bytes or end of file; the byte count, or -1 with errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* fsync a directory, so that files created or removed in it stay so. */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = fsync(fd) == 0 ? 0 : errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    return err;
}

/* ------------------------------------------------------------------------- */
/* The worker                                                                */
/* ------------------------------------------------------------------------- */

/* What a successful worker hands back to main. It lives in main's own job
 * table, not in the userdata (which bgjob frees when the worker is done). The
 * worker writes it before returning 0; main reads it after bgjob_job_wait()
 * returned OK, which orders the two. */
struct job_result {
    uint64_t bytes;    /* size of the source and of the copy */
    uint64_t checksum; /* checksum of the generated data */
};

/* The worker's userdata: everything one job needs, owned by the job and freed
 * by work_free() (the free callback given to bgjob_job_create). */
struct work {
    char *dir;
    char *src_path;
    char *dst_path;
    uint64_t size;             /* bytes per file, a multiple of BLOCK_SIZE */
    uint64_t seed;             /* seed of the generated contents */
    uint64_t *buf;             /* one block */
    struct checksum sum;       /* of the data generated so far */
    uint64_t units_done;       /* bytes reported with bgjob_job_add_units */
    const char *phase;         /* the phase last set */
    double speed;              /* bytes per second, 0 = unlimited */
    double due;                /* speed limit: when the bytes so far are due */
    struct job_result *result; /* main's slot, filled on success */
};

static void work_release(struct work *w)
{
    if (w == NULL)
        return;
    free(w->dir);
    free(w->src_path);
    free(w->dst_path);
    free(w->buf);
    free(w);
}

/* Counts the userdata blocks bgjob freed, so main can check none leaked. */
static atomic_int g_userdata_freed;

/* The free callback given to bgjob_job_create: bgjob calls it exactly once per
 * job, after the worker's last use of the userdata (or at once if create
 * fails). It must not call back into bgjob for this job. */
static void work_free(void *userdata)
{
    work_release(userdata);
    atomic_fetch_add(&g_userdata_freed, 1);
}

/* A worker-side bgjob call failed. That is a bug, not an I/O error: record it
 * as the job's error (best effort: if that fails too there is nothing better
 * to do) and give the worker its return code. */
static int32_t bg_fail(bgjob_job *job, const char *call, bgjob_result r)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s", call, bgjob_result_str(r));
    (void)bgjob_job_set_error(job, EPROTO, msg);
    return EPROTO;
}

/* An I/O call failed with errno value err: record it as the job's error, as
 * "<what> <path>: <strerror>", and give the worker its return code. */
static int32_t io_fail(bgjob_job *job, int err, const char *what, const char *path)
{
    char eb[128], msg[PATH_MAX + 256];
    snprintf(msg, sizeof msg, "%s %s: %s", what, path, errstr(err, eb, sizeof eb));
    bgjob_result r = bgjob_job_set_error(job, err, msg);
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_set_error", r);
    return err;
}

/* Sets the job's phase (a static string, remembered for messages). */
static int32_t set_phase(struct work *w, bgjob_job *job, const char *phase)
{
    bgjob_result r = bgjob_job_set_phase(job, phase);
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_set_phase", r);
    w->phase = phase;
    return 0;
}

/* The speed limit (what a QEMU block job's "speed" or libvirt's block-copy
 * bandwidth does): `bytes` more are done; sleep until they are due. A job that
 * fell behind (paused, or a slow disk) catches up by at most MAX_BURST_S worth
 * of bytes rather than bursting. The sleeps are one block long (~10 ms) at
 * most, so pause and cancel stay prompt. */
static void throttle(struct work *w, uint64_t bytes)
{
    if (w->speed <= 0)
        return;
    double now = now_s();
    w->due += (double)bytes / w->speed;
    if (w->due < now - MAX_BURST_S)
        w->due = now - MAX_BURST_S;
    else if (w->due > now)
        sleep_ms((long)((w->due - now) * 1000.0));
}

/* One block is done: keep to the speed limit, report the block's bytes, then
 * stop at a pause point.
 * bgjob_job_add_units() already parks while the job is paused; the pause point
 * is what tells the worker that cancel was requested.
 * Returns 0 to carry on, ECANCELED to stop, or a recorded error. */
static int32_t block_done(struct work *w, bgjob_job *job, uint64_t bytes)
{
    throttle(w, bytes);
    bgjob_result r = bgjob_job_add_units(job, bytes);
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_add_units", r);
    w->units_done += bytes;
    r = bgjob_job_pause_point(job);
    if (r == BGJOB_RESULT_CANCELLED)
        return ECANCELED;
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_pause_point", r);
    return 0;
}

/* Phases 1 and 2: generate the source file. */
static int32_t write_source(struct work *w, bgjob_job *job)
{
    int32_t rc = set_phase(w, job, "writing");
    if (rc != 0)
        return rc;
    int fd = open(w->src_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return io_fail(job, errno, "cannot create", w->src_path);

    const size_t nwords = BLOCK_SIZE / sizeof(uint64_t);
    for (uint64_t off = 0; off < w->size; off += BLOCK_SIZE) {
        uint64_t first = off / sizeof(uint64_t);
        for (size_t i = 0; i < nwords; i++)
            w->buf[i] = gen_word(w->seed, first + i);
        checksum_update(&w->sum, w->buf, nwords);
        int err = write_all(fd, w->buf, BLOCK_SIZE);
        if (err != 0) {
            rc = io_fail(job, err, "cannot write", w->src_path);
            goto out;
        }
        if ((off + BLOCK_SIZE) % SYNC_EVERY == 0 && fdatasync(fd) != 0) {
            rc = io_fail(job, errno, "cannot sync", w->src_path);
            goto out;
        }
        rc = block_done(w, job, BLOCK_SIZE);
        if (rc != 0)
            goto out;
    }

    rc = set_phase(w, job, "syncing");
    if (rc == 0 && fsync(fd) != 0)
        rc = io_fail(job, errno, "cannot sync", w->src_path);
out:
    if (close(fd) != 0 && rc == 0)
        rc = io_fail(job, errno, "cannot close", w->src_path);
    return rc;
}

/* Phases 3 and 4: copy the source, verifying what is read back. */
static int32_t copy_source(struct work *w, bgjob_job *job)
{
    int32_t rc = set_phase(w, job, "copying");
    if (rc != 0)
        return rc;
    int in = open(w->src_path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return io_fail(job, errno, "cannot open", w->src_path);
    int out = open(w->dst_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        rc = io_fail(job, errno, "cannot create", w->dst_path);
        close(in);
        return rc;
    }

    uint64_t copied = 0;
    struct checksum sum;
    checksum_init(&sum);
    for (;;) {
        ssize_t n = read_full(in, w->buf, BLOCK_SIZE);
        if (n < 0) {
            rc = io_fail(job, errno, "cannot read", w->src_path);
            goto out;
        }
        if (n == 0)
            break;
        /* Blocks are whole words; a short last block fails the size check below. */
        checksum_update(&sum, w->buf, (size_t)n / sizeof(uint64_t));
        int err = write_all(out, w->buf, (size_t)n);
        if (err != 0) {
            rc = io_fail(job, err, "cannot write", w->dst_path);
            goto out;
        }
        copied += (uint64_t)n;
        if (copied % SYNC_EVERY == 0 && fdatasync(out) != 0) {
            rc = io_fail(job, errno, "cannot sync", w->dst_path);
            goto out;
        }
        rc = block_done(w, job, (uint64_t)n);
        if (rc != 0)
            goto out;
    }
    if (copied != w->size || checksum_value(&sum) != checksum_value(&w->sum)) {
        rc = io_fail(job, EIO, "data read back differs from data written:", w->src_path);
        goto out;
    }

    rc = set_phase(w, job, "syncing");
    if (rc == 0 && fsync(out) != 0)
        rc = io_fail(job, errno, "cannot sync", w->dst_path);
out:
    if (close(out) != 0 && rc == 0)
        rc = io_fail(job, errno, "cannot close", w->dst_path);
    close(in); /* read-only: nothing to lose */
    if (rc == 0) {
        int err = fsync_dir(w->dir);
        if (err != 0)
            rc = io_fail(job, err, "cannot sync directory", w->dir);
    }
    return rc;
}

/* Removes one of the job's files if it exists; 0 or an errno value. */
static int remove_if_there(const char *path)
{
    return unlink(path) == 0 || errno == ENOENT ? 0 : errno;
}

/* After a cancel or a failure: remove the partial files, in a phase of its own
 * so a manager watching the job sees why it has not ended yet. `why` is the
 * worker's return code so far (ECANCELED, or an error already recorded); the
 * result is what the worker returns. The progress stays where the work
 * stopped, so the final snapshot shows how far the job got. */
static int32_t clean_up(struct work *w, bgjob_job *job, int32_t why)
{
    const char *interrupted = w->phase; /* for the message below */
    int32_t rc = set_phase(w, job, "cleaning up"); /* clean up even if it failed */

    const char *failed = w->dst_path;
    int err = remove_if_there(w->dst_path);
    if (err == 0) {
        failed = w->src_path;
        err = remove_if_there(w->src_path);
    }
    if (err == 0) {
        failed = w->dir; /* make the removals durable */
        err = fsync_dir(w->dir);
    }
    if (err == 0 && rc == 0)
        rc = set_phase(w, job, "cleaned up");
    if (why != ECANCELED)
        return why; /* the I/O error already recorded is why the job failed */
    if (err != 0)
        return io_fail(job, err, "cancelled, but cleanup failed:", failed);
    if (rc != 0)
        return rc;

    /* Say what the cancel interrupted. The job ends CANCELLED because cancel
     * was requested and the worker did not succeed; the message is ours (without
     * one, bgjob would report code 0 and "cancelled"). */
    char msg[256];
    snprintf(msg, sizeof msg,
             "cancelled while %s after %" PRIu64 " of %" PRIu64 " MiB; partial files removed",
             interrupted, w->units_done / MIB, 2 * w->size / MIB);
    bgjob_result r = bgjob_job_set_error(job, ECANCELED, msg);
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_set_error", r);
    return ECANCELED;
}

/* The worker callback: runs on the job's own thread. */
static int32_t copy_worker(void *userdata, bgjob_job *job)
{
    struct work *w = userdata;
    w->due = now_s();
    bgjob_result r = bgjob_job_set_total(job, 2 * w->size);
    if (r != BGJOB_RESULT_OK)
        return bg_fail(job, "bgjob_job_set_total", r);

    int32_t rc = write_source(w, job);
    if (rc == 0)
        rc = copy_source(w, job);
    if (rc != 0)
        return clean_up(w, job, rc);

    rc = set_phase(w, job, "done");
    if (rc != 0)
        return clean_up(w, job, rc);
    w->result->bytes = w->size;
    w->result->checksum = checksum_value(&w->sum);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* The main thread: start, watch, steer, verify, release                     */
/* ------------------------------------------------------------------------- */

enum role { ROLE_PLAIN, ROLE_PAUSE, ROLE_CANCEL };

struct demo_job {
    const char *name;
    enum role role;
    char src_path[PATH_MAX];
    char dst_path[PATH_MAX];
    bgjob_job *handle;       /* NULL if it could not be created */
    struct job_result result;
    /* What the scenario did and saw. */
    bool paused;
    bool saw_paused;
    bool resumed;
    bool cancelled;
    double paused_at;
    char last_phase[BGJOB_ENTRY_TEXT_SIZE];
};

static volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static bool g_tty;         /* stdout is a terminal: redraw in place */
static int g_drawn_lines;  /* lines of the live block currently on screen */
static double g_t0;

/* An event line ("pausing vm-bravo"). On a terminal it goes above the live
 * block, which is redrawn below it at the next tick. */
static void event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void event(const char *fmt, ...)
{
    va_list ap;
    if (g_tty && g_drawn_lines > 0) {
        printf("\033[%dA\r\033[J", g_drawn_lines); /* up over the block, clear it */
        g_drawn_lines = 0;
    }
    printf("[%5.1fs] ", now_s() - g_t0);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Checks a main-thread bgjob call; false (after saying so) if it failed. */
static bool bg_check(bgjob_result r, const char *call, const char *name)
{
    if (r == BGJOB_RESULT_OK)
        return true;
    fprintf(stderr, "demo: %s(%s): %s\n", call, name, bgjob_result_str(r));
    return false;
}

static bool is_terminal(int32_t state)
{
    return state == BGJOB_STATE_COMPLETED || state == BGJOB_STATE_FAILED ||
           state == BGJOB_STATE_CANCELLED;
}

static void fmt_eta(char *buf, size_t len, int64_t ms)
{
    if (ms < 0)
        snprintf(buf, len, "?");
    else
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
}

/* One progress line for a job, from a get_info snapshot and its phase. */
static void fmt_line(char *buf, size_t len, const struct demo_job *d, const bgjob_info *in,
                     const char *phase)
{
    char pct[16], rate[32], eta[24], bar[24] = "";
    if (in->percent < 0)
        snprintf(pct, sizeof pct, "  ?%%");
    else
        snprintf(pct, sizeof pct, "%3d%%", (int)in->percent);
    if (in->rate < 0)
        snprintf(rate, sizeof rate, "    ? MiB/s");
    else
        snprintf(rate, sizeof rate, "%5.0f MiB/s", in->rate / (double)MIB);
    fmt_eta(eta, sizeof eta, in->remaining_ms);
    if (g_tty) {
        int fill = in->percent < 0 ? 0 : (int)in->percent / 5;
        bar[0] = '[';
        for (int i = 0; i < 20; i++)
            bar[1 + i] = i < fill ? '#' : '.';
        bar[21] = ']';
        bar[22] = '\0';
    }
    snprintf(buf, len, "%-10s %-9s %s %s %5" PRIu64 "/%" PRIu64 " MiB %s  ETA %-6s %s", d->name,
             bgjob_state_str(in->state), pct, bar, in->current / MIB, in->total / MIB, rate, eta,
             phase);
}

/* Takes a snapshot of every job, records what the scenario needs, and prints
 * the live block (always on a terminal, when `print` otherwise). Returns the
 * number of jobs not yet terminal, or -1 if a bgjob call failed. */
static int refresh(struct demo_job *jobs, bgjob_info *infos, bool print)
{
    char lines[NJOBS][256];
    int live = 0;
    for (int i = 0; i < NJOBS; i++) {
        struct demo_job *d = &jobs[i];
        bgjob_info *in = &infos[i];
        memset(in, 0, sizeof *in);
        in->struct_size = sizeof *in; /* required before every get_info */
        if (d->handle == NULL) {
            in->state = BGJOB_STATE_FAILED;
            snprintf(lines[i], sizeof lines[i], "%-10s (not created)", d->name);
            continue;
        }
        if (!bg_check(bgjob_job_get_info(d->handle, in), "bgjob_job_get_info", d->name) ||
            !bg_check(bgjob_job_get_phase(d->handle, d->last_phase, sizeof d->last_phase, NULL),
                      "bgjob_job_get_phase", d->name))
            return -1;
        if (in->state == BGJOB_STATE_PAUSED)
            d->saw_paused = true;
        if (!is_terminal(in->state))
            live++;
        fmt_line(lines[i], sizeof lines[i], d, in, d->last_phase);
    }
    if (g_tty) {
        if (g_drawn_lines > 0)
            printf("\033[%dA", g_drawn_lines);
        for (int i = 0; i < NJOBS; i++)
            printf("\r\033[2K  %s\n", lines[i]);
        g_drawn_lines = NJOBS;
        fflush(stdout);
    } else if (print) {
        double t = now_s() - g_t0;
        for (int i = 0; i < NJOBS; i++)
            printf("[%5.1fs]   %s\n", t, lines[i]);
        fflush(stdout);
    }
    return live;
}

static const char *cancel_status_str(int32_t status)
{
    switch (status) {
    case BGJOB_CANCEL_STATUS_REQUESTED:
        return "requested";
    case BGJOB_CANCEL_STATUS_ALREADY_REQUESTED:
        return "already requested";
    case BGJOB_CANCEL_STATUS_ALREADY_FINISHED:
        return "already finished";
    default:
        return "unknown";
    }
}

/* The scenario, played from the latest snapshots: pause vm-bravo once it is
 * PAUSE_AT_PERCENT done and resume it PAUSE_FOR_S later; cancel vm-charlie
 * CANCEL_AT_COPY_FRACTION into its copy. Returns false if a call that should
 * have worked did not. */
static bool steer(struct demo_job *jobs, const bgjob_info *infos, double t)
{
    bool ok = true;
    for (int i = 0; i < NJOBS; i++) {
        struct demo_job *d = &jobs[i];
        const bgjob_info *in = &infos[i];
        if (d->handle == NULL)
            continue;
        switch (d->role) {
        case ROLE_PLAIN:
            break;
        case ROLE_PAUSE:
            if (!d->paused && in->percent >= PAUSE_AT_PERCENT) {
                event("pausing %s at %d%%", d->name, (int)in->percent);
                d->paused = true;
                d->paused_at = t;
                if (!bg_check(bgjob_job_pause(d->handle), "bgjob_job_pause", d->name)) {
                    d->resumed = true; /* nothing to resume */
                    ok = false;
                }
            } else if (d->paused && !d->resumed && t >= d->paused_at + PAUSE_FOR_S) {
                event("resuming %s (it is %s)", d->name, bgjob_state_str(in->state));
                d->resumed = true;
                ok &= bg_check(bgjob_job_resume(d->handle), "bgjob_job_resume", d->name);
            }
            break;
        case ROLE_CANCEL: {
            /* The copy is the second half of the job's bytes. */
            uint64_t half = in->total / 2;
            uint64_t at = half + (uint64_t)((double)half * CANCEL_AT_COPY_FRACTION);
            if (d->cancelled || strcmp(d->last_phase, "copying") != 0 || in->current < at)
                break;
            int32_t status = -1;
            d->cancelled = true;
            ok &= bg_check(bgjob_job_cancel(d->handle, &status), "bgjob_job_cancel", d->name);
            event("cancelling %s during %s at %d%%: %s", d->name, d->last_phase,
                  (int)in->percent, cancel_status_str(status));
            /* This call asked first and the job had not ended: REQUESTED. */
            ok &= status == BGJOB_CANCEL_STATUS_REQUESTED;
            break;
        }
        }
    }
    return ok;
}

/* Reads a file and returns its checksum and size; 0 or an errno value. A size
 * that is not whole words is caught by the caller's size check. */
static int checksum_file(const char *path, uint64_t *words_buf, uint64_t *sum_out,
                         uint64_t *size_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    struct checksum sum;
    checksum_init(&sum);
    uint64_t size = 0;
    int err = 0;
    for (;;) {
        ssize_t n = read_full(fd, words_buf, BLOCK_SIZE);
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0)
            break;
        checksum_update(&sum, words_buf, (size_t)n / sizeof(uint64_t));
        size += (uint64_t)n;
    }
    close(fd);
    *sum_out = checksum_value(&sum);
    *size_out = size;
    return err;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 || errno != ENOENT;
}

/* Verifies a completed job's files: the source has the size written, and the
 * copy has that size and the checksum taken when the data was generated (the
 * worker already checked the source against it while copying). */
static bool verify_copy(const struct demo_job *d, uint64_t *buf)
{
    char eb[128];
    struct stat st;
    if (stat(d->src_path, &st) != 0) {
        printf("    FAIL: %s: %s\n", d->src_path, errstr(errno, eb, sizeof eb));
        return false;
    }
    if ((uint64_t)st.st_size != d->result.bytes) {
        printf("    FAIL: %s is %jd bytes, expected %" PRIu64 "\n", d->src_path,
               (intmax_t)st.st_size, d->result.bytes);
        return false;
    }
    uint64_t sum = 0, size = 0;
    int err = checksum_file(d->dst_path, buf, &sum, &size);
    if (err != 0) {
        printf("    FAIL: %s: %s\n", d->dst_path, errstr(err, eb, sizeof eb));
        return false;
    }
    if (size != d->result.bytes || sum != d->result.checksum) {
        printf("    FAIL: copy differs: %" PRIu64 " bytes, checksum %016" PRIx64
               "; source %" PRIu64 " bytes, checksum %016" PRIx64 "\n",
               size, sum, d->result.bytes, d->result.checksum);
        return false;
    }
    printf("    copy verified: %" PRIu64 " MiB, checksum %016" PRIx64 " matches the source\n",
           size / MIB, sum);
    return true;
}

/* Creates one job; false (with the job left NULL) if that failed. *given
 * counts the userdata blocks handed to bgjob (each must come back through
 * work_free, whether create succeeded or not). */
static bool start_job(struct demo_job *d, const char *dir, uint64_t size, double speed,
                      uint64_t seed, int *given)
{
    struct work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        perror("demo: calloc");
        return false;
    }
    w->dir = strdup(dir);
    w->src_path = strdup(d->src_path);
    w->dst_path = strdup(d->dst_path);
    w->buf = aligned_alloc(64, BLOCK_SIZE);
    w->size = size;
    w->speed = speed;
    w->seed = seed;
    checksum_init(&w->sum);
    w->result = &d->result;
    if (w->dir == NULL || w->src_path == NULL || w->dst_path == NULL || w->buf == NULL) {
        perror("demo: out of memory");
        work_release(w); /* not bgjob's yet */
        return false;
    }

    bgjob_job_options opts;
    if (!bg_check(bgjob_job_options_init(&opts, sizeof opts), "bgjob_job_options_init", d->name)) {
        work_release(w);
        return false;
    }
    opts.name = d->name; /* also the worker thread's name */
    /* From here on the userdata belongs to bgjob, even if create fails: it
     * calls work_free() exactly once on every path. */
    (*given)++;
    return bg_check(bgjob_job_create(&opts, copy_worker, w, work_free, &d->handle),
                    "bgjob_job_create", d->name);
}

/* Reads an optional numeric environment variable; false (after saying so)
 * if it is set but not a number in min..max. */
static bool env_number(const char *name, unsigned long dflt, unsigned long min,
                       unsigned long max, unsigned long *out)
{
    const char *v = getenv(name);
    *out = dflt;
    if (v == NULL || *v == '\0')
        return true;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        fprintf(stderr, "demo: %s must be a number in %lu..%lu\n", name, min, max);
        return false;
    }
    *out = n;
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "demo: %s is not a directory\n", dir);
        return 2;
    }
    if (bgjob_abi_version() != BGJOB_ABI_VERSION) {
        fprintf(stderr, "demo: built for bgjob ABI %d, loaded ABI %u\n", BGJOB_ABI_VERSION,
                bgjob_abi_version());
        return 1;
    }

    unsigned long file_mib, speed_mib;
    if (!env_number("BGJOB_DEMO_MIB", DEFAULT_FILE_MIB, 1, 65536, &file_mib) ||
        !env_number("BGJOB_DEMO_SPEED", DEFAULT_SPEED_MIB, 0, 1 << 20, &speed_mib))
        return 2;
    const uint64_t size = (uint64_t)file_mib * MIB;
    const double speed = (double)speed_mib * (double)MIB;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror("demo: sigaction");
        return 1;
    }

    g_tty = isatty(STDOUT_FILENO);
    g_t0 = now_s();
    char limit[48] = "no speed limit";
    if (speed_mib > 0)
        snprintf(limit, sizeof limit, "at most %lu MiB/s", speed_mib);
    printf("bgjob %s demo: %d jobs in %s; each writes %lu MiB, then copies it "
           "(%lu MiB of progress, %s)\n",
           bgjob_version(), NJOBS, dir, file_mib, 2 * file_mib, limit);

    struct demo_job jobs[NJOBS] = {
        { .name = "vm-alpha", .role = ROLE_PLAIN },
        { .name = "vm-bravo", .role = ROLE_PAUSE },
        { .name = "vm-charlie", .role = ROLE_CANCEL },
        { .name = "vm-delta", .role = ROLE_PLAIN },
    };
    bool ok = true;
    int created = 0, given = 0;
    for (int i = 0; i < NJOBS; i++) {
        struct demo_job *d = &jobs[i];
        int n1 = snprintf(d->src_path, sizeof d->src_path, "%s/%s.img", dir, d->name);
        int n2 = snprintf(d->dst_path, sizeof d->dst_path, "%s/%s-copy.img", dir, d->name);
        if (n1 < 0 || (size_t)n1 >= sizeof d->src_path || n2 < 0 ||
            (size_t)n2 >= sizeof d->dst_path) {
            fprintf(stderr, "demo: path too long\n");
            ok = false;
            break;
        }
        if (!start_job(d, dir, size, speed, UINT64_C(0x9E3779B97F4A7C15) * (uint64_t)(i + 1),
                       &given)) {
            ok = false;
            break;
        }
        created++;
    }
    if (!ok) {
        /* Could not start them all: cancel the ones that run; the wait below
         * still collects and destroys them. */
        for (int i = 0; i < created; i++)
            (void)bg_check(bgjob_job_cancel(jobs[i].handle, NULL), "bgjob_job_cancel",
                           jobs[i].name);
    }

    /* Watch and steer until every job has ended. */
    bgjob_info infos[NJOBS];
    bool stopping = false;
    for (unsigned tick = 0;; tick++) {
        bool print = tick % PLAIN_EVERY_TICKS == 0;
        int live = refresh(jobs, infos, print);
        if (live < 0) {
            ok = false;
            break;
        }
        if (live == 0) {
            /* Every job has ended: a plain-text log gets the final picture too. */
            if (!g_tty && !print && refresh(jobs, infos, true) < 0)
                ok = false;
            break;
        }
        if (g_stop && !stopping) {
            event("signal: cancelling every job");
            for (int i = 0; i < created; i++)
                (void)bg_check(bgjob_job_cancel(jobs[i].handle, NULL), "bgjob_job_cancel",
                               jobs[i].name);
            stopping = true;
            ok = false;
        }
        /* Steer even after a failed step: a paused job must still be resumed. */
        if (!stopping && created == NJOBS && !steer(jobs, infos, now_s() - g_t0))
            ok = false;
        sleep_ms(TICK_MS);
    }
    /* Collect every job. They have all ended, so this does not block; a driver
     * that had not watched them would wait here. */
    printf("\nresults after %.1f s:\n", now_s() - g_t0);
    uint64_t *buf = aligned_alloc(64, BLOCK_SIZE);
    if (buf == NULL) {
        perror("demo: aligned_alloc");
        ok = false;
    }
    for (int i = 0; i < created; i++) {
        struct demo_job *d = &jobs[i];
        int32_t state = -1;
        if (!bg_check(bgjob_job_wait(d->handle, -1, &state), "bgjob_job_wait", d->name)) {
            ok = false;
            continue;
        }
        bgjob_info in;
        memset(&in, 0, sizeof in);
        in.struct_size = sizeof in;
        int32_t code = 0;
        char msg[256] = "";
        if (!bg_check(bgjob_job_get_info(d->handle, &in), "bgjob_job_get_info", d->name) ||
            !bg_check(bgjob_job_get_error(d->handle, &code, msg, sizeof msg, NULL),
                      "bgjob_job_get_error", d->name)) {
            ok = false;
            continue;
        }
        printf("  %-10s %-9s after %.1f s active", d->name, bgjob_state_str(state),
               (double)in.elapsed_ms / 1000.0);
        if (state == BGJOB_STATE_FAILED || state == BGJOB_STATE_CANCELLED)
            printf(", error %d: %s", (int)code, msg);
        putchar('\n');

        /* What was expected of this job (after a signal, anything goes). */
        int32_t want = d->role == ROLE_CANCEL ? BGJOB_STATE_CANCELLED : BGJOB_STATE_COMPLETED;
        if (!stopping && state != want) {
            printf("    FAIL: expected %s\n", bgjob_state_str(want));
            ok = false;
        }
        if (d->role == ROLE_PAUSE && !stopping) {
            if (d->saw_paused && d->resumed)
                printf("    was paused for %.1f s and resumed\n", PAUSE_FOR_S);
            else {
                printf("    FAIL: never seen paused (did it end before it could be?)\n");
                ok = false;
            }
        }
        if (state == BGJOB_STATE_COMPLETED && buf != NULL) {
            if (!verify_copy(d, buf))
                ok = false;
        } else if (state == BGJOB_STATE_CANCELLED || state == BGJOB_STATE_FAILED) {
            bool left = file_exists(d->src_path) || file_exists(d->dst_path);
            printf("    partial files %s\n", left ? "LEFT BEHIND" : "removed");
            if (left)
                ok = false;
            if (state == BGJOB_STATE_CANCELLED && !in.cancel_requested) {
                printf("    FAIL: cancelled, but cancel_requested is false\n");
                ok = false;
            }
        }
    }
    free(buf);

    /* Release every handle. bgjob freed each userdata once its worker was done
     * (bgjob_job_wait returning OK promises that). */
    for (int i = 0; i < created; i++)
        ok &= bg_check(bgjob_job_destroy(jobs[i].handle), "bgjob_job_destroy", jobs[i].name);
    int freed = atomic_load(&g_userdata_freed);
    if (freed != given) {
        printf("FAIL: %d of %d userdata blocks freed\n", freed, given);
        ok = false;
    }
    size_t still = 0;
    if (!bg_check(bgjob_list_jobs(NULL, 0, &still), "bgjob_list_jobs", "-") || still != 0) {
        printf("FAIL: %zu jobs still listed after destroying every handle\n", still);
        ok = false;
    }

    printf("\n%s (%.1f s)\n", ok ? "demo: everything went as expected" : "demo: FAILED",
           now_s() - g_t0);
    return ok ? 0 : 1;
}
