"""``mtasts scan``: adoption scans of very many domains, spread over workers (issue #15).

Two phases. Phase 1 gathers each domain's DNS and policy (:mod:`.work`, in batches of
domains per job). Phase 2 probes every (MX host, address) pair of the scan once, however
many domains share it, under politeness limits that hold across all workers
(:mod:`.polite`); each domain is then judged by :func:`mtasts.check.judge.judge` from the
shared probe facts. Planning and statistics are pure (:mod:`.plan`, :mod:`.stats`), the
state lives in PostgreSQL (:mod:`.store`), and the task queue is procrastinate behind the
small interface in :mod:`.engine`.
"""
