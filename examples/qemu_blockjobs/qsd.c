/* qsd: see qsd.h. */
#include "qsd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Daemons started and not yet reaped, for the exit and signal handlers. */
#define MAX_DAEMONS 8
static volatile sig_atomic_t live_pids[MAX_DAEMONS];

static void track(pid_t pid)
{
    for (int i = 0; i < MAX_DAEMONS; i++) {
        if (live_pids[i] == 0) {
            live_pids[i] = pid;
            return;
        }
    }
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < MAX_DAEMONS; i++)
        if (live_pids[i] == pid)
            live_pids[i] = 0;
}

/* Async-signal-safe: kill() only. */
static void kill_all(void)
{
    for (int i = 0; i < MAX_DAEMONS; i++) {
        pid_t pid = live_pids[i];
        if (pid > 0) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
    }
}

static void (*volatile exit_hook)(void);

void qsd_set_exit_hook(void (*hook)(void)) { exit_hook = hook; }

static void at_exit(void)
{
    kill_all();
    for (int i = 0; i < MAX_DAEMONS; i++) {
        pid_t pid = live_pids[i];
        if (pid > 0) {
            waitpid(pid, NULL, 0); /* SIGKILLed: returns at once */
            live_pids[i] = 0;
        }
    }
    if (exit_hook)
        exit_hook();
}

static void on_signal(int sig)
{
    kill_all();
    if (exit_hook)
        exit_hook();
    signal(sig, SIG_DFL);
    raise(sig);
}

void qsd_install_cleanup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    atexit(at_exit);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

bool have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n + strlen(name) + 2 < sizeof buf) {
            memcpy(buf, path, n);
            buf[n] = '/';
            strcpy(buf + n + 1, name);
            if (access(buf, X_OK) == 0)
                return true;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return false;
}

bool qsd_pid_alive(pid_t pid)
{
    if (pid <= 0)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[512];
    bool alive = false;
    if (fgets(line, sizeof line, f)) {
        const char *close_paren = strrchr(line, ')');
        alive = close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z';
    }
    fclose(f);
    return alive;
}

/* The tail of a log file, for error messages. */
static void log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)outlen - 1 ? size - (off_t)outlen + 1 : 0;
    ssize_t n = pread(fd, out, outlen - 1, from);
    close(fd);
    out[n > 0 ? n : 0] = 0;
    for (char *p = out; *p; p++)
        if (*p == '\n' && p[1])
            *p = ' ';
}

bool qsd_reap(struct qsd *d)
{
    if (d->pid <= 0)
        return true;
    int st;
    pid_t r = waitpid(d->pid, &st, WNOHANG);
    if (r == d->pid || (r < 0 && errno == ECHILD)) {
        untrack(d->pid);
        d->status = r == d->pid ? st : 0;
        d->pid = 0;
        return true;
    }
    return false;
}

int qsd_stop(struct qsd *d, int sig, int timeout_ms)
{
    if (d->pid <= 0)
        return 0;
    kill(-d->pid, sig);
    kill(d->pid, sig);
    int64_t deadline = now_ms() + timeout_ms;
    while (!qsd_reap(d)) {
        if (now_ms() >= deadline) {
            kill(-d->pid, SIGKILL);
            kill(d->pid, SIGKILL);
            int st;
            if (waitpid(d->pid, &st, 0) == d->pid)
                d->status = st;
            untrack(d->pid);
            d->pid = 0;
            return -1;
        }
        sleep_ms(5);
    }
    return 0;
}

/* fork + exec with the child in its own process group and PR_SET_PDEATHSIG;
 * output to the file out_path (or /dev/null). */
static pid_t spawn(char *const argv[], const char *out_path, int *exec_errno)
{
    int pipefd[2]; /* reports an exec failure's errno to the parent */
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) /* the parent died before prctl */
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execvp(argv[0], argv);
        int e = errno;
        ssize_t w = write(pipefd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(pipefd[1]);
    int e = 0;
    ssize_t r;
    do
        r = read(pipefd[0], &e, sizeof e);
    while (r < 0 && errno == EINTR);
    close(pipefd[0]);
    *exec_errno = r == (ssize_t)sizeof e ? e : 0;
    return pid;
}

int qsd_start(struct qsd *d, const char *dir, int timeout_ms, char *err, size_t errlen)
{
    qsd_install_cleanup();
    memset(d, 0, sizeof *d);
    if ((size_t)snprintf(d->sock, sizeof d->sock, "%s/qmp.sock", dir) >= sizeof d->sock) {
        snprintf(err, errlen, "socket path too long (at most %zu bytes): %s/qmp.sock",
                 sizeof d->sock - 1, dir);
        return -1;
    }
    snprintf(d->log, sizeof d->log, "%s/qsd.log", dir);
    unlink(d->sock);
    char chardev[200];
    snprintf(chardev, sizeof chardev, "socket,path=%s,server=on,wait=off,id=m", d->sock);
    char *argv[] = {"qemu-storage-daemon", "--chardev", chardev, "--monitor", "chardev=m", NULL};
    int exec_errno = 0;
    pid_t pid = spawn(argv, d->log, &exec_errno);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    track(pid);
    d->pid = pid;
    if (exec_errno) {
        qsd_stop(d, SIGKILL, 1000);
        snprintf(err, errlen, "cannot run qemu-storage-daemon: %s", strerror(exec_errno));
        return -1;
    }
    /* Ready when the socket accepts a connection (a probe, closed at once). */
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (qsd_reap(d)) {
            char tail[300];
            log_tail(d->log, tail, sizeof tail);
            snprintf(err, errlen, "qemu-storage-daemon exited at start (status 0x%x): %s", d->status, tail);
            return -1;
        }
        struct stat st;
        if (stat(d->sock, &st) == 0 && S_ISSOCK(st.st_mode))
            return 0; /* the monitor listens once the socket exists */
        if (now_ms() >= deadline) {
            qsd_stop(d, SIGKILL, 1000);
            snprintf(err, errlen, "qemu-storage-daemon: no QMP socket %s within %d ms", d->sock, timeout_ms);
            return -1;
        }
        sleep_ms(5);
    }
}

int run_cmd(char *const argv[], int timeout_ms, char *out, size_t outlen, char *err, size_t errlen)
{
    char tmp[] = "/tmp/qbj-out.XXXXXX";
    int tfd = -1;
    if (out) {
        tfd = mkstemp(tmp);
        if (tfd < 0) {
            snprintf(err, errlen, "mkstemp: %s", strerror(errno));
            return -1;
        }
    }
    int exec_errno = 0;
    pid_t pid = spawn(argv, out ? tmp : NULL, &exec_errno);
    int rc = -1;
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto done;
    }
    int64_t deadline = now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (now_ms() >= deadline) {
            kill(-pid, SIGKILL);
            waitpid(pid, &st, 0);
            snprintf(err, errlen, "%s: timed out after %d ms (killed)", argv[0], timeout_ms);
            goto done;
        }
        sleep_ms(5);
    }
    if (exec_errno) {
        snprintf(err, errlen, "cannot run %s: %s", argv[0], strerror(exec_errno));
        goto done;
    }
    if (WIFSIGNALED(st)) {
        snprintf(err, errlen, "%s: killed by signal %d", argv[0], WTERMSIG(st));
        goto done;
    }
    rc = WEXITSTATUS(st);
    if (out) {
        log_tail(tmp, out, outlen);
    }
done:
    if (tfd >= 0) {
        close(tfd);
        unlink(tmp);
    }
    return rc;
}

#define SCRATCH_FILES 24
static char scratch_dir[64];
static char scratch[SCRATCH_FILES][128];

void qsd_scratch_remove(void)
{
    for (int i = 0; i < SCRATCH_FILES; i++)
        if (scratch[i][0])
            unlink(scratch[i]);
    if (scratch_dir[0])
        rmdir(scratch_dir);
}

int qsd_scratch_open(const char *prog, char *dir, size_t dirlen, const char *const *images)
{
    const char *need[] = {"qemu-storage-daemon", "qemu-img", "qemu-io", NULL};
    for (int i = 0; need[i]; i++) {
        if (!have_program(need[i])) {
            printf("%s: SKIPPED: %s is not installed (Debian: apt-get install qemu-utils)\n", prog, need[i]);
            return 77;
        }
    }
    qsd_install_cleanup();
    snprintf(scratch_dir, sizeof scratch_dir, "/tmp/qbj.XXXXXX");
    if (!mkdtemp(scratch_dir)) {
        perror("mkdtemp");
        scratch_dir[0] = '\0';
        return 1;
    }
    snprintf(dir, dirlen, "%s", scratch_dir);
    int n = 0;
    for (int i = 0; images[i] && n < SCRATCH_FILES - 2; i++)
        snprintf(scratch[n++], sizeof scratch[0], "%s/%s.qcow2", scratch_dir, images[i]);
    snprintf(scratch[n++], sizeof scratch[0], "%s/qmp.sock", scratch_dir);
    snprintf(scratch[n++], sizeof scratch[0], "%s/qsd.log", scratch_dir);
    qsd_set_exit_hook(qsd_scratch_remove);
    return 0;
}

void trail_add(char *buf, size_t size, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 2 >= size)
        return;
    if (n > 0)
        buf[n++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, size - n, fmt, ap);
    va_end(ap);
}
