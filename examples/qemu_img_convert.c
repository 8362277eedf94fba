/*
 * qemu_img_convert: a real disk-image job built from bgjob's child-process
 * support (the child-process watch of libxl's cancellation design).
 *
 * Each run is one job whose worker
 *   1. creates a raw source image with `qemu-img create` and fills it with a
 *      pattern (so there is data to convert),
 *   2. runs `qemu-img convert -p -O qcow2` as a child bound to the job, turning
 *      its progress output ("    (45.31/100%)\r") into units as it comes,
 *   3. on cancel, sets the phase "cleaning up" and removes the partial output.
 * The main thread shows progress live from bgjob_job_get_info.
 *
 * Run 1 converts to the end and checks the copy with `qemu-img compare`.
 * Run 2 is cancelled mid-way and proves that qemu-img was killed (SIGTERM,
 * from the job's cancel hook) and reaped (its /proc entry is gone), and that
 * the partial output file was removed.
 *
 * Without qemu-img in PATH it prints why it skipped and exits 77.
 *
 * Environment: BGJOB_QEMU_MIB (image size, default 128), BGJOB_QEMU_RATE
 * (qemu-img's -r rate limit in MiB/s, default 64, so a run lasts a few
 * seconds and the cancel lands mid-way).
 */
#include <bgjob.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SKIP 77
#define UNITS 10000 /* progress units: hundredths of a percent */

struct convert {
    const char *dir;
    char src[PATH_MAX];
    char dst[PATH_MAX];
    unsigned mib;
    unsigned rate_mib;
    /* What the worker saw, for the checks after the job ended. */
    atomic_int qemu_pid;
    atomic_int qemu_rc;      /* bgjob_job_wait_child's result */
    atomic_int qemu_status;  /* its wait status */
    atomic_int removed;      /* the partial output was removed */
    char error[PATH_MAX + 128];
};

/* qemu-img -p prints "    (45.31/100%)"; anything else is passed through. */
static void on_line(void *userdata, bgjob_job *job, int32_t stream, const char *line, size_t len)
{
    (void)userdata;
    (void)len;
    const char *open = strchr(line, '(');
    char *end = NULL;
    double pct = open != NULL ? strtod(open + 1, &end) : -1;
    if (stream == BGJOB_CHILD_STDOUT && end != NULL && strncmp(end, "/100%)", 6) == 0) {
        uint64_t units = (uint64_t)(pct * (UNITS / 100) + 0.5);
        uint64_t now = 0;
        bgjob_info info = {.struct_size = sizeof info};
        if (bgjob_job_get_info(job, &info) == BGJOB_RESULT_OK)
            now = info.current;
        if (units > now)
            bgjob_job_add_units(job, units - now);
        return;
    }
    fprintf(stderr, "  qemu-img: %s\n", line);
}

/* Runs argv as a child of the job and waits for it; returns the wait's result
 * and leaves the status in *status. */
static bgjob_result run_child(bgjob_job *job, struct convert *c, const char *const *argv,
                              bool progress, int32_t *status)
{
    bgjob_child_options o;
    bgjob_child_options_init(&o, sizeof o);
    o.argv = argv;
    o.flags = BGJOB_CHILD_CAPTURE_STDOUT | BGJOB_CHILD_CAPTURE_STDERR;
    o.grace_ms = 2000;
    o.on_line = on_line;
    int32_t pid = -1;
    bgjob_result r = bgjob_job_spawn_child(job, &o, &pid);
    if (r != BGJOB_RESULT_OK) {
        snprintf(c->error, sizeof c->error, "cannot start %s: %s (%s)", argv[0],
                 bgjob_result_str(r), strerror(errno));
        return r;
    }
    if (progress)
        atomic_store(&c->qemu_pid, pid);
    return bgjob_job_wait_child(job, pid, -1, status);
}

static int32_t fail(bgjob_job *job, struct convert *c, int code)
{
    bgjob_job_set_error(job, code, c->error);
    return code;
}

/* Writes a pattern over the raw image, 1 MiB at a time, as progress. */
static int32_t fill(bgjob_job *job, struct convert *c)
{
    int fd = open(c->src, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(c->error, sizeof c->error, "open %s: %s", c->src, strerror(errno));
        return fail(job, c, errno);
    }
    static char block[1 << 20];
    for (unsigned i = 0; i < c->mib; i++) {
        if (bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED) {
            close(fd);
            return ECANCELED;
        }
        memset(block, (int)(i * 37 + 1), sizeof block);
        snprintf(block, 64, "bgjob block %u", i);
        if (pwrite(fd, block, sizeof block, (off_t)i << 20) != (ssize_t)sizeof block) {
            snprintf(c->error, sizeof c->error, "write %s: %s", c->src, strerror(errno));
            close(fd);
            return fail(job, c, EIO);
        }
    }
    close(fd);
    return 0;
}

static int32_t convert_worker(void *userdata, bgjob_job *job)
{
    struct convert *c = userdata;
    char size[32], rate[32];
    int32_t status = -1;
    snprintf(size, sizeof size, "%uM", c->mib);
    snprintf(rate, sizeof rate, "%uM", c->rate_mib);
    bgjob_job_set_total(job, UNITS);

    bgjob_job_set_phase(job, "creating");
    const char *create[] = {"qemu-img", "create", "-q", "-f", "raw", c->src, size, NULL};
    bgjob_result r = run_child(job, c, create, false, &status);
    if (r == BGJOB_RESULT_CANCELLED)
        return ECANCELED;
    if (r != BGJOB_RESULT_OK || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(c->error, sizeof c->error, "qemu-img create failed (status 0x%x)", status);
        return fail(job, c, EIO);
    }
    bgjob_job_set_phase(job, "filling");
    int32_t rc = fill(job, c);
    if (rc != 0)
        return rc;

    bgjob_job_set_phase(job, "converting");
    const char *convert[] = {"qemu-img", "convert", "-p", "-r", rate, "-f", "raw",
                             "-O", "qcow2", c->src, c->dst, NULL};
    r = run_child(job, c, convert, true, &status);
    atomic_store(&c->qemu_status, status);
    atomic_store(&c->qemu_rc, r);
    if (r == BGJOB_RESULT_CANCELLED) {
        /* qemu-img is gone (bgjob waited for it); remove what it left. */
        bgjob_job_set_phase(job, "cleaning up");
        if (unlink(c->dst) == 0 || errno == ENOENT)
            atomic_store(&c->removed, 1);
        return ECANCELED;
    }
    if (r != BGJOB_RESULT_OK || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(c->error, sizeof c->error, "qemu-img convert failed (%s, status 0x%x)",
                 bgjob_result_str(r), status);
        unlink(c->dst);
        return fail(job, c, EIO);
    }
    return 0;
}

/* Polls the job, printing a live progress line; with cancel_at_pct >= 0,
 * cancels it once the conversion has passed that percentage. */
static int32_t watch(bgjob_job *job, const char *label, int cancel_at_pct)
{
    bool tty = isatty(STDOUT_FILENO);
    int32_t state = -1;
    int last_shown = -100;
    while (bgjob_job_wait(job, 100, &state) == BGJOB_RESULT_TIMED_OUT) {
        bgjob_info info = {.struct_size = sizeof info};
        char phase[32] = "";
        if (bgjob_job_get_info(job, &info) != BGJOB_RESULT_OK)
            break;
        bgjob_job_get_phase(job, phase, sizeof phase, NULL);
        bool converting = strcmp(phase, "converting") == 0;
        if (tty || info.percent >= last_shown + 20) {
            char eta[32] = "?";
            if (info.remaining_ms >= 0)
                snprintf(eta, sizeof eta, "%.1f s", info.remaining_ms / 1000.0);
            printf("%s%-10s %-11s %3d%%  elapsed %5.1f s  eta %-8s%s", tty ? "\r" : "  ", label,
                   phase, info.percent, info.elapsed_ms / 1000.0, eta, tty ? "" : "\n");
            fflush(stdout);
            last_shown = info.percent;
        }
        if (cancel_at_pct >= 0 && converting && info.percent >= cancel_at_pct &&
            !info.cancel_requested) {
            printf("%s%s: cancelling at %d%%\n", tty ? "\n" : "  ", label, info.percent);
            bgjob_job_cancel(job, NULL);
        }
    }
    if (tty)
        printf("\n");
    return state;
}

static bool in_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        return false;
    char *copy = strdup(path);
    bool found = false;
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d != NULL && !found;
         d = strtok_r(NULL, ":", &save)) {
        char full[PATH_MAX];
        snprintf(full, sizeof full, "%s/%s", d, prog);
        found = access(full, X_OK) == 0;
    }
    free(copy);
    return found;
}

static unsigned env_uint(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    char *end;
    unsigned long n = v != NULL ? strtoul(v, &end, 10) : 0;
    return v != NULL && *end == 0 && n > 0 && n < 1u << 20 ? (unsigned)n : dflt;
}

static bgjob_job *start_convert(struct convert *c, const char *name)
{
    bgjob_job_options o;
    bgjob_job_options_init(&o, sizeof o);
    o.name = name;
    bgjob_job *job = NULL;
    bgjob_result r = bgjob_job_create(&o, convert_worker, c, NULL, &job);
    if (r != BGJOB_RESULT_OK) {
        fprintf(stderr, "qemu_img_convert: create: %s\n", bgjob_result_str(r));
        return NULL;
    }
    return job;
}

static void setup(struct convert *c, const char *dir, const char *tag, unsigned mib, unsigned rate)
{
    memset(c, 0, sizeof *c);
    c->dir = dir;
    c->mib = mib;
    c->rate_mib = rate;
    snprintf(c->src, sizeof c->src, "%s/%s-src.raw", dir, tag);
    snprintf(c->dst, sizeof c->dst, "%s/%s-dst.qcow2", dir, tag);
    atomic_init(&c->qemu_pid, 0);
    atomic_init(&c->qemu_rc, -1);
    atomic_init(&c->qemu_status, -1);
    atomic_init(&c->removed, 0);
}

/* Runs `qemu-img compare` in a job of its own; true if the images match. */
static int32_t compare_worker(void *userdata, bgjob_job *job)
{
    struct convert *c = userdata;
    const char *argv[] = {"qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", c->src, c->dst, NULL};
    int32_t status = -1;
    if (run_child(job, c, argv, false, &status) != BGJOB_RESULT_OK)
        return EIO;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(void)
{
    if (!in_path("qemu-img")) {
        printf("qemu_img_convert: skipped: qemu-img is not in PATH "
               "(install it with: apt-get install -y qemu-utils)\n");
        return SKIP;
    }
    unsigned mib = env_uint("BGJOB_QEMU_MIB", 128);
    unsigned rate = env_uint("BGJOB_QEMU_RATE", 64);
    char dir[] = "/tmp/bgjob-qemu-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    bool ok = true;
    struct convert run1, run2;

    printf("run 1: qemu-img convert of a %u MiB image, to the end\n", mib);
    setup(&run1, dir, "run1", mib, rate);
    bgjob_job *job = start_convert(&run1, "convert-1");
    if (job == NULL)
        return 1;
    int32_t state = watch(job, "convert-1", -1);
    printf("  convert-1: %s%s%s\n", bgjob_state_str(state), run1.error[0] ? ": " : "", run1.error);
    ok &= state == BGJOB_STATE_COMPLETED;
    bgjob_job_destroy(job);
    if (state == BGJOB_STATE_COMPLETED) {
        bgjob_job *cmp = NULL;
        int32_t cs = -1;
        if (bgjob_job_create(NULL, compare_worker, &run1, NULL, &cmp) == BGJOB_RESULT_OK) {
            bgjob_job_wait(cmp, -1, &cs);
            bgjob_job_destroy(cmp);
        }
        printf("  qemu-img compare: %s\n", cs == BGJOB_STATE_COMPLETED ? "images are identical" : "MISMATCH");
        ok &= cs == BGJOB_STATE_COMPLETED;
    }

    printf("run 2: the same conversion, cancelled mid-way\n");
    setup(&run2, dir, "run2", mib, rate);
    job = start_convert(&run2, "convert-2");
    if (job == NULL)
        return 1;
    state = watch(job, "convert-2", 30);
    bgjob_info info = {.struct_size = sizeof info};
    bgjob_job_get_info(job, &info);
    int pid = atomic_load(&run2.qemu_pid);
    int status = atomic_load(&run2.qemu_status);
    char proc[64];
    struct stat st;
    snprintf(proc, sizeof proc, "/proc/%d", pid);
    bool reaped = pid > 0 && stat(proc, &st) != 0;
    bool partial_gone = stat(run2.dst, &st) != 0 && errno == ENOENT;
    printf("  convert-2: %s (cancel cause %s) at %d%%\n", bgjob_state_str(state),
           info.cancel_cause == BGJOB_CANCEL_CAUSE_CALLER ? "caller" : "?", info.percent);
    printf("  qemu-img pid %d: %s; %s\n", pid,
           WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "not killed by a signal",
           reaped ? "reaped (no /proc entry left)" : "STILL IN /proc");
    printf("  partial output %s: %s\n", run2.dst, partial_gone ? "removed" : "STILL THERE");
    ok &= state == BGJOB_STATE_CANCELLED && atomic_load(&run2.qemu_rc) == BGJOB_RESULT_CANCELLED &&
          WIFSIGNALED(status) && reaped && partial_gone && atomic_load(&run2.removed) == 1 &&
          info.percent > 0 && info.percent < 100;
    bgjob_job_destroy(job);

    unlink(run1.src);
    unlink(run1.dst);
    unlink(run2.src);
    unlink(run2.dst);
    rmdir(dir);
    printf("qemu_img_convert: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
