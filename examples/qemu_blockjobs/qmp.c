/* qmp: see qmp.h. */
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct reply {
    uint64_t id;
    json_t *obj;
};

struct qmp {
    int fd;
    bool gone;
    bool trace;
    uint64_t next_id;
    /* Bytes read but not yet a whole line. */
    char *buf;
    size_t len, cap;
    /* Events: a ring grown on demand. */
    json_t **ev;
    size_t ev_head, ev_count, ev_cap;
    /* Replies not yet taken. */
    struct reply *rep;
    size_t rep_count, rep_cap;
    char err[512];
};

int64_t qmp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct qmp *q, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->err, sizeof q->err, fmt, ap);
    va_end(ap);
    return code;
}

static int disconnected(struct qmp *q, const char *how)
{
    q->gone = true;
    return fail(q, QMP_EDISCONNECTED, "QMP: the daemon closed the connection (%s)", how);
}

const char *qmp_error(const struct qmp *q) { return q->err; }
bool qmp_disconnected(const struct qmp *q) { return q->gone; }
int qmp_fd(const struct qmp *q) { return q->fd; }
size_t qmp_pending_events(const struct qmp *q) { return q->ev_count; }
void qmp_set_trace(struct qmp *q, bool on) { q->trace = on; }

static int push_event(struct qmp *q, json_t *obj)
{
    if (q->ev_count == q->ev_cap) {
        size_t cap = q->ev_cap ? q->ev_cap * 2 : 16;
        json_t **n = malloc(cap * sizeof *n);
        if (!n)
            return fail(q, QMP_EIO, "QMP: out of memory queueing an event");
        for (size_t i = 0; i < q->ev_count; i++)
            n[i] = q->ev[(q->ev_head + i) % q->ev_cap];
        free(q->ev);
        q->ev = n;
        q->ev_head = 0;
        q->ev_cap = cap;
    }
    q->ev[(q->ev_head + q->ev_count) % q->ev_cap] = obj;
    q->ev_count++;
    return QMP_OK;
}

json_t *qmp_next_event(struct qmp *q)
{
    if (q->ev_count == 0)
        return NULL;
    json_t *obj = q->ev[q->ev_head];
    q->ev_head = (q->ev_head + 1) % q->ev_cap;
    q->ev_count--;
    return obj;
}

static int push_reply(struct qmp *q, uint64_t id, json_t *obj)
{
    if (q->rep_count == q->rep_cap) {
        size_t cap = q->rep_cap ? q->rep_cap * 2 : 8;
        struct reply *n = realloc(q->rep, cap * sizeof *n);
        if (!n)
            return fail(q, QMP_EIO, "QMP: out of memory keeping a reply");
        q->rep = n;
        q->rep_cap = cap;
    }
    q->rep[q->rep_count++] = (struct reply){id, obj};
    return QMP_OK;
}

int qmp_take_reply(struct qmp *q, uint64_t id, json_t **reply_out)
{
    for (size_t i = 0; i < q->rep_count; i++) {
        if (q->rep[i].id == id) {
            *reply_out = q->rep[i].obj;
            memmove(q->rep + i, q->rep + i + 1, (q->rep_count - i - 1) * sizeof *q->rep);
            q->rep_count--;
            return 1;
        }
    }
    return 0;
}

int qmp_take_any_reply(struct qmp *q, uint64_t *id_out, json_t **reply_out)
{
    if (q->rep_count == 0)
        return 0;
    *id_out = q->rep[0].id;
    *reply_out = q->rep[0].obj;
    memmove(q->rep, q->rep + 1, (q->rep_count - 1) * sizeof *q->rep);
    q->rep_count--;
    return 1;
}

/* One line of QMP: an event, a reply (with our numeric id), or the greeting. */
static int handle_line(struct qmp *q, const char *line, size_t n)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
        n--;
    if (n == 0)
        return QMP_OK;
    if (q->trace)
        fprintf(stderr, "  <- %.*s\n", (int)n, line);
    json_error_t jerr;
    json_t *obj = json_loadb(line, n, 0, &jerr);
    if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        return fail(q, QMP_EPROTOCOL, "QMP: unparsable message (%s): %.80s", jerr.text, line);
    }
    if (json_object_get(obj, "event"))
        return push_event(q, obj);
    if (json_object_get(obj, "QMP")) { /* the greeting: kept as reply id 0 */
        return push_reply(q, 0, obj);
    }
    json_t *id = json_object_get(obj, "id");
    if (json_is_integer(id) && json_integer_value(id) > 0)
        return push_reply(q, (uint64_t)json_integer_value(id), obj);
    /* A reply without our id: the daemon could not parse a command at all. */
    char *text = json_dumps(obj, JSON_COMPACT);
    int rc = fail(q, QMP_EPROTOCOL, "QMP: reply without an id: %.200s", text ? text : "?");
    free(text);
    json_decref(obj);
    return rc;
}

int qmp_process(struct qmp *q)
{
    if (q->gone)
        return fail(q, QMP_EDISCONNECTED, "QMP: the daemon is gone");
    int rc = QMP_OK;
    for (;;) {
        if (q->cap - q->len < 4096) {
            size_t cap = q->cap ? q->cap * 2 : 8192;
            char *n = realloc(q->buf, cap);
            if (!n)
                return fail(q, QMP_EIO, "QMP: out of memory reading");
            q->buf = n;
            q->cap = cap;
        }
        ssize_t r = read(q->fd, q->buf + q->len, q->cap - q->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r < 0 && errno == ECONNRESET) {
            rc = disconnected(q, "connection reset");
            break;
        }
        if (r < 0) {
            return fail(q, QMP_EIO, "QMP: read: %s", strerror(errno));
        }
        if (r == 0) {
            rc = disconnected(q, "end of file");
            break;
        }
        q->len += (size_t)r;
    }
    /* Sort every whole line; keep the rest. */
    size_t start = 0;
    for (size_t i = 0; i < q->len; i++) {
        if (q->buf[i] != '\n')
            continue;
        int lrc = handle_line(q, q->buf + start, i + 1 - start);
        start = i + 1;
        if (lrc != QMP_OK && rc == QMP_OK)
            rc = lrc;
    }
    memmove(q->buf, q->buf + start, q->len - start);
    q->len -= start;
    return rc;
}

/* Waits until the socket is readable (or hung up), up to deadline (ms on the
 * monotonic clock, -1: none), then processes it. */
static int wait_readable(struct qmp *q, int64_t deadline)
{
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - qmp_now_ms();
            if (left <= 0)
                return fail(q, QMP_ETIMEDOUT, "QMP: timed out waiting for the daemon");
            timeout = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail(q, QMP_EIO, "QMP: poll: %s", strerror(errno));
        if (n == 0)
            continue; /* the deadline check above ends it */
        return qmp_process(q);
    }
}

static int write_all(struct qmp *q, const char *data, size_t n, int64_t deadline)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(q->fd, data + done, n - done, MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
            return disconnected(q, errno == EPIPE ? "broken pipe" : "connection reset");
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int timeout = -1;
            if (deadline >= 0) {
                int64_t left = deadline - qmp_now_ms();
                if (left <= 0)
                    return fail(q, QMP_ETIMEDOUT, "QMP: timed out writing to the daemon");
                timeout = (int)left;
            }
            struct pollfd p = {.fd = q->fd, .events = POLLOUT};
            if (poll(&p, 1, timeout) < 0 && errno != EINTR)
                return fail(q, QMP_EIO, "QMP: poll: %s", strerror(errno));
            continue;
        }
        return fail(q, QMP_EIO, "QMP: send: %s", strerror(errno));
    }
    return QMP_OK;
}

/* Writes are small; a full socket buffer is waited on for at most 5 s. */
#define WRITE_TIMEOUT_MS 5000

int qmp_send(struct qmp *q, const char *cmd, json_t *args, uint64_t *id_out)
{
    if (!q || !cmd) {
        json_decref(args);
        return QMP_EINVAL;
    }
    if (q->gone) {
        json_decref(args);
        return fail(q, QMP_EDISCONNECTED, "QMP: the daemon is gone (sending %s)", cmd);
    }
    uint64_t id = ++q->next_id;
    json_t *msg = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
    if (!msg) {
        json_decref(args);
        return fail(q, QMP_EIO, "QMP: out of memory building %s", cmd);
    }
    if (args)
        json_object_set_new(msg, "arguments", args);
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return fail(q, QMP_EIO, "QMP: cannot encode %s", cmd);
    if (q->trace)
        fprintf(stderr, "  -> %s\n", text);
    size_t n = strlen(text);
    int rc = write_all(q, text, n, qmp_now_ms() + WRITE_TIMEOUT_MS);
    if (rc == QMP_OK)
        rc = write_all(q, "\n", 1, qmp_now_ms() + WRITE_TIMEOUT_MS);
    free(text);
    if (rc == QMP_OK && id_out)
        *id_out = id;
    return rc;
}

static int reply_result(struct qmp *q, const char *cmd, json_t *reply, json_t **ret_out)
{
    json_t *error = json_object_get(reply, "error");
    if (error) {
        const char *cls = json_string_value(json_object_get(error, "class"));
        const char *desc = json_string_value(json_object_get(error, "desc"));
        int rc = fail(q, QMP_ECOMMAND, "%s: %s: %s", cmd, cls ? cls : "error", desc ? desc : "(no text)");
        json_decref(reply);
        return rc;
    }
    json_t *ret = json_object_get(reply, "return");
    if (!ret) {
        json_decref(reply);
        return fail(q, QMP_EPROTOCOL, "%s: reply with neither return nor error", cmd);
    }
    if (ret_out)
        *ret_out = json_incref(ret);
    json_decref(reply);
    return QMP_OK;
}

int qmp_execute(struct qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret_out)
{
    if (ret_out)
        *ret_out = NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : qmp_now_ms() + timeout_ms;
    uint64_t id;
    int rc = qmp_send(q, cmd, args, &id);
    if (rc != QMP_OK)
        return rc;
    for (;;) {
        json_t *reply;
        if (qmp_take_reply(q, id, &reply))
            return reply_result(q, cmd, reply, ret_out);
        rc = wait_readable(q, deadline);
        if (rc == QMP_ETIMEDOUT)
            return fail(q, rc, "%s: no reply within %d ms", cmd, timeout_ms);
        if (rc == QMP_EDISCONNECTED) {
            if (qmp_take_reply(q, id, &reply)) /* the reply came before the end */
                return reply_result(q, cmd, reply, ret_out);
            return fail(q, rc, "%s: the daemon closed the connection before replying", cmd);
        }
        if (rc != QMP_OK)
            return rc;
    }
}

int qmp_wait_any_event(struct qmp *q, int timeout_ms, json_t **ev_out)
{
    int64_t deadline = timeout_ms < 0 ? -1 : qmp_now_ms() + timeout_ms;
    for (;;) {
        json_t *ev = qmp_next_event(q);
        if (ev) {
            *ev_out = ev;
            return QMP_OK;
        }
        int rc = wait_readable(q, deadline);
        if (rc != QMP_OK && !(rc == QMP_EDISCONNECTED && q->ev_count > 0))
            return rc;
    }
}

int qmp_connect(struct qmp **out, const char *path, int timeout_ms, char *err, size_t errlen)
{
    *out = NULL;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (!path || strlen(path) >= sizeof addr.sun_path) {
        if (err)
            snprintf(err, errlen, "QMP: socket path too long (at most %zu bytes): %s",
                     sizeof addr.sun_path - 1, path ? path : "(null)");
        return QMP_EINVAL;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    struct qmp *q = calloc(1, sizeof *q);
    if (!q)
        return QMP_EIO;
    const char *tr = getenv("QMP_TRACE");
    q->trace = tr && *tr && strcmp(tr, "0") != 0;
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc;
    if (q->fd < 0) {
        rc = fail(q, QMP_EIO, "QMP: socket: %s", strerror(errno));
        goto out;
    }
    /* A daemon just started may not listen yet: retry ENOENT / ECONNREFUSED
     * within the timeout. */
    int64_t start = qmp_now_ms();
    while (connect(q->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        bool retry = (e == ENOENT || e == ECONNREFUSED || e == EINTR) &&
                     (timeout_ms < 0 || qmp_now_ms() - start < timeout_ms);
        if (!retry) {
            rc = fail(q, QMP_EIO, "QMP: connect %s: %s", path, strerror(e));
            goto out;
        }
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (fcntl(q->fd, F_SETFL, fcntl(q->fd, F_GETFL) | O_NONBLOCK) != 0) {
        rc = fail(q, QMP_EIO, "QMP: fcntl: %s", strerror(errno));
        goto out;
    }
    /* The greeting, then capabilities negotiation (no optional capability). */
    int64_t deadline = timeout_ms < 0 ? -1 : start + timeout_ms;
    json_t *greeting = NULL;
    while (!qmp_take_reply(q, 0, &greeting)) {
        rc = wait_readable(q, deadline);
        if (rc != QMP_OK) {
            if (rc == QMP_ETIMEDOUT)
                fail(q, rc, "QMP: no greeting from %s within %d ms", path, timeout_ms);
            goto out;
        }
    }
    json_decref(greeting);
    int left = timeout_ms < 0 ? -1 : (int)(deadline - qmp_now_ms());
    if (timeout_ms >= 0 && left < 1)
        left = 1;
    rc = qmp_execute(q, "qmp_capabilities", NULL, left, NULL);
out:
    if (rc != QMP_OK) {
        if (err)
            snprintf(err, errlen, "%s", q->err);
        qmp_close(q);
        return rc;
    }
    *out = q;
    return QMP_OK;
}

void qmp_close(struct qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    json_t *ev;
    while ((ev = qmp_next_event(q)))
        json_decref(ev);
    for (size_t i = 0; i < q->rep_count; i++)
        json_decref(q->rep[i].obj);
    free(q->rep);
    free(q->ev);
    free(q->buf);
    free(q);
}
