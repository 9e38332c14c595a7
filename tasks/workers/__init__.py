"""Task worker processes: a server's tasks run in several processes, so they use every core.

`pool.WorkerPool` (in the server) starts the processes and hands each new task to the least
loaded one; `pool.WorkerRunner` is the TaskRunner the host sees. `process.worker_main` is the
child: an asyncio loop running PipelineRunners. `protocol` holds the messages between them and
`tuning` the per-process GC and allocator settings that suit a pipeline worker.
"""
