"""The task queue under a scan: procrastinate on PostgreSQL, behind the few calls a scan
makes (defer phase-1 batches and phase-2 probe groups, cancel, count, run a worker).

procrastinate claims jobs with ``SELECT ... FOR UPDATE SKIP LOCKED``, retries failed ones,
and records each worker's heartbeat; a job whose worker stopped beating (killed, or its
machine gone) is put back in the queue by whichever worker notices first. Replacing the
engine means writing another class with these methods; :mod:`.work` does not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from procrastinate import App, BaseConnector, PsycopgConnector, RetryStrategy
from procrastinate.job_context import JobContext
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from . import work
from .plan import Pair
from .store import ScanStatus

log = logging.getLogger("mtasts.scan")

QUEUE_PREFIX = "mtasts-scan."
_DEFER_CHUNK = 1000
_SCHEMA_LOCK = 8461_0015  # advisory lock key: two workers starting at once apply it once
_runtime: work.Runtime | None = None  # the worker process's, set by run_worker


def queue_of(scan: str) -> str:
    return f"{QUEUE_PREFIX}{scan}"


def conninfo_of(url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def _current() -> work.Runtime:
    if _runtime is None:
        raise RuntimeError("a scan job ran outside `mtasts scan worker`")
    return _runtime


async def _gather(context: JobContext, scan: str, batch: int) -> None:
    await work.gather_batch(_current(), scan, batch)


async def _probe(context: JobContext, scan: str, pairs: list[list[str]]) -> None:
    await work.probe_group(_current(), scan, [(h, a) for h, a in pairs])


class ProcrastinateEngine:
    def __init__(self, connector: BaseConnector, conninfo: str | None = None) -> None:
        self.conninfo = conninfo
        self.app = App(connector=connector)
        # A job that raised (the database went away mid-job) is retried; a job whose worker
        # died is recovered by the heartbeat check in run_worker. work.py caps both.
        retry = RetryStrategy(max_attempts=3, wait=2)
        self.gather_task = self.app.task(name="mtasts.scan.gather", pass_context=True, retry=retry)(
            _gather
        )
        self.probe_task = self.app.task(name="mtasts.scan.probe", pass_context=True, retry=retry)(
            _probe
        )

    @classmethod
    def for_url(cls, url: str) -> ProcrastinateEngine:
        conninfo = conninfo_of(url)
        return cls(PsycopgConnector(conninfo=conninfo), conninfo)

    def open(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.app.open_async()

    async def ensure_schema(self) -> None:
        """Create procrastinate's tables in the scan database the first time."""
        if self.conninfo is None:
            return  # the in-memory connector needs none
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as db:
            await db.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                cursor = await db.execute("SELECT to_regclass('procrastinate_jobs')")
                row = await cursor.fetchone()
                if row is None or row[0] is None:
                    await db.execute(SchemaManager.get_schema().encode())
            finally:
                await db.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    async def defer_gather(self, scan: str, batches: Iterable[int]) -> int:
        jobs: list[dict[str, Any]] = [{"scan": scan, "batch": b} for b in batches]
        deferrer = self.gather_task.configure(queue=queue_of(scan))
        for start in range(0, len(jobs), _DEFER_CHUNK):
            await deferrer.batch_defer_async(*jobs[start : start + _DEFER_CHUNK])
        return len(jobs)

    async def defer_probes(self, scan: str, groups: list[list[Pair]]) -> None:
        jobs: list[dict[str, Any]] = [
            {"scan": scan, "pairs": [[h, a] for h, a in group]} for group in groups if group
        ]
        deferrer = self.probe_task.configure(queue=queue_of(scan))
        for start in range(0, len(jobs), _DEFER_CHUNK):
            await deferrer.batch_defer_async(*jobs[start : start + _DEFER_CHUNK])

    async def cancel(self, scan: str) -> int:
        """Cancel the scan's jobs not yet started; running ones stop at their next step."""
        cancelled = 0
        manager = self.app.job_manager
        for job in await manager.list_jobs_async(queue=queue_of(scan), status="todo"):
            if job.id is not None and await manager.cancel_job_by_id_async(job.id):
                cancelled += 1
        return cancelled

    async def jobs(self, scan: str | None = None) -> dict[str, int]:
        """Jobs per status (todo, doing, failed, ...) of one scan, or of all scans."""
        totals: dict[str, int] = {}
        for queue in await self.app.job_manager.list_queues_async(
            queue=queue_of(scan) if scan else None
        ):
            if not str(queue["name"]).startswith(QUEUE_PREFIX):
                continue
            for key in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
                totals[key] = totals.get(key, 0) + int(queue.get(key) or 0)
        return totals

    async def recover_stalled(self, stalled_after: float) -> int:
        """Put back the jobs of workers that stopped beating; how many."""
        recovered = 0
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
            if job.queue.startswith(QUEUE_PREFIX):
                log.warning(
                    "scan job %s (%s) was left by a stopped worker: queued again",
                    job.id,
                    job.task_name,
                )
                await manager.retry_job(job)
                recovered += 1
        return recovered

    async def _sweep(self, runtime: work.Runtime) -> None:
        for info in await asyncio.to_thread(runtime.store.scans):
            if info.status is ScanStatus.RUNNING:
                judged = await work.judge_ready(runtime, info)
                if judged:
                    log.warning("scan %s: the sweep judged %d domains", info.name, judged)
                await asyncio.to_thread(runtime.store.finish_if_done, info.id)

    async def run_worker(
        self,
        runtime: work.Runtime,
        concurrency: int,
        once: bool = False,
        stalled_after: float = 30.0,
        signals: bool = True,
        poll: float = 1.0,
    ) -> None:
        """Run jobs until stopped (SIGINT/SIGTERM), or with ``once`` until no scan has a job
        waiting or running anywhere (a killed worker's jobs count until recovered)."""
        global _runtime
        _runtime = runtime
        worker = Worker(
            self.app,
            concurrency=concurrency,
            wait=True,
            fetch_job_polling_interval=poll,
            install_signal_handlers=signals,
            update_heartbeat_interval=max(0.5, stalled_after / 3),
            stalled_worker_timeout=stalled_after,
            delete_jobs="successful",
        )
        running = asyncio.ensure_future(worker.run())  # type: ignore[no-untyped-call]
        idle = 0
        try:
            while not running.done():
                await asyncio.wait([running], timeout=poll)
                if running.done():
                    break
                try:
                    await self.recover_stalled(stalled_after)
                    busy = await self.jobs()
                except Exception as exc:  # the database blinked: the worker itself carries on
                    log.warning("scan worker: checking the queue failed: %s", exc)
                    continue
                idle = idle + 1 if not busy.get("todo") and not busy.get("doing") else 0
                if idle == 2:
                    # Quiet queues: judge any domain a race left gathered with all its probes
                    # in, and mark finished scans done (work.judge_ready's sweep).
                    await self._sweep(runtime)
                    if once:
                        worker.stop()  # type: ignore[no-untyped-call]
            await running
        finally:
            if not running.done():
                worker.stop()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await running
            _runtime = None
