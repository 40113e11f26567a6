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
import signal
from collections.abc import Iterable
from typing import Any

from procrastinate import App, BaseConnector, PsycopgConnector, RetryStrategy
from procrastinate.job_context import JobContext
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from . import work
from .plan import ProbeJob, probe_jobs
from .store import ScanStatus

log = logging.getLogger("mtasts.scan")

# Two queues shared by every scan (the scan's name travels in each job's arguments): a
# worker runs phase 1 and phase 2 in two procrastinate workers of their own sizes, since a
# phase-1 job is a batch of domains resolved at once and a phase-2 job is one connection.
GATHER_QUEUE = "mtasts-scan.gather"
PROBE_QUEUE = "mtasts-scan.probe"
QUEUES = (GATHER_QUEUE, PROBE_QUEUE)
PROBE_LOCK_PREFIX = "mtasts-scan-probe:"
_DEFER_CHUNK = 1000
_SCHEMA_LOCK = 8461_0015  # advisory lock key: two workers starting at once apply it once
_RECOVERY_LOCK = 8461_0016  # advisory lock key: one worker recovers stalled jobs at a time
_runtime: work.Runtime | None = None  # the worker process's, set by run_worker


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
        # A job that raised (the database went away, or it outlived work.py's deadline) is
        # retried; a job whose worker died is recovered by the heartbeat check in
        # run_worker. work.py counts attempts per domain and pair and gives up after its cap.
        retry = RetryStrategy(max_attempts=3, wait=2)
        self.gather_task = self.app.task(
            name="mtasts.scan.gather", queue=GATHER_QUEUE, pass_context=True, retry=retry
        )(_gather)
        self.probe_task = self.app.task(
            name="mtasts.scan.probe", queue=PROBE_QUEUE, pass_context=True, retry=retry
        )(_probe)

    @classmethod
    def for_url(cls, url: str) -> ProcrastinateEngine:
        conninfo = conninfo_of(url)
        return cls(PsycopgConnector(conninfo=conninfo), conninfo)

    def open(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.app.open_async()

    async def _sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        assert self.conninfo is not None
        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as db:
            cursor = await db.execute(query.encode(), params)
            return await cursor.fetchall()

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
        deferrer = self.gather_task.configure()
        for start in range(0, len(jobs), _DEFER_CHUNK):
            await deferrer.batch_defer_async(*jobs[start : start + _DEFER_CHUNK])
        return len(jobs)

    async def defer_probes(self, scan: str, jobs: list[ProbeJob]) -> None:
        """Queue phase-2 jobs, each under the lock named by its key: procrastinate never
        starts a job while another with its lock runs, whichever worker holds it. The lock
        is not per scan, so two scans running at once share an address's slots too."""
        deferrer = self.probe_task.configure()
        made = [
            deferrer.make_new_job(scan=scan, pairs=[[h, a] for h, a in job.pairs]).evolve(
                lock=f"{PROBE_LOCK_PREFIX}{job.key}"
            )
            for job in jobs
            if job.pairs
        ]
        for start in range(0, len(made), _DEFER_CHUNK):
            await self.app.job_manager.batch_defer_jobs_async(made[start : start + _DEFER_CHUNK])

    async def _todo_of(self, scan: str) -> list[int]:
        manager = self.app.job_manager
        found = []
        for queue in QUEUES:
            for job in await manager.list_jobs_async(queue=queue, status="todo"):
                if job.task_kwargs.get("scan") == scan and job.id is not None:
                    found.append(job.id)
        return found

    async def cancel(self, scan: str) -> int:
        """Cancel the scan's jobs not yet started; running ones stop at their next step."""
        cancelled = 0
        for job_id in await self._todo_of(scan):
            if await self.app.job_manager.cancel_job_by_id_async(job_id):
                cancelled += 1
        return cancelled

    async def jobs(self, scan: str | None = None) -> dict[str, int]:
        """Jobs per status (todo, doing, failed, ...) of one scan, or of all scans."""
        totals: dict[str, int] = {}
        if scan is not None and self.conninfo is not None:
            # One count in the database rather than every job row over the wire.
            rows = await self._sql(
                "SELECT status::text, count(*) FROM procrastinate_jobs"
                " WHERE queue_name = ANY(%s) AND args->>'scan' = %s GROUP BY 1",
                list(QUEUES),
                scan,
            )
            return {str(status): int(n) for status, n in rows}
        if scan is not None:
            for queue in QUEUES:
                for job in await self.app.job_manager.list_jobs_async(queue=queue):
                    if job.task_kwargs.get("scan") == scan and job.status is not None:
                        totals[job.status] = totals.get(job.status, 0) + 1
            return totals
        for counts in await self.app.job_manager.list_queues_async():
            if str(counts["name"]) not in QUEUES:
                continue
            for key in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
                totals[key] = totals.get(key, 0) + int(counts.get(key) or 0)
        return totals

    async def recover_stalled(self, stalled_after: float) -> int:
        """Put back the jobs of workers that stopped beating; how many.

        One worker at a time (a PostgreSQL advisory lock): two workers recovering the same
        list at once would put a job back twice, the second time after a live worker had
        taken it, and two workers would then run it together, over its address's limit."""
        if self.conninfo is None:
            return await self._recover(stalled_after)
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as db:
            cursor = await db.execute("SELECT pg_try_advisory_lock(%s)", (_RECOVERY_LOCK,))
            row = await cursor.fetchone()
            if row is None or not row[0]:
                return 0  # another worker is recovering
            try:
                return await self._recover(stalled_after)
            finally:
                await db.execute("SELECT pg_advisory_unlock(%s)", (_RECOVERY_LOCK,))

    async def _recover(self, stalled_after: float) -> int:
        recovered = 0
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
            if job.queue in QUEUES:
                log.warning(
                    "scan job %s (%s) was left by a stopped worker: queued again",
                    job.id,
                    job.task_name,
                )
                await manager.retry_job(job)
                recovered += 1
        return recovered

    async def _sweep(self, runtime: work.Runtime) -> int:
        """With every queue quiet: judge what a race left gathered with its probes in,
        queue again what no job holds any more, and mark finished scans done. Returns the
        number of jobs queued again.

        Work is orphaned when its job cannot bring it back: a worker killed (or a phase-1
        job timed out) between storing a batch's new pairs and queueing their probes, or a
        job procrastinate gave up on after its retries. Queued again, it meets the attempt
        caps of work.py, so a batch that keeps failing ends as "gave up", not in a loop."""
        queued = 0
        for info in await asyncio.to_thread(runtime.store.scans):
            if info.status is not ScanStatus.RUNNING:
                continue
            judged = await work.judge_ready(runtime, info)
            if judged:
                log.warning("scan %s: the sweep judged %d domains", info.name, judged)
            batches = await asyncio.to_thread(runtime.store.pending_batches, info.id)
            pairs = await asyncio.to_thread(runtime.store.pending_pairs, info.id)
            if batches or pairs:
                options = work.ScanOptions.from_dict(info.options)
                jobs = probe_jobs(pairs, options.probe_group, options.limits.per_address)
                await self.defer_gather(info.name, batches)
                await self.defer_probes(info.name, jobs)
                queued += len(batches) + len(jobs)
                log.warning(
                    "scan %s: %d batches and %d probes had no job left: queued again",
                    info.name,
                    len(batches),
                    len(pairs),
                )
            await asyncio.to_thread(runtime.store.finish_if_done, info.id)
        return queued

    async def run_worker(
        self,
        runtime: work.Runtime,
        concurrency: int,
        once: bool = False,
        stalled_after: float = 30.0,
        signals: bool = True,
        poll: float = 1.0,
        batches: int = 2,
    ) -> None:
        """Run up to ``concurrency`` probe jobs and ``batches`` phase-1 jobs at once until
        stopped (SIGINT/SIGTERM), or with ``once`` until no scan has a job waiting or
        running anywhere (a killed worker's jobs count until recovered)."""
        global _runtime
        _runtime = runtime
        workers = [
            Worker(
                self.app,
                queues=[queue],
                concurrency=size,
                wait=True,
                fetch_job_polling_interval=poll,
                install_signal_handlers=False,
                update_heartbeat_interval=max(0.5, stalled_after / 3),
                stalled_worker_timeout=stalled_after,
                delete_jobs="successful",
            )
            for queue, size in ((GATHER_QUEUE, batches), (PROBE_QUEUE, concurrency))
        ]

        def stop() -> None:
            for worker in workers:
                worker.stop()  # type: ignore[no-untyped-call]

        loop = asyncio.get_running_loop()
        if signals:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(number, stop)
        running = [asyncio.ensure_future(w.run()) for w in workers]  # type: ignore[no-untyped-call]
        idle = 0
        next_recovery = loop.time()
        try:
            while not all(r.done() for r in running):
                await asyncio.wait(running, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                if any(r.done() for r in running):
                    stop()  # one stopped (a signal, or it failed): the other goes too
                    break
                try:
                    await work.judge_probed(runtime)
                    if loop.time() >= next_recovery:
                        next_recovery = loop.time() + max(poll, stalled_after / 3)
                        await self.recover_stalled(stalled_after)
                    busy = await self.jobs()
                except Exception as exc:  # the database blinked: the workers carry on
                    log.warning("scan worker: checking the queue failed: %s", exc)
                    continue
                idle = idle + 1 if not busy.get("todo") and not busy.get("doing") else 0
                if idle == 2:
                    # Quiet queues: judge what a race left, queue again what no job holds,
                    # mark finished scans done; exit (--once) only when nothing was queued.
                    try:
                        queued = await self._sweep(runtime)
                    except Exception as exc:  # as above: try again at the next quiet tick
                        log.warning("scan worker: the sweep failed: %s", exc)
                        idle = 0
                        continue
                    if queued:
                        idle = 0
                    elif once:
                        stop()
            for done in await asyncio.gather(*running, return_exceptions=True):
                if isinstance(done, BaseException):
                    raise done
            await work.judge_probed(runtime)  # what the last jobs completed
        finally:
            stop()
            for task in running:
                if not task.done():
                    with contextlib.suppress(Exception):
                        await task
            if signals:
                for number in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(number)
            _runtime = None
