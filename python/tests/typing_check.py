"""Checked by `mypy --strict` (make python-typecheck), never run: a job's result
type follows its worker's return type through `result()`, `await` and `as_completed`."""

from __future__ import annotations

from typing import Any, assert_type  # assert_type: 3.11+; mypy checks this file, Python never imports it

import bgjob


def size(w: bgjob.Worker, path: str) -> int:
    w.set_total(1)
    return len(path)


async def main() -> None:
    job = bgjob.start(size, "/vm/disk.img", name="size")
    assert_type(job, bgjob.Job[int])
    assert_type(await job, int)
    assert_type(job.result(), int)
    assert_type(job.result(timeout=1.0), int)
    assert_type(job.exception(), "BaseException | None")
    for ended in bgjob.as_completed([job], timeout=60):
        assert_type(ended, bgjob.Job[int])
    done, not_done = bgjob.wait([job], return_when=bgjob.FIRST_COMPLETED)
    assert_type(done, "set[bgjob.Job[Any]]")
    with bgjob.Job(size, "/vm/b.img", start=False) as other:
        assert_type(other, bgjob.Job[int])
    status = job.cancel()
    if status:
        assert_type(status, bgjob.CancelStatus)
    for info in job.progress(0.5):
        assert_type(info.percent, "int | None")
