/* A plain poll() main loop driving several bgjob jobs.
 *
 * The shape is QEMU's QIOTask: an operation on a refcounted "source object"
 * (here a domain) runs a blocking function on a worker thread, and its
 * completion callback runs back on the main loop's thread, so the object needs
 * no locking. The job holds a reference on the domain from submit until the
 * completion has run: the reference is taken at submit and dropped by the
 * completion's free function, which bgjob calls exactly once.
 *
 * The program checks what it shows and exits non-zero if anything is off, so
 * `make test` runs it.
 */
#define _POSIX_C_SOURCE 200809L
#include <bgjob.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSAVES 4
#define CANCELLED_SAVE 2

/* ---- a refcounted source object, like a QOM Object ---------------------- */

typedef struct {
    atomic_int refs;
    char name[32];
    int saves_seen; /* touched only on the main thread: no lock */
} domain;

static atomic_int domains_freed;

static domain *domain_new(const char *name)
{
    domain *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    atomic_init(&d->refs, 1);
    snprintf(d->name, sizeof d->name, "%s", name);
    return d;
}

static domain *domain_ref(domain *d)
{
    atomic_fetch_add(&d->refs, 1);
    return d;
}

/* Also the completion's free function: bgjob drops the job's reference. */
static void domain_unref(void *opaque)
{
    domain *d = opaque;
    if (atomic_fetch_sub(&d->refs, 1) == 1) {
        free(d);
        atomic_fetch_add(&domains_freed, 1);
    }
}

/* ---- the blocking operation -------------------------------------------- */

typedef struct {
    int index;
    unsigned blocks;
} save_request;

static int save_worker(void *opaque, bgjob_job *job)
{
    const save_request *req = opaque;
    bgjob_job_set_total(job, req->blocks);
    bgjob_job_set_phase(job, "saving");
    for (unsigned i = 0; i < req->blocks; i++) {
        if (bgjob_job_pause_point(job) == BGJOB_RESULT_CANCELLED) {
            bgjob_job_set_error(job, ECANCELED, "save cancelled by the user");
            return ECANCELED;
        }
        struct timespec block = {0, 2 * 1000 * 1000}; /* 2 ms of "I/O" */
        nanosleep(&block, NULL);
        bgjob_job_add_units(job, 1);
    }
    char *summary = malloc(64);
    if (!summary)
        return ENOMEM;
    snprintf(summary, 64, "save %d wrote %u blocks", req->index, req->blocks);
    bgjob_job_set_result(job, summary, free);
    return 0;
}

/* ---- completion, on the main loop's thread ----------------------------- */

static pthread_t main_thread;
static int completions, completed, cancelled, failures;

static void save_done(void *opaque, bgjob_job *job, int32_t state)
{
    domain *d = opaque;
    if (!pthread_equal(pthread_self(), main_thread)) {
        fprintf(stderr, "completion ran off the main thread\n");
        failures++;
    }
    d->saves_seen++; /* safe without a lock: always this thread */
    completions++;
    if (state == BGJOB_STATE_COMPLETED) {
        void *summary = NULL;
        bgjob_result rc = bgjob_job_get_result(job, &summary);
        if (rc != BGJOB_RESULT_OK || !summary) {
            fprintf(stderr, "  %s: no result (%s)\n", d->name, bgjob_result_str(rc));
            failures++;
            return;
        }
        printf("  %s: %s\n", d->name, (const char *)summary);
        completed++;
    } else {
        char msg[128];
        int32_t code = 0;
        bgjob_job_get_error(job, &code, msg, sizeof msg, NULL);
        printf("  %s: %s (%s, code %d)\n", d->name, bgjob_state_str(state), msg, code);
        if (state == BGJOB_STATE_CANCELLED)
            cancelled++;
        else
            failures++;
    }
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int main(void)
{
    main_thread = pthread_self();
    bgjob_context *ctx;
    int fd;
    if (bgjob_context_create(&ctx) != BGJOB_RESULT_OK || bgjob_context_get_fd(ctx, &fd) != 0) {
        fprintf(stderr, "cannot make a context\n");
        return 1;
    }

    domain *dom = domain_new("vm1");
    bgjob_job *jobs[NSAVES];
    for (int i = 0; i < NSAVES; i++) {
        save_request *req = malloc(sizeof *req);
        if (!req)
            abort();
        req->index = i;
        /* The one the loop cancels is long enough (over an hour) that only
         * the cancel ends it, however late the loop gets to send it. */
        req->blocks = i == CANCELLED_SAVE ? 2000000 : 60 + 20 * (unsigned)i;
        char name[16];
        snprintf(name, sizeof name, "save-%d", i);
        /* The job holds a reference on the domain until its completion ran. */
        bgjob_result rc = bgjob_run_in_thread(ctx, name, save_worker, req, free, save_done,
                                              domain_ref(dom), domain_unref, &jobs[i]);
        if (rc != BGJOB_RESULT_OK) {
            fprintf(stderr, "run_in_thread: %s\n", bgjob_result_str(rc));
            return 1;
        }
    }
    /* The caller drops its own reference at once: the jobs keep the domain. */
    domain_unref(dom);

    long long start = now_ms();
    int wakeups = 0;
    bool cancel_sent = false;
    while (completions < NSAVES) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, 40);
        if (n < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        if (n > 0 && (p.revents & POLLIN)) {
            wakeups++;
            size_t ran = 0;
            bgjob_context_dispatch(ctx, 0, &ran);
        }
        if (!cancel_sent && now_ms() - start > 60) {
            int32_t status;
            bgjob_job_cancel(jobs[CANCELLED_SAVE], &status);
            cancel_sent = true;
        }
        if (now_ms() - start > 20000) {
            fprintf(stderr, "timed out waiting for completions\n");
            return 1;
        }
    }

    for (int i = 0; i < NSAVES; i++)
        if (bgjob_job_destroy(jobs[i]) != BGJOB_RESULT_OK)
            failures++;
    bgjob_context_destroy(ctx);

    printf("%d completions in %d wake-ups: %d completed, %d cancelled; domain freed %d time(s)\n",
           completions, wakeups, completed, cancelled, atomic_load(&domains_freed));
    bool ok = failures == 0 && completed == NSAVES - 1 && cancelled == 1 &&
              atomic_load(&domains_freed) == 1;
    puts(ok ? "poll_loop: ok" : "poll_loop: FAILED");
    return ok ? 0 : 1;
}
