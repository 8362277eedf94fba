/* A host that reaps every child with waitpid(-1) in a loop (as some daemons
 * and GLib-less event loops do), racing bgjob_job_spawn_child.
 *
 * The race is forced, not hoped for: this program defines syscall(3), which
 * the library's calls reach before libc's (an executable's definition comes
 * first in symbol lookup), and makes the spawning thread lose the CPU for
 * 50 ms at the worst moment — right after a process is created, and right
 * before a pidfd is opened for an existing pid. Meanwhile the child runs and
 * exits and the host's reaper takes it. A spawn that then says "could not be
 * started" lies, and a caller that retries runs the program twice. */
#include "tap.h"
#include "util.h"

#include <bgjob.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef long (*syscall_fn)(long, ...);
static syscall_fn real_syscall;
static atomic_bool descheduled; /* delay the spawning thread */
static atomic_int delays;       /* ...how often it was */

long syscall(long n, ...)
{
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    bool slow = atomic_load(&descheduled);
    if (slow && n == SYS_pidfd_open) {
        atomic_fetch_add(&delays, 1);
        sleep_ms(50);
    }
    long r = real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    /* In the parent, once the child exists (the child itself gets 0). */
    if (slow && (n == SYS_clone3 || n == SYS_clone) && r > 0) {
        atomic_fetch_add(&delays, 1);
        sleep_ms(50);
    }
    return r;
}

/* The host: reaps whatever child exits, until told to stop. */
static atomic_bool reaper_stop;
static atomic_int reaped;

static void *reaper(void *arg)
{
    (void)arg;
    while (!atomic_load(&reaper_stop)) {
        int status;
        if (waitpid(-1, &status, WNOHANG) > 0)
            atomic_fetch_add(&reaped, 1);
        else
            sleep_us(200);
    }
    return NULL;
}

#define RUNS 10

struct spawns {
    char file[64];
    atomic_int ok;        /* spawn said OK */
    atomic_int refused;   /* spawn said it could not start the program */
    atomic_int last_err;  /* ...with this errno */
    atomic_int waited;    /* the wait gave a status */
    atomic_int taken;     /* the wait said ECHILD: the host had the status */
    atomic_int other;     /* anything else */
};

static int32_t spawn_worker(void *userdata, bgjob_job *job)
{
    struct spawns *s = userdata;
    char script[128];
    snprintf(script, sizeof script, "echo ran >> %s", s->file);
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    for (int i = 0; i < RUNS; i++) {
        bgjob_child_options o;
        bgjob_child_options_init(&o, sizeof o);
        o.argv = argv;
        int32_t pid = -1;
        errno = 0;
        bgjob_result rc = bgjob_job_spawn_child(job, &o, &pid);
        if (rc != BGJOB_RESULT_OK) {
            atomic_fetch_add(&s->refused, 1);
            atomic_store(&s->last_err, errno);
            continue;
        }
        atomic_fetch_add(&s->ok, 1);
        int32_t status = -1;
        errno = 0;
        rc = bgjob_job_wait_child(job, pid, LONG_MS, &status);
        if (rc == BGJOB_RESULT_OK && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            atomic_fetch_add(&s->waited, 1);
        else if (rc == BGJOB_RESULT_SYSTEM && errno == ECHILD)
            atomic_fetch_add(&s->taken, 1);
        else
            atomic_fetch_add(&s->other, 1);
    }
    return 0;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Every program that ran is reported as started (never SYSTEM, which a caller
 * would retry), and each ran exactly once; its status is the child's, or
 * ECHILD when the host took it. */
static bool test_spawn_never_reports_a_started_child_as_failed(void)
{
    bool ok = true;
    struct spawns s;
    memset(&s, 0, sizeof s);
    snprintf(s.file, sizeof s.file, "/tmp/bgjob-test-host-reaps-%d", (int)getpid());
    unlink(s.file);
    pthread_t host;
    atomic_store(&reaper_stop, false);
    REQUIRE(pthread_create(&host, NULL, reaper, NULL) == 0);
    atomic_store(&descheduled, true);
    bgjob_job *job = NULL;
    bgjob_result rc = bgjob_job_create(NULL, spawn_worker, &s, NULL, &job);
    CHECK_RC(rc, BGJOB_RESULT_OK);
    if (rc == BGJOB_RESULT_OK) {
        CHECK_STATE(wait_end(job), BGJOB_STATE_COMPLETED);
        CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    }
    atomic_store(&descheduled, false);
    atomic_store(&reaper_stop, true);
    pthread_join(host, NULL);
    int ran = count_lines(s.file);
    unlink(s.file);
    tap_diag("%d runs: %d spawned (%d statuses, %d taken by the host), %d refused "
             "(errno %d); %d ran; %d delays; the host reaped %d",
             RUNS, atomic_load(&s.ok), atomic_load(&s.waited), atomic_load(&s.taken),
             atomic_load(&s.refused), atomic_load(&s.last_err), ran, atomic_load(&delays),
             atomic_load(&reaped));
    CHECK(atomic_load(&delays) > 0); /* the interleaving was forced */
    CHECKF(atomic_load(&s.refused) == 0, "%d programs that ran were reported as not started",
           atomic_load(&s.refused));
    CHECK_EQ(atomic_load(&s.ok), RUNS);
    CHECK_EQ(ran, RUNS);
    CHECK_EQ(atomic_load(&s.other), 0);
    CHECK_EQ(atomic_load(&s.waited) + atomic_load(&s.taken), RUNS);
    return ok;
}

int main(void)
{
    /* ISO C has no object-to-function pointer cast; POSIX guarantees this. */
    void *sym = dlsym(RTLD_NEXT, "syscall");
    memcpy(&real_syscall, &sym, sizeof sym);
    if (sym == NULL) {
        fprintf(stderr, "dlsym(syscall): %s\n", dlerror());
        return 1;
    }
    static const struct tap_test tests[] = {
        TAP_TEST(test_spawn_never_reports_a_started_child_as_failed),
    };
    return tap_run(tests, TAP_COUNT(tests));
}
