/*
 * qmp: a small QMP (QEMU Machine Protocol) client over a unix socket, for the
 * qemu_blockjobs example.
 *
 * The socket is non-blocking. A program with its own poll loop watches
 * qmp_fd() for POLLIN and calls qmp_process() when it is readable; the
 * messages read are sorted into replies (kept by their "id" until
 * qmp_take_reply) and events (queued in arrival order for qmp_next_event).
 * Events that arrive while a reply is awaited are never lost: they wait in the
 * queue. The synchronous helpers (qmp_execute, qmp_wait_event) are the same
 * calls run in a private poll loop, each wait bounded by a timeout.
 *
 * Every call that fails returns a negative QMP_E* code and leaves a message for
 * qmp_error(). Once the daemon has gone (end of file, EPIPE, ECONNRESET) every
 * later call returns QMP_EDISCONNECTED.
 *
 * Not thread-safe: one thread (the loop's) uses a given connection.
 */
#ifndef QMP_H
#define QMP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    QMP_OK = 0,
    QMP_EIO = -1,           /* a system call failed (errno in the message) */
    QMP_ETIMEDOUT = -2,     /* a bounded wait ran out */
    QMP_EDISCONNECTED = -3, /* the daemon closed the socket or died */
    QMP_ECOMMAND = -4,      /* the daemon answered with an error */
    QMP_EPROTOCOL = -5,     /* something that is not QMP came in */
    QMP_EINVAL = -6,        /* bad argument (path too long, NULL...) */
};

struct qmp;

/* Connects to the QMP socket at path, reads the greeting and negotiates
 * capabilities (qmp_capabilities), all within timeout_ms (-1: no bound).
 * On failure *out is NULL and err (when not NULL) holds the reason. */
int qmp_connect(struct qmp **out, const char *path, int timeout_ms, char *err, size_t errlen);

/* Closes the socket and frees everything queued. NULL is accepted. */
void qmp_close(struct qmp *q);

/* The socket, for a poll loop (POLLIN). */
int qmp_fd(const struct qmp *q);

/* Reads what is readable now without blocking and sorts it into replies and
 * events. Returns QMP_OK (possibly having read nothing), or a QMP_E* code;
 * QMP_EDISCONNECTED once the peer is gone (what was read before is kept). */
int qmp_process(struct qmp *q);

/* Sends {"execute": cmd, "arguments": args, "id": N}. args may be NULL and is
 * always consumed (its reference stolen). *id_out gets N. */
int qmp_send(struct qmp *q, const char *cmd, json_t *args, uint64_t *id_out);

/* The reply with this id, if it came: 1 and *reply_out (a new reference: the
 * whole reply object, with "return" or "error"), 0 when not yet. */
int qmp_take_reply(struct qmp *q, uint64_t id, json_t **reply_out);

/* Any reply that came (the oldest first): 1 with *id_out and *reply_out (a
 * new reference), 0 when none waits. For a loop that keeps a table of the
 * commands it sent. */
int qmp_take_any_reply(struct qmp *q, uint64_t *id_out, json_t **reply_out);

/* The oldest queued event (a new reference) or NULL. */
json_t *qmp_next_event(struct qmp *q);

/* Number of queued events. */
size_t qmp_pending_events(const struct qmp *q);

/* Sends a command and waits (bounded) for its reply, queueing the events that
 * come meanwhile. On success *ret_out (may be NULL) gets the "return" value (a
 * new reference). A daemon error gives QMP_ECOMMAND with its class and text in
 * qmp_error(). */
int qmp_execute(struct qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret_out);

/* Waits up to timeout_ms (-1: no bound) for some event, reading the socket as
 * needed; events already queued come first, even after a disconnect. QMP_OK
 * with *ev_out (a new reference); QMP_ETIMEDOUT; QMP_EDISCONNECTED once the
 * queue is empty and the daemon is gone; another QMP_E* code on an error. */
int qmp_wait_any_event(struct qmp *q, int timeout_ms, json_t **ev_out);

/* The message of the last failure. */
const char *qmp_error(const struct qmp *q);

/* True once the peer has gone. */
bool qmp_disconnected(const struct qmp *q);

/* Milliseconds on the monotonic clock (for deadlines). */
int64_t qmp_now_ms(void);

/* Trace every message sent and received on stderr ("->", "<-"), for
 * recording a sequence. Also switched on by QMP_TRACE=1 at connect. */
void qmp_set_trace(struct qmp *q, bool on);

#endif
