"""What a job and a task are and do: specs and validation, job -> task split, the pipeline.

Knows nothing of masters or servers: a task runs the same in a test harness as on a server.
This package is also the bottom layer of our own code (imports point one way), so the pieces
every process shares live here: the exception root (`tasks.errors`), settings loading
(`tasks.settings`) and logging setup (`tasks.logs`).
"""
