"""QEMU block jobs as bgjob external jobs, from asyncio (docs/qemu.md, docs/python.md).

Starts ``qemu-storage-daemon``, speaks QMP over ``asyncio.open_unix_connection``
and runs three steps, each QEMU block job a bgjob external job (no thread):

1. a mirror paused and resumed (verbs forwarded from the control callable),
   READY seen as bgjob READY (``await job.wait_state_async(State.READY)``),
   completed, PENDING reported by the driver and finalized by the user
   (``Control.FINALIZE`` -> ``job-finalize``: QEMU runs with auto-finalize
   off), the copy checked with ``qemu-img compare``;
2. a mirror cancelled mid-way: CANCELLED, its partial target removed;
3. a one-shot EIO on the target with the stop policy: the job stops PAUSED
   with iostatus FAILED, a resume takes it to READY; the same with ENOSPC
   gives NOSPACE.

Exit 0 when every step behaved, 1 otherwise, 77 (with the reason) when
qemu-storage-daemon, qemu-img or qemu-io is missing. ``--display`` chooses the
progress display: ``tqdm`` or ``rich`` (when importable), ``plain`` (one line
per change), ``auto`` (a bar on a terminal, plain lines otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

import bgjob
from bgjob import Control, ErrorAction, ErrorPolicy, EventKind, IoStatus, State, StatType

SKIP = 77
MIB = 1 << 20
IMAGE_SIZE = 32 * MIB
CMD_TIMEOUT = 5.0
POLL_PERIOD = 0.1  # query-jobs while a job lives (QEMU has no progress event)
TERMINAL = (State.COMPLETED, State.FAILED, State.CANCELLED)


_say: Callable[[str], None] = print


def say(msg: str) -> None:
    """Prints a line (above the progress bars when there are any)."""
    _say(msg)


class StepFailed(Exception):
    pass


class QMPError(Exception):
    """QEMU refused a command (its error class and text)."""


class Disconnected(ConnectionError):
    pass


# ---------------------------------------------------------------- QMP


class QMP:
    """A QMP client: replies matched by id, events queued in arrival order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._next_id = 0
        self._pending: Dict[int, asyncio.Future[Dict[str, Any]]] = {}
        self.events: asyncio.Queue[Optional[Dict[str, Any]]] = asyncio.Queue()
        self.closed = False
        self._task: Optional[asyncio.Task[None]] = None

    @classmethod
    async def connect(cls, path: str, timeout: float) -> QMP:
        if len(path.encode()) > 107:
            raise ValueError(f"socket path longer than 107 bytes (sun_path): {path}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
        q = cls(reader, writer)
        greeting = await asyncio.wait_for(reader.readline(), timeout)
        if "QMP" not in json.loads(greeting or b"{}"):
            raise Disconnected(f"no QMP greeting: {greeting!r}")
        q._task = asyncio.ensure_future(q._read())
        await q.execute("qmp_capabilities")
        return q

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif "event" in msg:
                    self.events.put_nowait(msg)
        except (ConnectionError, ValueError):
            pass
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Disconnected("QMP connection closed"))
            self._pending.clear()
            self.events.put_nowait(None)  # tells the event consumer

    def send(self, cmd: str, args: Optional[Dict[str, Any]] = None) -> asyncio.Future[Dict[str, Any]]:
        """Writes the command and returns the future of its reply (no wait)."""
        fut: asyncio.Future[Dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_exception(Disconnected("QMP connection closed"))
            return fut
        self._next_id += 1
        msg: Dict[str, Any] = {"execute": cmd, "id": self._next_id}
        if args:
            msg["arguments"] = args
        self._pending[self._next_id] = fut
        self._writer.write(json.dumps(msg).encode() + b"\n")
        return fut

    async def execute(self, cmd: str, args: Optional[Dict[str, Any]] = None, timeout: float = CMD_TIMEOUT) -> Any:
        reply = await asyncio.wait_for(self.send(cmd, args), timeout)
        if "error" in reply:
            err = reply["error"]
            raise QMPError(f"{cmd}: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")

    async def close(self) -> None:
        self._writer.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=1.0)


# ---------------------------------------------------------------- the daemon


class Daemon:
    """qemu-storage-daemon in a process group of its own (and, with setpriv,
    killed by the kernel if this process dies); killed and reaped by stop()."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: str) -> None:
        self.proc, self.sock = proc, sock

    @classmethod
    async def start(cls, directory: str) -> Daemon:
        sock = os.path.join(directory, "qmp.sock")
        argv = [
            "qemu-storage-daemon",
            "--chardev", f"socket,path={sock},server=on,wait=off,id=m",
            "--monitor", "chardev=m",
        ]
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        with open(os.path.join(directory, "qsd.log"), "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        return cls(proc, sock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self, sig: int = signal.SIGKILL, timeout: float = 2.0) -> Optional[int]:
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.wait_for(self.proc.wait(), timeout)
        return self.proc.returncode


async def run_cmd(argv: List[str], timeout: float = 10.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]}: timed out after {timeout} s"
    return proc.returncode or 0, out.decode(errors="replace").strip()


# ---------------------------------------------------------------- the glue


class QJob:
    """A QEMU block job and the bgjob external job that stands for it."""

    def __init__(self, name: str, target: str, target_file: Optional[str]) -> None:
        self.name, self.target, self.target_file = name, target, target_file
        self.job: bgjob.Job[None]
        self.qstatus = ""
        self.speed = 0  # the speed QEMU has
        self.ended = False
        self.outcome = ""  # ok, error, cancelled
        self.error = ""
        self.control_threads: List[str] = []
        self.reported = False  # waiting/pending/aborting reported: progress is final


class Driver:
    def __init__(self, daemon: Daemon, qmp: QMP, display: Display) -> None:
        self.daemon, self.qmp, self.display = daemon, qmp, display
        self.loop = asyncio.get_running_loop()
        self.jobs: Dict[str, QJob] = {}
        self.gone = False
        self.tasks: List[asyncio.Task[Any]] = [
            asyncio.ensure_future(self._events()),
            asyncio.ensure_future(self._poll()),
        ]

    # -- bgjob's side ------------------------------------------------------

    def start_mirror(
        self,
        name: str,
        target: str,
        target_file: Optional[str],
        speed: int,
        policy: ErrorPolicy,
        on_event: Callable[[bgjob.Job[None], bgjob.Event], Any],
    ) -> bgjob.Job[None]:
        qj = QJob(name, target, target_file)
        qj.job = bgjob.Job(
            None,
            external=True,
            start=False,
            name=name,
            operation="mirror",
            owner=f"qemu-storage-daemon pid {self.daemon.pid}",
            stats={
                "bytes": (StatType.U64, "bytes"),
                "total_bytes": (StatType.U64, "bytes"),
                "speed": (StatType.U64, "bytes/s"),
                "qemu_status": StatType.STRING,
            },
            error_policy=policy,
            manual_finalize=True,  # QEMU's auto-finalize is off: finalize is forwarded
            on_event=on_event,
            control=lambda job, what, arg: self._on_control(qj, what, arg),
            context=bgjob.loop_context(self.loop),
        )
        self.jobs[name] = qj
        qj.speed = speed
        qj.job.speed = speed  # bgjob's speed is QEMU's: the SET_SPEED control is not forwarded
        # bgjob's side first: QEMU's created/running come before its reply.
        qj.job.start()
        args = {
            "job-id": name, "device": "src", "target": target, "sync": "full", "speed": speed,
            "on-target-error": policy.name.lower(), "auto-finalize": False, "auto-dismiss": False,
            "buf-size": MIB,
        }
        self._spawn(self._start_cmd(qj, "blockdev-mirror", self.qmp.send("blockdev-mirror", args)))
        return qj.job

    async def _start_cmd(self, qj: QJob, cmd: str, reply: Awaitable[Dict[str, Any]]) -> None:
        try:
            r = await asyncio.wait_for(reply, CMD_TIMEOUT)
            err = r.get("error")
        except (Disconnected, asyncio.TimeoutError) as e:
            err = {"desc": str(e)}
        if err:
            self._end(qj, errno.EINVAL, f"{cmd} refused: {err.get('desc')}")

    def _end(self, qj: QJob, code: int, msg: Optional[str]) -> None:
        if not qj.ended:
            qj.ended = True
            qj.job.end(code, msg)

    def _on_control(self, qj: QJob, what: Control, arg: int) -> None:
        # On the verb's thread, no bgjob lock held: never QMP from here,
        # only a hand-over to the loop (which may be this very thread).
        qj.control_threads.append(threading.current_thread().name)
        self.loop.call_soon_threadsafe(self._forward, qj, what, arg)

    def _forward(self, qj: QJob, what: Control, arg: int) -> None:
        if qj.ended or self.gone:
            return
        args: Dict[str, Any] = {"id": qj.name}
        if what == Control.PAUSE:
            cmd = "job-pause"
        elif what == Control.RESUME:
            cmd = "job-resume"
        elif what == Control.COMPLETE:
            cmd = "job-complete"
        elif what == Control.FINALIZE:
            cmd = "job-finalize"
        elif what == Control.CANCEL:
            if qj.qstatus in ("aborting", "concluded", "null"):
                return  # QEMU is already winding it down
            cmd, args = "block-job-cancel", {"device": qj.name, "force": arg != 0}
        elif what == Control.SET_SPEED:
            qj.job.set_stat("speed", arg)
            if arg == qj.speed:
                return  # QEMU has it already (the start command's speed)
            qj.speed = arg
            cmd, args = "block-job-set-speed", {"device": qj.name, "speed": arg}
        else:
            return
        self._spawn(self._ctl_cmd(qj, cmd, args, what))

    async def _ctl_cmd(self, qj: QJob, cmd: str, args: Dict[str, Any], verb: Optional[Control] = None) -> None:
        try:
            await self.qmp.execute(cmd, args)
        except (QMPError, Disconnected, asyncio.TimeoutError) as e:
            if self.gone:  # (while stopping, the daemon's end says it all)
                return
            say(f"    [driver] {qj.name}: {cmd} refused by QEMU: {e}")
            if verb is not None and isinstance(e, QMPError) and not qj.ended:
                # bgjob undoes what the verb set and tells the user.
                qj.job.control_failed(verb, errno.EINVAL, str(e))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        task.add_done_callback(lambda t: self.tasks.remove(t) if t in self.tasks else None)

    # -- QEMU's side -------------------------------------------------------

    async def _events(self) -> None:
        while True:
            ev = await self.qmp.events.get()
            if ev is None:
                await self._daemon_gone()
                return
            try:
                await self._on_event(ev)
            except (QMPError, Disconnected, asyncio.TimeoutError, bgjob.BgjobError) as e:
                say(f"    [driver] handling {ev.get('event')}: {e}")

    async def _on_event(self, ev: Dict[str, Any]) -> None:
        name = ev.get("event", "")
        data = ev.get("data", {})
        qj = self.jobs.get(data.get("id") or data.get("device") or "")
        if qj is None:
            return
        if name == "JOB_STATUS_CHANGE":
            qj.qstatus = status = data.get("status", "?")
            if qj.ended:
                return
            if not qj.reported:  # (from waiting or aborting on, the job's numbers are final)
                qj.job.set_stat("qemu_status", status)
            if status == "ready":
                qj.job.set_ready()
            elif status in ("waiting", "pending", "aborting"):
                await self._report(qj, status)
            elif status == "concluded":
                self._spawn(self._ctl_cmd(qj, "job-dismiss", {"id": qj.name}))
            elif status == "null":
                await self._finish(qj)
            return
        if qj.ended:
            return
        if name == "BLOCK_JOB_READY":
            qj.job.set_ready()
        elif name == "BLOCK_JOB_ERROR" and data.get("action") == "stop":
            # No errno in the event: query-block-jobs' io-status says which.
            for e in await self.qmp.execute("query-block-jobs"):
                if e.get("device") == qj.name:
                    ios = e.get("io-status", "ok")
                    code = errno.ENOSPC if ios == "nospace" else errno.EIO
                    action = qj.job.driver.report_io_error(code, os.strerror(code))
                    say(f"    [driver] {qj.name}: QEMU stopped on a write error, io-status {ios} -> "
                          f"report_io_error({errno.errorcode[code]}): action {action.name}")
                    if action == ErrorAction.REPORT:
                        self._spawn(self._ctl_cmd(qj, "job-cancel", {"id": qj.name}))
        elif name == "BLOCK_JOB_ERROR" and data.get("action") == "ignore":
            qj.job.driver.report_io_error(errno.EIO, "write error (ignored)")
        elif name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
            # (the progress was read when QEMU said waiting or aborting)
            if name == "BLOCK_JOB_CANCELLED":
                qj.outcome = "cancelled"
            elif "error" in data:
                qj.outcome, qj.error = "error", f"mirror: {data['error']}"
            else:
                qj.outcome = "ok"

    async def _report(self, qj: QJob, status: str) -> None:
        """QEMU's waiting, pending, aborting: states bgjob cannot infer. The
        progress is final from the first of them on (bgjob refuses updates
        then): it is read once before."""
        if not qj.reported:
            for e in await self.qmp.execute("query-jobs"):
                if e.get("id") == qj.name:
                    cur, tot = e.get("current-progress", 0), e.get("total-progress", 0)
                    qj.job.driver.set_total(tot)
                    qj.job.driver.set_current(cur)
                    qj.job.set_stats({"bytes": cur, "total_bytes": tot})
            qj.reported = True
        if status == "aborting" and qj.target_file:
            qj.job.driver.phase = "cleaning up"  # the partial target goes at the end
        qj.job.report_state({"waiting": State.WAITING, "pending": State.PENDING}.get(status, State.ABORTING))

    async def _finish(self, qj: QJob) -> None:
        """QEMU dismissed the job: its outcome is final."""
        if qj.outcome == "ok":
            self._end(qj, 0, None)
        elif qj.outcome == "error":
            self._end(qj, errno.ENOSPC if "No space" in qj.error else errno.EIO, qj.error)
        elif qj.outcome == "cancelled":
            if qj.target_file:
                await self.del_node(qj.target)
                os.unlink(qj.target_file)
                say(f"    [driver] {qj.name}: cleaning up: partial target {qj.target} removed")
            self._end(qj, errno.ECANCELED, "cancelled by QEMU (BLOCK_JOB_CANCELLED)")
        else:
            self._end(qj, errno.EIO, "the QEMU job went away without an outcome")

    async def _poll(self) -> None:
        while not self.qmp.closed:
            live = [qj for qj in self.jobs.values() if not qj.ended]
            if live:
                try:
                    reply = await self.qmp.execute("query-jobs")
                except (QMPError, Disconnected, asyncio.TimeoutError):
                    return
                for e in reply:
                    qj = self.jobs.get(e.get("id", ""))
                    if qj is None or qj.ended or qj.reported:
                        continue
                    cur, tot = e.get("current-progress", 0), e.get("total-progress", 0)
                    qj.job.driver.set_total(tot)
                    qj.job.driver.set_current(cur)
                    qj.job.set_stats({"bytes": cur, "total_bytes": tot})
                    self.display.update(qj.job, e.get("status", "?"))
            await asyncio.sleep(POLL_PERIOD)

    async def _daemon_gone(self) -> None:
        if self.gone:
            return
        self.gone = True
        rc = await self.daemon.stop()
        msg = f"qemu-storage-daemon exited (status {rc}): the QEMU job is lost"
        for qj in self.jobs.values():
            self._end(qj, errno.EPIPE, msg)

    # -- nodes and the end ---------------------------------------------------

    async def add_node(self, node: str, path: str, inject_errno: int = 0) -> None:
        """qcow2 `node` over file `node`-file, with a blkdebug `node`-dbg
        between them failing the first data write once when inject_errno."""
        await self.qmp.execute("blockdev-add", {"driver": "file", "node-name": f"{node}-file", "filename": path})
        below = f"{node}-file"
        if inject_errno:
            rule = [{"event": "write_aio", "errno": inject_errno, "once": True}]
            await self.qmp.execute(
                "blockdev-add",
                {"driver": "blkdebug", "node-name": f"{node}-dbg", "image": below, "inject-error": rule},
            )
            below = f"{node}-dbg"
        await self.qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": node, "file": below})

    async def del_node(self, node: str) -> None:
        await self.qmp.execute("blockdev-del", {"node-name": node})
        try:
            await self.qmp.execute("blockdev-del", {"node-name": f"{node}-dbg"})
        except QMPError:
            pass  # no blkdebug layer
        await self.qmp.execute("blockdev-del", {"node-name": f"{node}-file"})

    async def stop(self) -> None:
        """quit, the daemon stopped and reaped, every job ended and closed."""
        if not self.gone:
            self.gone = True
            try:
                await self.qmp.execute("quit", timeout=1.0)
            except (QMPError, Disconnected, asyncio.TimeoutError):
                pass
        await self.daemon.stop(signal.SIGTERM)
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for qj in self.jobs.values():
            self._end(qj, errno.ECANCELED, "the driver stopped")
        await asyncio.sleep(0)  # let the loop's context deliver the last events
        for qj in self.jobs.values():
            qj.job.close()
        await self.qmp.close()


# ---------------------------------------------------------------- progress display


class Display:
    """Plain lines: one per change of a job's progress or QEMU status."""

    def __init__(self) -> None:
        self._last: Dict[str, tuple[int, str]] = {}
        self.write: Callable[[str], None] = print

    def update(self, job: bgjob.Job[None], qstatus: str) -> None:
        info = job.info
        key = (info.current, qstatus)
        if self._last.get(job.name) == key:
            return
        self._last[job.name] = key
        self.show(job, info, qstatus)

    def show(self, job: bgjob.Job[None], info: bgjob.Info, qstatus: str) -> None:
        total = info.total or 0
        pct = "" if info.percent is None else f"{info.percent:3d}%"
        print(f"    {job.name:<4} {qstatus:<9} bgjob {info.state:<8} {info.current / MIB:5.1f} / "
              f"{total / MIB:.1f} MiB {pct}  bytes={job.stats()['bytes']}")

    def done(self, job: bgjob.Job[None]) -> None:
        self._last.pop(job.name, None)

    def close(self) -> None:
        pass


class TqdmDisplay(Display):
    def __init__(self) -> None:
        super().__init__()
        from tqdm import tqdm  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self._tqdm = tqdm
        self.write = lambda msg: tqdm.write(msg, file=sys.stdout)
        self._bars: Dict[str, Any] = {}

    def show(self, job: bgjob.Job[None], info: bgjob.Info, qstatus: str) -> None:
        bar = self._bars.get(job.name)
        if bar is None:
            bar = self._bars[job.name] = self._tqdm(
                total=info.total or 0, unit="B", unit_scale=True, unit_divisor=1024, desc=f"    {job.name}",
                file=sys.stdout, leave=True, dynamic_ncols=True,
            )
        bar.total = info.total or 0
        bar.set_postfix_str(f"{qstatus} / bgjob {info.state}", refresh=False)
        bar.update(info.current - bar.n)

    def done(self, job: bgjob.Job[None]) -> None:
        super().done(job)
        bar = self._bars.pop(job.name, None)
        if bar is not None:
            info = job.info
            bar.set_postfix_str(f"bgjob {info.state}", refresh=False)
            bar.update(info.current - bar.n)
            bar.close()

    def close(self) -> None:
        for name in list(self._bars):
            self._bars.pop(name).close()


class RichDisplay(Display):
    def __init__(self) -> None:
        super().__init__()
        from rich.progress import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
        )

        self._progress = Progress(
            TextColumn("    {task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TextColumn("{task.fields[status]}"),
        )
        self._progress.start()
        console = self._progress.console
        self.write = lambda msg: console.print(msg, markup=False, highlight=False, soft_wrap=True)
        self._tasks: Dict[str, Any] = {}

    def show(self, job: bgjob.Job[None], info: bgjob.Info, qstatus: str) -> None:
        status = f"{qstatus} / bgjob {info.state}"
        task = self._tasks.get(job.name)
        if task is None:
            task = self._tasks[job.name] = self._progress.add_task(job.name, total=info.total, status=status)
        self._progress.update(task, total=info.total, completed=info.current, status=status)

    def done(self, job: bgjob.Job[None]) -> None:
        super().done(job)
        task = self._tasks.pop(job.name, None)
        if task is not None:
            info = job.info
            self._progress.update(task, total=info.total, completed=info.current, status=f"bgjob {info.state}")

    def close(self) -> None:
        self._progress.stop()


def make_display(kind: str) -> Display:
    def importable(mod: str) -> bool:
        try:
            __import__(mod)
            return True
        except ImportError:
            return False

    if kind == "auto":
        if not sys.stdout.isatty():
            return Display()
        kind = "rich" if importable("rich") else "tqdm" if importable("tqdm") else "plain"
    if kind == "rich" and importable("rich"):
        return RichDisplay()
    if kind == "tqdm" and importable("tqdm"):
        return TqdmDisplay()
    if kind not in ("plain", "rich", "tqdm"):
        raise SystemExit(f"unknown display {kind!r}")
    if kind != "plain":
        say(f"({kind} is not importable: plain lines)")
    return Display()


# ---------------------------------------------------------------- the steps


class Run:
    def __init__(self, drv: Driver, directory: str) -> None:
        self.drv, self.dir = drv, directory
        self.seq: List[str] = []

    def path(self, node: str) -> str:
        return os.path.join(self.dir, f"{node}.qcow2")

    def on_event(self, job: bgjob.Job[None], ev: bgjob.Event) -> None:
        if ev.kind == EventKind.STATE_CHANGED:
            self.seq.append(f"{job.name}:{ev.new_state}")
        elif ev.kind == EventKind.IO_ERROR:
            code = errno.errorcode.get(ev.error_code, str(ev.error_code))
            self.seq.append(f"{job.name}:IO_ERROR({code},{ev.action.name.lower() if ev.action else '?'})")
        elif ev.kind == EventKind.READY:
            self.seq.append(f"{job.name}:READY")
        elif ev.kind == EventKind.CONTROL_FAILED:
            self.seq.append(f"{job.name}:CONTROL_FAILED({ev.error_code})")
        elif ev.kind == EventKind.END:
            self.seq.append(f"{job.name}:END")
            self.drv.display.done(job)

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline or self.drv.gone:
                raise StepFailed(f"never happened within {timeout} s: {what}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the loop's context delivers the change's events

    def check(self, cond: bool, what: str) -> None:
        if not cond:
            raise StepFailed(what)

    async def target(self, node: str, inject_errno: int = 0) -> None:
        rc, out = await run_cmd(["qemu-img", "create", "-q", "-f", "qcow2", self.path(node), str(IMAGE_SIZE)])
        self.check(rc == 0, f"qemu-img create {node}: {out}")
        await self.drv.add_node(node, self.path(node), inject_errno)

    async def finalize_when_pending(self, job: bgjob.Job[None]) -> None:
        """QEMU runs the jobs with auto-finalize off: once the driver reports
        PENDING, the user's finalize is forwarded (``job-finalize``)."""
        state = await job.wait_state_async(State.PENDING, timeout=8)
        self.check(state == State.PENDING, f"{job.name} ended {state} before PENDING")
        job.finalize()
        say(f"    {job.name:<4} PENDING -> finalize (Control.FINALIZE -> job-finalize)")

    async def step1_mirror(self) -> None:
        await self.target("t1")
        job = self.drv.start_mirror("m1", "t1", None, 8 * MIB, ErrorPolicy.REPORT, self.on_event)
        await self.until(lambda: job.info.current > 1 * MIB, "m1 past 1 MiB")
        threads = []
        for t in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{t}/comm") as f:
                threads.append(f.read().strip())
        named = [t for t in threads if t == "m1"]
        say(f"    threads while m1 runs: {len(threads)} ({', '.join(threads)}), named after the job: {len(named)}")
        self.check(not named, "a thread is named after the job")
        job.pause()  # control PAUSE on this (the loop's) thread -> job-pause
        qj = self.drv.jobs["m1"]
        await self.until(lambda: qj.qstatus == "paused", "QEMU paused m1")
        await asyncio.sleep(0.2)
        c1 = job.info.current
        await asyncio.sleep(0.4)
        c2 = job.info.current
        say(f"    m1   paused (bgjob {job.state}) at {c1 / MIB:.1f} MiB, {c2 / MIB:.1f} MiB 400 ms later")
        self.check(job.state == State.PAUSED and c1 == c2, "m1 moved while paused")
        job.resume()
        await self.until(lambda: job.info.current > 8 * MIB, "m1 past 8 MiB")
        job.speed = 0
        say("    m1   speed 0 (unlimited) -> block-job-set-speed")
        self.check(await job.wait_state_async(State.READY, timeout=8) == State.READY, "m1 READY")
        job.complete()
        await self.finalize_when_pending(job)
        await self.until(lambda: job.done(), "m1 ended")
        info = job.info
        self.check(info.state == State.COMPLETED, f"m1 ended {info.state}")
        self.check(info.current == IMAGE_SIZE == info.total, f"m1 progress {info.current}/{info.total}")
        say(f"    m1   COMPLETED, QEMU job {qj.qstatus}; control calls on: {sorted(set(qj.control_threads))}")
        await self.drv.del_node("t1")  # closes (flushes) the copy
        rc, out = await run_cmd(
            ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", self.path("src"), self.path("t1")]
        )
        say(f"    qemu-img compare: {out}")
        os.unlink(self.path("t1"))
        self.check(rc == 0, f"qemu-img compare: exit {rc}")

    async def step2_cancel(self) -> None:
        await self.target("t2")
        job = self.drv.start_mirror("m2", "t2", self.path("t2"), 4 * MIB, ErrorPolicy.REPORT, self.on_event)
        await self.until(lambda: job.info.current > 2 * MIB, "m2 past 2 MiB")
        job.cancel()
        await self.until(lambda: job.done(), "m2 ended")
        info = job.info
        left = os.path.exists(self.path("t2"))
        say(f"    m2   {info.state} (cause {info.cancel_cause}) at {info.current / MIB:.1f} / "
              f"{(info.total or 0) / MIB:.1f} MiB, last phase {info.phase!r}, target file {'left' if left else 'removed'}")
        self.check(info.state == State.CANCELLED and info.cancel_cause == bgjob.CancelCause.CALLER, "m2 not CANCELLED")
        self.check(info.phase == "cleaning up" and not left, "m2 partial target not removed")

    async def error_stop(self, name: str, node: str, code: int, want: IoStatus) -> None:
        await self.target(node, code)
        job = self.drv.start_mirror(name, node, self.path(node), 0, ErrorPolicy.STOP, self.on_event)
        qj = self.drv.jobs[name]
        await self.until(lambda: job.state == State.PAUSED, f"{name} stopped")
        await self.until(lambda: qj.qstatus == "paused", f"QEMU paused {name}")
        info = job.info
        say(f"    {name:<4} stopped: bgjob {info.state}, iostatus {info.iostatus.name}, "
              f"pause_requested {info.pause_requested}, QEMU {qj.qstatus}")
        self.check(info.iostatus == want and info.pause_requested, f"{name} iostatus {info.iostatus}")
        try:
            job.pause()
            refused = "accepted"
        except bgjob.NotAllowed:
            refused = "NotAllowed"
        say(f"    {name:<4} pause while stopped: {refused} (one user pause, as QEMU's 'already paused')")
        self.check(refused == "NotAllowed", f"{name}: second pause accepted")
        job.resume()
        self.check(job.info.iostatus == IoStatus.OK, f"{name}: iostatus not reset by resume")
        self.check(await job.wait_state_async(State.READY, timeout=8) == State.READY, f"{name} READY")
        say(f"    {name:<4} resumed -> READY")
        if code == errno.ENOSPC:
            job.cancel(soft=True)  # block-job-cancel force=false: completes, no pivot
            await self.finalize_when_pending(job)
            await self.until(lambda: job.done(), f"{name} ended")
            say(f"    {name:<4} soft cancel at READY -> {job.state} (no pivot)")
            self.check(job.state == State.COMPLETED, f"{name} soft cancel")
            await self.drv.del_node(node)
            os.unlink(self.path(node))
        else:
            job.cancel()
            await self.until(lambda: job.done(), f"{name} ended")
            say(f"    {name:<4} cancel at READY -> {job.state}, target file "
                  f"{'left' if os.path.exists(self.path(node)) else 'removed'}")
            self.check(job.state == State.CANCELLED, f"{name} cancel")


async def amain(args: argparse.Namespace) -> int:
    missing = [t for t in ("qemu-storage-daemon", "qemu-img", "qemu-io") if shutil.which(t) is None]
    if missing:
        say(f"SKIPPED: {', '.join(missing)} not found (Debian: apt-get install qemu-utils)")
        return SKIP
    t0 = time.monotonic()
    display = make_display(args.display)
    global _say
    _say = display.write
    directory = tempfile.mkdtemp(prefix="qbj.", dir="/tmp")  # short: sun_path is 108 bytes
    daemon: Optional[Daemon] = None
    drv: Optional[Driver] = None
    failed: List[str] = []
    try:
        src = os.path.join(directory, "src.qcow2")
        for argv in (
            ["qemu-img", "create", "-q", "-f", "qcow2", src, str(IMAGE_SIZE)],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", src],
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 16M 4M", src],
        ):
            rc, out = await run_cmd(argv)
            if rc != 0:
                say(f"setup: {' '.join(argv)}: {out}")
                return 1
        daemon = await Daemon.start(directory)
        try:
            qmp = await QMP.connect(daemon.sock, 5.0)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            with open(os.path.join(directory, "qsd.log"), errors="replace") as f:
                say(f"setup: QMP: {e}; daemon log: {f.read()[-300:]}")
            return 1
        drv = Driver(daemon, qmp, display)
        await drv.add_node("src", src)
        say(f"setup: source image {IMAGE_SIZE // MIB} MiB (12 MiB data), daemon pid {daemon.pid}, "
              f"{time.monotonic() - t0:.2f} s")
        run = Run(drv, directory)
        steps: List[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("1 mirror: pause/resume, READY, complete, compare", run.step1_mirror),
            ("2 mirror cancelled mid-way", run.step2_cancel),
            ("3 EIO with the stop policy", lambda: run.error_stop("m3", "t3", errno.EIO, IoStatus.FAILED)),
            ("3b ENOSPC with the stop policy", lambda: run.error_stop("m3b", "t3b", errno.ENOSPC, IoStatus.NOSPACE)),
        ]
        for title, fn in steps:
            say(f"step {title}")
            run.seq.clear()
            ts = time.monotonic()
            try:
                await fn()
                verdict = "ok"
            except (StepFailed, QMPError, Disconnected, asyncio.TimeoutError, bgjob.BgjobError) as e:
                verdict = f"FAILED: {e}"
                failed.append(title)
            await asyncio.sleep(0.01)  # the last events through the loop's context
            say(f"  bgjob events: {' '.join(run.seq)}")
            say(f"  {title}: {verdict} in {time.monotonic() - ts:.2f} s")
            if drv.gone:
                break
    finally:
        if drv is not None:
            await drv.stop()
        elif daemon is not None:
            await daemon.stop()
        display.close()
        _say = print
        shutil.rmtree(directory, ignore_errors=True)
    gone = daemon is None or not os.path.exists(f"/proc/{daemon.pid}")
    status = "ok" if not failed and gone else "FAILED"
    say(f"qemu_blockjobs.py: {status} ({len(failed)} failed step(s)), {time.monotonic() - t0:.2f} s, "
          f"no daemon left: {'yes' if gone else 'NO'}")
    return 0 if status == "ok" else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--display", choices=("auto", "plain", "tqdm", "rich"), default="auto")
    args = ap.parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(amain(args))
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)  # the finally blocks stop the daemon
    try:
        return loop.run_until_complete(task)
    except (KeyboardInterrupt, asyncio.CancelledError):
        task.cancel()
        try:
            loop.run_until_complete(task)
        except BaseException:
            pass
        say("qemu_blockjobs.py: interrupted")
        return 130
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
