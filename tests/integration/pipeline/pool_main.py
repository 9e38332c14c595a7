"""A stand-in server for tests: a WorkerPool running one file-sink task, until killed.

    python -m tests.integration.pipeline.pool_main KAFKA TOPIC WORKDIR

Writes the worker's pid to WORKDIR/worker.pid once the task runs; exits by itself after
LIFETIME_S (a test kills it long before).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tasks.runner import Assignment, task_id
from tasks.workers.pool import WorkerPool, WorkerRunner
from tests.integration.pipeline.kit import environment, job

LIFETIME_S = 120.0


async def main(kafka: str, topic: str, workdir: Path) -> None:
    pool = WorkerPool(environment(kafka, workdir), 1, log_json=False)
    pool.start()
    spec = job(topic, {"type": "file", "directory": str(workdir / "out")})
    runner = pool.factory(Assignment(task_id(spec.id, topic, 0), 1, spec, 0))
    await runner.start()
    assert isinstance(runner, WorkerRunner) and runner.worker is not None
    (workdir / "worker.pid").write_text(str(runner.worker.process.pid))
    await asyncio.sleep(LIFETIME_S)
    await runner.stop(drain=False)
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
