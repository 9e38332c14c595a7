"""The route table: one row per route, used both to register handlers and to write the OpenAPI
document, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from master.api import handlers as h
from master.api import ports

API = "/api/v1"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    summary: str
    tag: str
    # The response body's type (a view dataclass or a list of one); None: no JSON body.
    response: Any = None
    status: int = 200
    job_body: bool = False          # the request body is a job spec (JSON or YAML)
    query: tuple[str, ...] = ()     # query parameters it reads


_TASK_QUERY = ("job", "server", "group", "state")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", h.healthz, "The process is up", "process"),
    Route("GET", "/readyz", h.readyz, "Ready to serve (503 with reasons if not)", "process",
          ports.Readiness),
    Route("GET", "/metrics", h.metrics, "Prometheus metrics", "process"),
    Route("POST", f"{API}/jobs", h.create_job,
          "Submit a job: validate it, store it, split it into tasks", "jobs", h.JobDetail,
          status=201, job_body=True),
    Route("GET", f"{API}/jobs", h.list_jobs, "List jobs", "jobs", list[ports.JobView]),
    Route("GET", f"{API}/jobs/{{job_id}}", h.get_job, "A job with its tasks", "jobs",
          h.JobDetail),
    Route("DELETE", f"{API}/jobs/{{job_id}}", h.delete_job, "Delete a job and stop its tasks",
          "jobs", status=204),
    Route("POST", f"{API}/jobs/{{job_id}}/pause", h.pause_job, "Pause a job (stop its tasks)",
          "jobs", ports.JobView),
    Route("POST", f"{API}/jobs/{{job_id}}/resume", h.resume_job, "Resume a paused job", "jobs",
          ports.JobView),
    Route("GET", f"{API}/tasks", h.list_tasks, "List tasks, filtered", "tasks",
          list[ports.TaskView], query=_TASK_QUERY),
    Route("GET", f"{API}/tasks/{{task_id}}", h.get_task,
          "A task with its history of placements and moves", "tasks", ports.TaskView),
    Route("GET", f"{API}/servers", h.list_servers, "List export servers", "servers",
          list[ports.ServerView]),
    Route("GET", f"{API}/servers/{{server_id}}", h.get_server, "An export server", "servers",
          ports.ServerView),
    Route("POST", f"{API}/servers/{{server_id}}/cordon", h.cordon,
          "Cordon a server: no new tasks go to it", "servers", ports.ServerView),
    Route("POST", f"{API}/servers/{{server_id}}/uncordon", h.uncordon,
          "Put a server back in service: clear its cordon and any drain", "servers",
          ports.ServerView),
    Route("POST", f"{API}/servers/{{server_id}}/drain", h.start_drain,
          "Drain a server: move all its tasks away (throttled handoffs)", "servers",
          ports.DrainProgress, status=202),
    Route("GET", f"{API}/servers/{{server_id}}/drain", h.drain_progress, "Drain progress",
          "servers", ports.DrainProgress),
    Route("GET", f"{API}/placement", h.placement,
          "The placement map: servers with utilisation, tasks (pending ones with reasons)",
          "placement", ports.PlacementView, query=("group",)),
    Route("GET", f"{API}/rebalance/plan", h.rebalance_plan,
          "Dry run: the changes a rebalance round would make now (nothing is changed)",
          "placement", ports.PlanView),
    Route("GET", f"{API}/groups", h.groups, "Isolation groups: capacity and servers wanted",
          "placement", list[ports.GroupView]),
    Route("GET", f"{API}/leader", h.leader, "The leading master and since when", "masters",
          ports.LeaderView),
)


def add_routes(app: web.Application, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
