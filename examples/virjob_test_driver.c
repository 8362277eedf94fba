/*
 * virjob_test_driver.c: a miniature libvirt-style "test" driver with an
 * asynchronous save, written against the libvirt virJob proposal and built
 * against virjob.h + libbgjob unchanged.
 *
 * testDomainSaveJob() stores its parameters in a private struct and calls
 * virJobCreate(); testDomainSaveWorker() writes a real save file in 50 steps
 * exactly as the proposal's pseudo-code does: virJobInitialize(job, 50), then per
 * step a unit of work, virJobFinishCancel(), virJobUpdateRel(job, 1, -1, 2),
 * and virJobFinishSuccess() at the end.
 *
 * main() saves three domains into DIR (default: a fresh directory under
 * /tmp): the first to the end while polling virJobGetInfo(), the second
 * cancelled part-way (paused first through its bgjob handle, to show the
 * two APIs on one job), the third into a directory that does not exist, and
 * reads its virError. It checks every outcome and exits non-zero if one is
 * wrong.
 *
 *   cc -std=c11 virjob_test_driver.c $(pkg-config --cflags --libs bgjob)
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "virjob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(VIRJOB_EXPECT_LIBVIRT) && !VIRJOB_LIBVIRT_TYPES
#error "built to use libvirt's headers, but virjob.h did not find them"
#endif

#if VIRJOB_LIBVIRT_TYPES
#define TEST_ERR_SYSTEM_ERROR VIR_ERR_SYSTEM_ERROR
#else
#define TEST_ERR_SYSTEM_ERROR 38 /* libvirt's VIR_ERR_SYSTEM_ERROR */
#endif

#define TEST_SAVE_STEPS 50
#define TEST_CHUNK (64 * 1024)     /* guest memory written per step */
#define TEST_STEP_NS (20 * 1000000) /* a step stands for the proposal's 1 s of work */

/* ---- the driver's own objects (libvirt's datatypes.h keeps these private) */

typedef struct {
    const char *name;
    virJobDriverPtr jobDriver; /* NULL: bgjob's own job calls */
} testDriver;

struct _virDomain {
    virConnectPtr conn;
    int idx;
    char name[16];
};

#define TEST_DOMAINS 3

struct _virConnect {
    const testDriver *driver;
    struct _virDomain domains[TEST_DOMAINS];
};

static const testDriver test_driver = { "test", NULL };

/* ---- the asynchronous save, as in the proposal */

enum { TEST_JOB_DOMAIN_SAVE = 1 };

typedef struct {
    int type;
    union {
        struct {
            int domidx;
            char *path;
        } save;
    } data;
} testJob;
typedef testJob *testJobPtr;

static void testJobFree(void *opaque)
{
    testJobPtr privdata = opaque;

    free(privdata->data.save.path);
    free(privdata);
}

/* One step's worth of the domain's memory image. */
static int testWriteChunk(int fd, const struct _virDomain *dom, int step)
{
    static unsigned char buf[TEST_CHUNK];
    size_t done = 0;

    memset(buf, (dom->idx * TEST_SAVE_STEPS + step) & 0xff, sizeof(buf));
    while (done < sizeof(buf)) {
        ssize_t n = write(fd, buf + done, sizeof(buf) - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static void testFailWithErrno(virJobPtr job, const char *what, const char *path)
{
    char msg[512];

    snprintf(msg, sizeof(msg), "%s '%s': %s", what, path, strerror(errno));
    virJobFinishFailure(job, TEST_ERR_SYSTEM_ERROR, msg);
}

static void testDomainSaveWorker(virJobPtr job, void *data)
{
    testJobPtr privdata = data;
    const char *path = privdata->data.save.path;
    virConnectPtr conn = virJobGetConnect(job);
    const struct _virDomain *dom = &conn->domains[privdata->data.save.domidx];
    const struct timespec step_time = { 0, TEST_STEP_NS };
    int step = 0;
    int fd;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        testFailWithErrno(job, "cannot create save file", path);
        return;
    }

    /* A 50 second ETA for saving */
    virJobInitialize(job, 50);

    do {
        /* ... do a unit of work ... */
        if (testWriteChunk(fd, dom, step) < 0) {
            testFailWithErrno(job, "cannot write save file", path);
            close(fd);
            unlink(path);
            return;
        }
        step++;
        nanosleep(&step_time, NULL);

        /* ... Check for cancellation ... */
        if (virJobFinishCancel(job)) {
            close(fd); /* a partial image is no image */
            unlink(path);
            return;
        }

        /* ... update progress, indicating 1 second of work complete, remove 1
         * second from the ETA, and add 2% of completion state ... */
        virJobUpdateRel(job, 1, -1, 2);
    } while (step < TEST_SAVE_STEPS);

    if (fsync(fd) < 0 || close(fd) < 0) {
        testFailWithErrno(job, "cannot flush save file", path);
        unlink(path);
        return;
    }

    /* ... Inform world we're all done ... */
    virJobFinishSuccess(job);
}

static virJobPtr testDomainSaveJob(virDomainPtr domain, const char *path)
{
    testJobPtr privdata;

    privdata = malloc(sizeof(*privdata));
    if (privdata == NULL)
        return NULL;
    memset(privdata, 0, sizeof(*privdata));
    privdata->type = TEST_JOB_DOMAIN_SAVE;
    privdata->data.save.domidx = domain->idx;
    privdata->data.save.path = strdup(path);
    if (privdata->data.save.path == NULL) {
        free(privdata);
        return NULL;
    }

    /* The proposal passed NULL for freeData (leaving privdata to the worker);
     * here bgjob frees it once the worker has returned, or at once if the
     * job cannot be created. */
    return virJobCreate(domain->conn, domain->conn->driver->jobDriver, testDomainSaveWorker,
                        testJobFree, privdata, VIR_JOB_BOUNDED);
}

/* ---- a client */

static const char *state_name(int state)
{
    switch (state) {
    case VIR_JOB_RUNNING:
        return "running";
    case VIR_JOB_COMPLETE:
        return "complete";
    case VIR_JOB_FAILED:
        return "failed";
    case VIR_JOB_CANCELLED:
        return "cancelled";
    }
    return "?";
}

static void nap_ms(long ms)
{
    const struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* Polls virJobGetInfo until the job is no longer RUNNING, printing progress
 * each time it moved by `every` percent, and stopping early (returning
 * RUNNING) once `stop_at` percent is reached. Returns the state, or -1. */
static int poll_job(const char *what, virJobPtr job, unsigned every, unsigned stop_at)
{
    virJobInfo info;
    unsigned shown = 1000;

    for (;;) {
        if (virJobGetInfo(job, &info) < 0)
            return -1;
        if (shown == 1000 || info.percentComplete >= shown + every ||
            info.state != VIR_JOB_RUNNING) {
            printf("%-9s %-9s %3u%%  running %u s  remaining %2u s\n", what,
                   state_name(info.state), info.percentComplete, info.runningTime,
                   info.remainingTime);
            shown = info.percentComplete;
        }
        if (info.state != VIR_JOB_RUNNING || info.percentComplete >= stop_at)
            return info.state;
        nap_ms(10);
    }
}

static int failures;

#define EXPECT(cond)                                                                      \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "virjob_test_driver: %s:%d: expected %s\n", __FILE__, __LINE__, \
                    #cond);                                                               \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

int main(int argc, char **argv)
{
    struct _virConnect conn = { .driver = &test_driver };
    char dir[256], path[300];
    struct stat st;
    virJobPtr job;
    int state;

    if (argc > 1) {
        snprintf(dir, sizeof(dir), "%s", argv[1]);
    } else {
        snprintf(dir, sizeof(dir), "/tmp/virjob-test-driver.XXXXXX");
        if (mkdtemp(dir) == NULL) {
            perror("mkdtemp");
            return 1;
        }
    }
    for (int i = 0; i < TEST_DOMAINS; i++) {
        conn.domains[i].conn = &conn;
        conn.domains[i].idx = i;
        snprintf(conn.domains[i].name, sizeof(conn.domains[i].name), "vm%d", i + 1);
    }
    printf("virJob test driver (virjob.h with %s types), saving into %s\n",
           VIRJOB_LIBVIRT_TYPES ? "libvirt's" : "its own", dir);

    /* 1. A save to the end. */
    snprintf(path, sizeof(path), "%s/vm1.save", dir);
    job = testDomainSaveJob(&conn.domains[0], path);
    EXPECT(job != NULL);
    if (job != NULL) {
        state = poll_job("save vm1", job, 20, 101);
        EXPECT(state == VIR_JOB_COMPLETE);
        EXPECT(stat(path, &st) == 0 && st.st_size == (off_t)TEST_SAVE_STEPS * TEST_CHUNK);
        EXPECT(virJobGetError(job) == NULL);
        EXPECT(virJobDestroy(job) == 0);
    }

    /* 2. A save cancelled part-way: paused through the bgjob handle (the
     * worker parks at its next virJobUpdateRel), then cancelled, which
     * resumes it so it can see the cancel. A job may still complete after a
     * cancel request (the proposal says so); then its file must be whole. */
    snprintf(path, sizeof(path), "%s/vm2.save", dir);
    job = testDomainSaveJob(&conn.domains[1], path);
    EXPECT(job != NULL);
    if (job != NULL) {
        bgjob_job *bg = virJobGetBgjob(job);
        virJobInfo info;

        state = poll_job("save vm2", job, 10, 20);
        if (state == VIR_JOB_RUNNING && bgjob_job_pause(bg) == BGJOB_RESULT_OK) {
            EXPECT(virJobGetInfo(job, &info) == 0 && info.state == VIR_JOB_RUNNING);
            printf("save vm2  paused at %u%% (bgjob_job_pause on virJobGetBgjob)\n",
                   info.percentComplete);
        }
        EXPECT(virJobCancel(job) == 0);
        printf("save vm2  cancel requested\n");
        state = poll_job("save vm2", job, 100, 101);
        EXPECT(state == VIR_JOB_CANCELLED || state == VIR_JOB_COMPLETE);
        if (state == VIR_JOB_CANCELLED)
            EXPECT(stat(path, &st) != 0 && errno == ENOENT);
        else
            EXPECT(stat(path, &st) == 0 && st.st_size == (off_t)TEST_SAVE_STEPS * TEST_CHUNK);
        EXPECT(bgjob_job_wait(bg, -1, NULL) == BGJOB_RESULT_OK);
        EXPECT(virJobDestroy(job) == 0);
    }

    /* 3. A save that fails: its error is libvirt's virError. */
    snprintf(path, sizeof(path), "%s/no-such-dir/vm3.save", dir);
    job = testDomainSaveJob(&conn.domains[2], path);
    EXPECT(job != NULL);
    if (job != NULL) {
        virErrorPtr err;

        state = poll_job("save vm3", job, 100, 101);
        EXPECT(state == VIR_JOB_FAILED);
        err = virJobGetError(job);
        EXPECT(err != NULL);
        if (err != NULL) {
            printf("save vm3  error: code %d, level %d: %s\n", err->code, err->level,
                   err->message);
            EXPECT(err->code == TEST_ERR_SYSTEM_ERROR);
            EXPECT(strstr(err->message, "no-such-dir/vm3.save") != NULL);
        }
        EXPECT(virJobDestroy(job) == 0);
    }

    snprintf(path, sizeof(path), "%s/vm1.save", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/vm2.save", dir);
    unlink(path);
    if (argc <= 1)
        rmdir(dir);
    if (failures > 0) {
        fprintf(stderr, "virjob_test_driver: %d check(s) failed\n", failures);
        return 1;
    }
    printf("virjob_test_driver: ok\n");
    return 0;
}
