/* bench.c: see bench.h. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool bench_quick;

void bench_init(int argc, char **argv)
{
    const char *env = getenv("BENCH_QUICK");

    bench_quick = env != NULL && strcmp(env, "1") == 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0)
            bench_quick = true;
    setvbuf(stdout, NULL, _IOLBF, 0);
}

size_t bench_n(size_t full, size_t quick)
{
    return bench_quick ? quick : full;
}

int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct derived derive(uint64_t current, uint64_t total, int64_t started_ns, int64_t paused_ns)
{
    int64_t active = now_ns() - started_ns - paused_ns;
    struct derived d = {.elapsed_ms = active / 1000000, .remaining_ms = -1, .percent = -1,
                        .rate = -1.0};

    if (total > 0 && current <= UINT64_MAX / 100)
        d.percent = current >= total ? 100 : (int32_t)(current * 100 / total);
    if (active > 0 && current > 0) {
        d.rate = (double)current * 1e9 / (double)active;
        if (total > current)
            d.remaining_ms = (int64_t)((double)(total - current) / d.rate * 1000.0);
        else
            d.remaining_ms = 0;
    }
    return d;
}

void sleep_us(int64_t us)
{
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void fig(const char *name, double value, const char *unit)
{
    printf("FIG %s %.6g %s\n", name, value, unit);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static int cmp_f64(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

void fig_latency(const char *name, int64_t *v, size_t n)
{
    char buf[128];

    BENCH_CHECK(n > 0);
    qsort(v, n, sizeof *v, cmp_i64);
    snprintf(buf, sizeof buf, "%s.p50", name);
    fig(buf, (double)v[n / 2] / 1e3, "us");
    snprintf(buf, sizeof buf, "%s.p99", name);
    fig(buf, (double)v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1e3, "us");
}

double median_i64(int64_t *v, size_t n)
{
    BENCH_CHECK(n > 0);
    qsort(v, n, sizeof *v, cmp_i64);
    return (double)v[n / 2];
}

double median_f64(double *v, size_t n)
{
    BENCH_CHECK(n > 0);
    qsort(v, n, sizeof *v, cmp_f64);
    return v[n / 2];
}

void bench_die(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: benchmark check failed: %s\n", file, line, what);
    exit(2);
}
