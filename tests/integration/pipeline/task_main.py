"""Run one pipeline task in its own process, for crash tests: SIGTERM drains, kill -9 crashes.

    python -m tests.integration.pipeline.task_main SPEC.json KAFKA S3_ENDPOINT STATE_DIR
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tasks.factory import TaskEnvironment, build_runner
from tasks.runner import Assignment, task_id
from tasks.spec import job_spec_from_json


async def main(spec_path: str, kafka: str, s3: str, state: str) -> None:
    spec = job_spec_from_json(Path(spec_path).read_bytes())
    env = TaskEnvironment(kafka_bootstrap=kafka, state_dir=Path(state), s3_endpoint=s3,
                          s3_access_key="test", s3_secret_key="test", backoff_base=0.05,
                          backoff_cap=1.0)
    runner = build_runner(env, Assignment(task_id(spec.id, spec.source.topic, 0), 1, spec, 0))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await runner.start()
    print("started", flush=True)
    await stop.wait()
    await runner.stop(drain=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
