/*
 * static_link.c: a program linked with libbgjob.a, not the shared library
 * (`make check-static`; not a test_*.c, so the shared-library harness does
 * not build it: there the constructors live in the .so).
 *
 * libbgjob.a is installed beside the .so, and bgjob does two things as it is
 * loaded, in `.init_array` constructors: it registers its fork handlers (the
 * header's "fork() is safe while jobs run") and looks up the vDSO's
 * clock_gettime (until then a progress update reads the clock through
 * libc's). A static link keeps a constructor only if the linker pulled in the
 * object that holds it, so this checks that both are in this program's own
 * `.init_array` (the program is linked with -rdynamic, so dladdr names each
 * entry), then that a job runs, counts its units from its worker's fast path
 * and sees a cancel, and that a fork inside a worker leaves the child clean.
 */

#include "util.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The linker's bounds of this program's .init_array. */
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);

/* Whether an entry of this program's .init_array is a function whose symbol
 * name contains `part`. */
static bool init_array_has(const char *part)
{
    for (void (**f)(void) = __init_array_start; f < __init_array_end; f++) {
        Dl_info info;
        void *addr;
        /* A function's address as dladdr takes it (ISO C has no cast). */
        memcpy(&addr, f, sizeof addr);
        if (dladdr(addr, &info) && info.dli_sname && strstr(info.dli_sname, part))
            return true;
    }
    return false;
}

static size_t init_array_len(void)
{
    void (**start)(void) = __init_array_start, (**end)(void) = __init_array_end;
    return (size_t)(end - start);
}

static bool test_bgjob_constructors_are_linked_in(void)
{
    bool ok = true;

    CHECKF(init_array_len() > 0, "no .init_array at all");
    CHECKF(init_array_has("register_at_load"),
           "the fork handlers' registration (ffi::fork) is not in the program's .init_array");
    CHECKF(init_array_has("RESOLVE_VDSO_AT_LOAD"),
           "the vDSO lookup (sys::clock) is not in the program's .init_array");
    return ok;
}

struct counter {
    struct gate go;
    atomic_int check_rc, point_rc, add_rc, child_ok;
};

static int32_t worker_counts(void *userdata, bgjob_job *job)
{
    struct counter *c = userdata;

    for (int i = 0; i < 1000; i++) {
        bgjob_result rc = bgjob_job_add_units(job, 1);
        if (rc != BGJOB_RESULT_OK) {
            atomic_store(&c->add_rc, rc);
            return 2;
        }
    }
    /* A fork in a worker: the child finds the parent's handle refused. */
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        _exit(bgjob_job_check_cancel(job) == BGJOB_RESULT_INVALID_HANDLE &&
                      bgjob_job_add_units(job, 1) == BGJOB_RESULT_INVALID_HANDLE
                  ? 0
                  : 1);
    }
    int status = 0;
    atomic_store(&c->child_ok, pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                                   WEXITSTATUS(status) == 0);
    gate_wait(&c->go);
    atomic_store(&c->check_rc, bgjob_job_check_cancel(job));
    atomic_store(&c->point_rc, bgjob_job_pause_point(job));
    return 1;
}

static bool test_a_job_runs_counts_and_sees_its_cancel(void)
{
    static struct counter c;
    bool ok = true;
    bgjob_job *job = NULL;
    bgjob_info info;

    memset(&c, 0, sizeof c);
    gate_init(&c.go);
    CHECK_RC(bgjob_job_create(NULL, worker_counts, &c, NULL, &job), BGJOB_RESULT_OK);
    REQUIRE(job != NULL);
    CHECK_RC(bgjob_job_cancel(job, NULL), BGJOB_RESULT_OK);
    gate_open(&c.go);
    CHECK_STATE(wait_end(job), BGJOB_STATE_CANCELLED);
    CHECK_RC(atomic_load(&c.add_rc), BGJOB_RESULT_OK);
    CHECK_RC(atomic_load(&c.check_rc), BGJOB_RESULT_CANCELLED);
    CHECK_RC(atomic_load(&c.point_rc), BGJOB_RESULT_CANCELLED);
    CHECK_EQ(atomic_load(&c.child_ok), 1);
    if (info_of(job, &info)) {
        CHECK_EQ(info.current, 1000);
        CHECK(info.since_progress_ms >= 0);
    }
    CHECK_RC(bgjob_job_destroy(job), BGJOB_RESULT_OK);
    gate_destroy(&c.go);
    return ok;
}

int main(void)
{
    static const struct tap_test tests[] = {
        TAP_TEST(test_bgjob_constructors_are_linked_in),
        TAP_TEST(test_a_job_runs_counts_and_sees_its_cancel),
    };

    return tap_run(tests, TAP_COUNT(tests));
}
