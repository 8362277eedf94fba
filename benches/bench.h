/*
 * bench.h: what every benchmark program shares.
 *
 * Each program measures bgjob and its peers in the same process, interleaved
 * in rounds so drift on a shared machine hits all of them alike, and prints
 * one line per figure:  FIG <name> <value> <unit>. benches/run.py runs the
 * programs several times, free and pinned to one vCPU, takes medians, and
 * writes the table and target/bench/summary.json.
 *
 * `--quick` (or BENCH_QUICK=1) makes every program run a few iterations only:
 * a smoke test that they build and work, not a measurement.
 */
#ifndef BGJOB_BENCH_H
#define BGJOB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True under --quick / BENCH_QUICK=1. Set by bench_init. */
extern bool bench_quick;

/* Parses the command line (--quick). */
void bench_init(int argc, char **argv);

/* `full` normally, `quick` under --quick. */
size_t bench_n(size_t full, size_t quick);

/* CLOCK_MONOTONIC in ns. */
int64_t now_ns(void);

/* Sleeps `us` microseconds. */
void sleep_us(int64_t us);

/* Prints a figure. */
void fig(const char *name, double value, const char *unit);

/* Sorts `v` and prints <name>.p50_us and <name>.p99_us. */
void fig_latency(const char *name, int64_t *v, size_t n);

/* The median of `v` (sorted in place). */
double median_i64(int64_t *v, size_t n);
double median_f64(double *v, size_t n);

/* What a driver's own getinfo reports beside the raw record it copies under
 * its mutex: the active time, read from CLOCK_MONOTONIC at the query (as
 * libvirt's job info computes its elapsed time on each query), and the
 * percent, rate and time left derived from it — what bgjob_job_get_info
 * fills in. The "driver" peers of getinfo and scale do this after the
 * mutex read, so bgjob's snapshot is also compared with the same work done
 * by hand. */
struct derived {
    int64_t elapsed_ms, remaining_ms;
    int32_t percent;
    double rate;
};

struct derived derive(uint64_t current, uint64_t total, int64_t started_ns, int64_t paused_ns);

/* Stops the program with a message when `cond` is false. */
#define BENCH_CHECK(cond)                                                         \
    do {                                                                          \
        if (!(cond))                                                              \
            bench_die(__FILE__, __LINE__, #cond);                                 \
    } while (0)
_Noreturn void bench_die(const char *file, int line, const char *what);

#endif
