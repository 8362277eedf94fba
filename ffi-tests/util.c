/*
 * util.c: the helpers declared in util.h.
 */

#include "util.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_MAGIC 0x6a6f6275u /* "jobu" */
#define TOKEN_DEAD 0xdeadbeefu

struct token {
    uint32_t magic;
    struct tracker *t;
};

atomic_long util_total_frees;
atomic_long util_bad_tokens;

int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_us(int64_t us)
{
    struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void sleep_ms(int64_t ms)
{
    sleep_us(ms * 1000);
}

void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
}

void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void gate_wait(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

void tracker_init(struct tracker *t)
{
    memset(t, 0, sizeof(*t));
    t->step = 1;
    atomic_init(&t->runs, 0);
    atomic_init(&t->returns, 0);
    atomic_init(&t->frees, 0);
    atomic_init(&t->free_early, 0);
    atomic_init(&t->saw_cancel, 0);
    atomic_init(&t->calls, 0);
    atomic_init(&t->iterations, 0);
    atomic_init(&t->worker_rc, -1);
    atomic_init(&t->job_seen, NULL);
}

void *ud_new(struct tracker *t)
{
    struct token *tok = malloc(sizeof(*tok));

    if (tok == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    tok->magic = TOKEN_MAGIC;
    tok->t = t;
    return tok;
}

void ud_free(void *userdata)
{
    struct token *tok = userdata;

    if (tok == NULL || tok->magic != TOKEN_MAGIC) {
        atomic_fetch_add(&util_bad_tokens, 1);
        return;
    }
    struct tracker *t = tok->t;
    if (atomic_load(&t->runs) != atomic_load(&t->returns))
        atomic_fetch_add(&t->free_early, 1);
    tok->magic = TOKEN_DEAD;
    free(tok);
    atomic_fetch_add(&util_total_frees, 1);
    /* Last: a case polling for this counter may free the tracker next. */
    atomic_fetch_add(&t->frees, 1);
}

struct tracker *ud_tracker(void *userdata)
{
    struct token *tok = userdata;

    if (tok == NULL || tok->magic != TOKEN_MAGIC) {
        atomic_fetch_add(&util_bad_tokens, 1);
        abort();
    }
    return tok->t;
}

static struct tracker *enter(void *userdata, bgjob_job *job)
{
    struct tracker *t = ud_tracker(userdata);

    atomic_store(&t->job_seen, job);
    atomic_fetch_add(&t->runs, 1);
    return t;
}

/* Records the configured error and finish calls, then leaves with `rc`. */
static int32_t leave(struct tracker *t, bgjob_job *job, int32_t rc)
{
    if (t->err_code != 0)
        bgjob_job_set_error(job, t->err_code, t->err_msg);
    if (t->finish_calls > 1)
        bgjob_job_finish(job, t->first_finish);
    if (t->finish_calls > 0)
        bgjob_job_finish(job, t->finish_status);
    atomic_fetch_add(&t->returns, 1);
    return rc;
}

int32_t worker_return(void *userdata, bgjob_job *job)
{
    struct tracker *t = enter(userdata, job);

    return leave(t, job, t->rc);
}

int32_t worker_gated(void *userdata, bgjob_job *job)
{
    struct tracker *t = enter(userdata, job);

    gate_wait(t->gate);
    if (bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED) {
        atomic_store(&t->saw_cancel, 1);
        if (!t->succeed_on_cancel)
            return leave(t, job, WORKER_CANCELLED_RC);
    }
    return leave(t, job, t->rc);
}

int32_t worker_until_cancel(void *userdata, bgjob_job *job)
{
    struct tracker *t = enter(userdata, job);

    for (;;) {
        atomic_fetch_add(&t->calls, 1);
        bgjob_result r = bgjob_job_pause_point(job);
        atomic_fetch_add(&t->iterations, 1);
        if (r == BGJOB_RESULT_CANCELLED)
            break;
        if (r != BGJOB_RESULT_OK) {
            atomic_store(&t->worker_rc, r);
            return leave(t, job, 1000 + r);
        }
        sleep_us(200);
    }
    atomic_store(&t->saw_cancel, 1);
    return leave(t, job, t->succeed_on_cancel ? t->rc : WORKER_CANCELLED_RC);
}

int32_t worker_progress(void *userdata, bgjob_job *job)
{
    struct tracker *t = enter(userdata, job);

    for (;;) {
        atomic_fetch_add(&t->calls, 1);
        bgjob_result r = bgjob_job_add_units(job, t->step);
        atomic_fetch_add(&t->iterations, 1);
        if (r != BGJOB_RESULT_OK) {
            atomic_store(&t->worker_rc, r);
            return leave(t, job, 1000 + r);
        }
        if (bgjob_job_check_cancel(job) == BGJOB_RESULT_CANCELLED)
            break;
        sleep_us(200);
    }
    atomic_store(&t->saw_cancel, 1);
    return leave(t, job, t->succeed_on_cancel ? t->rc : WORKER_CANCELLED_RC);
}

bgjob_result job_create(struct tracker *t, bgjob_worker_callback worker, uint32_t flags,
                        int32_t job_type, const char *name, bgjob_job **out)
{
    bgjob_job_options o;
    bgjob_result r = bgjob_job_options_init(&o, sizeof o);

    if (r != BGJOB_RESULT_OK)
        return r;
    o.flags = flags;
    o.job_type = job_type;
    o.name = name;
    return bgjob_job_create(&o, worker, ud_new(t), ud_free, out);
}

bool info_of(bgjob_job *job, bgjob_info *info)
{
    memset(info, 0, sizeof(*info));
    info->struct_size = sizeof(*info);
    bgjob_result r = bgjob_job_get_info(job, info);
    if (r != BGJOB_RESULT_OK) {
        tap_diag("bgjob_job_get_info: %s", bgjob_result_str(r));
        return false;
    }
    return true;
}

int32_t state_of(bgjob_job *job)
{
    int32_t s = -1;
    bgjob_result r = bgjob_job_get_state(job, &s);

    if (r != BGJOB_RESULT_OK) {
        tap_diag("bgjob_job_get_state: %s", bgjob_result_str(r));
        return -1;
    }
    return s;
}

int32_t wait_end(bgjob_job *job)
{
    int32_t s = -1;
    bgjob_result r = bgjob_job_wait(job, LONG_MS, &s);

    if (r != BGJOB_RESULT_OK) {
        tap_diag("bgjob_job_wait: %s", bgjob_result_str(r));
        return -1;
    }
    return s;
}

bool poll_int_eq(atomic_int *v, int want)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (atomic_load(v) != want) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

static bool ignores_signal(int pid, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool ignored = false;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long long mask;
        if (sscanf(line, "SigIgn: %llx", &mask) == 1) {
            ignored = (mask >> (sig - 1)) & 1;
            break;
        }
    }
    fclose(f);
    return ignored;
}

bool poll_ignores_signal(int pid, int sig)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (!ignores_signal(pid, sig)) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

static void *bounded_main(void *p)
{
    struct bounded *b = p;

    b->fn(b->arg);
    atomic_store(&b->done, 1);
    return NULL;
}

bool bounded_start(struct bounded *b, pthread_t *th, void *(*fn)(void *), void *arg)
{
    b->fn = fn;
    b->arg = arg;
    atomic_store(&b->done, 0);
    return pthread_create(th, NULL, bounded_main, b) == 0;
}

bool bounded_join(struct bounded *b, pthread_t th, int64_t ms)
{
    int64_t end = now_ms() + ms;

    while (!atomic_load(&b->done) && now_ms() < end)
        sleep_ms(1);
    if (!atomic_load(&b->done)) {
        pthread_detach(th);
        return false;
    }
    pthread_join(th, NULL);
    return true;
}

bool poll_long_ge(atomic_long *v, long want)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (atomic_load(v) < want) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

bool poll_state(bgjob_job *job, int32_t want)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (state_of(job) != want) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

size_t live_jobs(void)
{
    size_t n = 0;
    bgjob_result r = bgjob_list_jobs(NULL, 0, &n);

    if (r != BGJOB_RESULT_OK) {
        tap_diag("bgjob_list_jobs: %s", bgjob_result_str(r));
        return SIZE_MAX;
    }
    return n;
}

bool job_listed(uint64_t id)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        size_t n = 0;
        if (bgjob_list_jobs(NULL, 0, &n) != BGJOB_RESULT_OK)
            return false;
        size_t cap = n + 16;
        bgjob_job_entry *e = calloc(cap, sizeof(*e));
        if (e == NULL)
            abort();
        if (bgjob_list_jobs(e, cap, &n) != BGJOB_RESULT_OK) {
            free(e);
            return false;
        }
        if (n > cap) {
            free(e);
            continue;
        }
        bool found = false;
        for (size_t i = 0; i < n; i++)
            found = found || e[i].id == id;
        free(e);
        return found;
    }
    return false;
}

bool poll_unlisted(uint64_t id)
{
    int64_t deadline = now_ms() + LONG_MS;

    while (job_listed(id)) {
        if (now_ms() > deadline)
            return false;
        sleep_ms(1);
    }
    return true;
}

uint64_t id_of(bgjob_job *job)
{
    uint64_t id = 0;
    bgjob_result r = bgjob_job_get_id(job, &id);

    if (r != BGJOB_RESULT_OK)
        tap_diag("bgjob_job_get_id: %s", bgjob_result_str(r));
    return id;
}

char *read_first_file(const char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        FILE *f = paths[i] != NULL ? fopen(paths[i], "rb") : NULL;
        if (f == NULL)
            continue;
        char *text = NULL;
        size_t size = 0, used = 0, got;
        do {
            if (used + 4096 + 1 > size) {
                size = size * 2 + 4096 + 1;
                text = realloc(text, size);
                if (text == NULL)
                    abort();
            }
            got = fread(text + used, 1, size - used - 1, f);
            used += got;
        } while (got > 0);
        fclose(f);
        text[used] = 0;
        return text;
    }
    return NULL;
}

bool name_listed(const char *name, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

bool in_child(int alarm_s, bool (*body)(void))
{
    bool ok = true;
    int status = 0;
    pid_t pid;
    int64_t deadline;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm((unsigned)alarm_s);
        _exit(body() ? 0 : 1);
    }
    deadline = now_ms() + (int64_t)(alarm_s + 10) * 1000;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ms(1);
    }
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %s %d",
           WIFEXITED(status) ? "exited with" : "killed by signal (hung?)",
           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return ok;
}

static struct rlimit saved_nproc;

bool forbid_threads(void)
{
    bool ok = true;
    struct rlimit r;

    if (geteuid() == 0) {
        CHECK(setgroups(0, NULL) == 0);
        CHECK(setgid(65534) == 0);
        CHECK(setuid(65534) == 0);
        REQUIRE(ok);
    }
    REQUIRE(getrlimit(RLIMIT_NPROC, &saved_nproc) == 0);
    r = saved_nproc;
    /* This process counts already, so a limit of 1 leaves room for no thread. */
    r.rlim_cur = 1;
    REQUIRE(setrlimit(RLIMIT_NPROC, &r) == 0);
    return ok;
}

bool allow_threads(void)
{
    bool ok = true;

    CHECK(setrlimit(RLIMIT_NPROC, &saved_nproc) == 0);
    return ok;
}
