"""Route handlers: each reads the request, calls one ControlPlane method, returns its view.

No decisions here beyond parsing: query filters are checked by the pure functions below, bodies
by master/api/body.py and tasks.spec, errors map to HTTP in master/api/errors.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from master.api.body import VALIDATOR, read_body
from master.api.encode import json_response
from master.api.ports import (
    TASK_STATES,
    ControlPlane,
    JobView,
    PlacementView,
    TaskFilter,
    TaskView,
)
from master.api.settings import ApiSettings
from master.metrics import REGISTRY
from tasks.errors import ValidationError

CONTROL = web.AppKey("control", ControlPlane)
SETTINGS = web.AppKey("settings", ApiSettings)

TASK_FILTERS = tuple(f.name for f in dataclasses.fields(TaskFilter))


@dataclass(frozen=True, slots=True)
class JobDetail:
    """A job with its tasks in full: the answer to create and get."""

    job: JobView
    tasks: tuple[TaskView, ...]


def parse_task_filter(query: Mapping[str, str]) -> TaskFilter:
    """?job=&server=&group=&state= -> TaskFilter; unknown parameters and states are 400s."""
    unknown = sorted(set(query) - set(TASK_FILTERS))
    if unknown:
        raise ValidationError(f"unknown filter; use {', '.join(TASK_FILTERS)}",
                              field=f"query.{unknown[0]}")
    state = query.get("state") or None
    if state is not None and state not in TASK_STATES:
        raise ValidationError(f"not a task state; use one of {', '.join(TASK_STATES)}",
                              field="query.state")
    return TaskFilter(job=query.get("job") or None, server=query.get("server") or None,
                      group=query.get("group") or None, state=state)


def only_params(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        hint = f"use {', '.join(allowed)}" if allowed else "this route takes none"
        raise ValidationError(f"unknown query parameter; {hint}", field=f"query.{unknown[0]}")


def filter_placement(view: PlacementView, group: str | None) -> PlacementView:
    """The placement map of one isolation group (all of it for None)."""
    if not group:
        return view
    return PlacementView(
        servers=tuple(s for s in view.servers if s.group == group),
        tasks=tuple(t for t in view.tasks if t.group == group),
        groups=tuple(g for g in view.groups if g.group == group),
    )


def _control(request: web.Request) -> ControlPlane:
    return request.app[CONTROL]


# --- process -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "master": request.app[SETTINGS].master_id})


async def readyz(request: web.Request) -> web.Response:
    readiness = _control(request).readiness()
    return json_response(readiness, status=200 if readiness.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


# --- jobs --------------------------------------------------------------------------------------

async def create_job(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    raw = await read_body(request, settings.max_body_bytes, settings.body_timeout)
    # Off the event loop (it runs the servers' heartbeats too): master/api/body.py
    spec = await request.app[VALIDATOR].job_spec(raw, request.headers.get("Content-Type", ""))
    control = _control(request)
    job = await control.create_job(spec)
    tasks = control.list_tasks(TaskFilter(job=job.spec.id))
    return json_response(JobDetail(job, tuple(tasks)), status=201,
                         headers={"Location": f"/api/v1/jobs/{job.spec.id}"})


async def list_jobs(request: web.Request) -> web.Response:
    only_params(request.query, ())
    return json_response(_control(request).list_jobs())


async def get_job(request: web.Request) -> web.Response:
    control = _control(request)
    job = control.get_job(request.match_info["job_id"])
    return json_response(JobDetail(job, tuple(control.list_tasks(TaskFilter(job=job.spec.id)))))


async def delete_job(request: web.Request) -> web.Response:
    await _control(request).delete_job(request.match_info["job_id"])
    return web.Response(status=204)


async def pause_job(request: web.Request) -> web.Response:
    return json_response(await _control(request).set_job_state(request.match_info["job_id"],
                                                               "paused"))


async def resume_job(request: web.Request) -> web.Response:
    return json_response(await _control(request).set_job_state(request.match_info["job_id"],
                                                               "running"))


# --- tasks -------------------------------------------------------------------------------------

async def list_tasks(request: web.Request) -> web.Response:
    return json_response(_control(request).list_tasks(parse_task_filter(request.query)))


async def get_task(request: web.Request) -> web.Response:
    return json_response(_control(request).get_task(request.match_info["task_id"]))


# --- servers -----------------------------------------------------------------------------------

async def list_servers(request: web.Request) -> web.Response:
    only_params(request.query, ())
    return json_response(_control(request).list_servers())


async def get_server(request: web.Request) -> web.Response:
    return json_response(_control(request).get_server(request.match_info["server_id"]))


async def cordon(request: web.Request) -> web.Response:
    return json_response(await _control(request).set_cordon(request.match_info["server_id"], True))


async def uncordon(request: web.Request) -> web.Response:
    return json_response(await _control(request).set_cordon(request.match_info["server_id"],
                                                            False))


async def start_drain(request: web.Request) -> web.Response:
    return json_response(await _control(request).drain(request.match_info["server_id"]),
                         status=202)


async def drain_progress(request: web.Request) -> web.Response:
    return json_response(_control(request).drain_progress(request.match_info["server_id"]))


# --- placement, groups, leader -------------------------------------------------------------------

async def placement(request: web.Request) -> web.Response:
    only_params(request.query, ("group",))
    return json_response(filter_placement(_control(request).placement(),
                                          request.query.get("group")))


async def rebalance_plan(request: web.Request) -> web.Response:
    only_params(request.query, ())
    return json_response(_control(request).rebalance_dry_run())


async def groups(request: web.Request) -> web.Response:
    only_params(request.query, ())
    return json_response(_control(request).groups())


async def leader(request: web.Request) -> web.Response:
    return json_response(_control(request).leader())
