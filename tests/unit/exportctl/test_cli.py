"""exportctl end to end against the real API app (over an in-memory control plane): commands,
--json, trying a dead master first, tokens, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from master.api.app import create_app
from master.api.settings import ApiSettings
from tests.unit.api.fake_control import FakeControl, free_port, serve
from tools.exportctl.main import run

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "nginx-to-s3.yaml"
SETTINGS = ApiSettings.model_validate(
    {"master_id": "m1", "read_tokens": ["r-token"], "admin_tokens": ["a-token"]})


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    url: str
    control: FakeControl
    env: dict[str, str]

    async def __call__(self, *argv: str, env: Mapping[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        # The CLI blocks (urllib): run it in a thread while this loop serves the app.
        code = await asyncio.to_thread(run, argv, stdout=out, stderr=err,
                                       environ=self.env if env is None else env)
        return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
async def cli() -> AsyncIterator[Cli]:
    control = FakeControl()
    async with serve(create_app(control, SETTINGS)) as url:
        yield Cli(url, control, {"EXPORTD_MASTERS": url, "EXPORTD_TOKEN": "a-token"})


async def test_submit_list_get_pause_resume_delete(cli: Cli) -> None:
    r = await cli("jobs", "submit", "-f", str(EXAMPLE))
    assert r.code == 0, r.err
    assert r.out.startswith("job nginx-to-s3 submitted (running): 3 tasks\nTASK")
    r = await cli("jobs", "list")
    assert "nginx-to-s3  default  running  3      access-logs  s3" in r.out
    r = await cli("jobs", "get", "nginx-to-s3", "--json")
    assert json.loads(r.out)["job"]["spec"]["id"] == "nginx-to-s3"
    assert (await cli("jobs", "pause", "nginx-to-s3")).out == \
        "job nginx-to-s3 paused (state paused)\n"
    assert (await cli("jobs", "resume", "nginx-to-s3")).code == 0
    assert (await cli("jobs", "delete", "nginx-to-s3")).out == \
        "job nginx-to-s3 deleted (its tasks drain and stop; --wait waits for them)\n"
    r = await cli("jobs", "get", "nginx-to-s3")
    assert (r.code, r.out) == (1, "")
    assert r.err == "exportctl: not_found: no job nginx-to-s3 (HTTP 404)\n"


async def test_read_commands_text_and_json(cli: Cli) -> None:
    await cli("jobs", "submit", "-f", str(EXAMPLE))
    r = await cli("servers")
    assert r.code == 0 and r.out.splitlines()[0].split()[:3] == ["SERVER", "GROUP", "STATE"]
    assert json.loads((await cli("servers", "--json")).out)[0]["id"] == "srv-a"
    r = await cli("tasks", "--server", "srv-a")
    assert [line.split()[0] for line in r.out.splitlines()[1:]] == [
        "nginx-to-s3:access-logs:0", "nginx-to-s3:access-logs:2"]
    assert json.loads((await cli("tasks", "--json", "--state", "pending")).out) == []
    r = await cli("placement", "--group", "default")
    assert r.out.startswith("group default:") and "heavy" not in r.out
    assert all(len(line) <= 80 for line in r.out.splitlines())
    assert json.loads((await cli("placement", "--json")).out)["groups"][1]["group"] == "heavy"
    assert (await cli("leader")).out.startswith("leader m1, epoch 7, since")
    r = await cli("explain", "nginx-to-s3:access-logs:1")
    assert "runs on srv-b" in r.out and "placed  srv-b  gen 1" in r.out
    r = await cli("rebalance", "--dry-run")
    assert "1 change(s)" in r.out
    assert json.loads((await cli("rebalance", "--dry-run", "--json")).out)["changes"]


async def test_cordon_and_drain_wait(cli: Cli) -> None:
    await cli("jobs", "submit", "-f", str(EXAMPLE))
    assert (await cli("cordon", "srv-a")).out.startswith("server srv-a cordoned")
    assert (await cli("uncordon", "srv-a")).out == \
        "server srv-a uncordoned: no cordon and no drain, it takes work again\n"
    r = await cli("drain", "srv-a", "--wait", "--interval", "0.05", "--timeout", "60")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "drain srv-a [------------------------------] 0/2 moved, 2 left"
    assert lines[-2] == "drain srv-a [##############################] 2/2 moved, 0 left"
    assert lines[-1].startswith("srv-a is drained: 2 tasks moved; it takes no new work until "
                                "`exportctl uncordon srv-a` or until it restarts")
    assert cli.control.get_server("srv-a").tasks == ()


async def test_drain_wait_times_out(cli: Cli) -> None:
    await cli("jobs", "submit", "-f", str(EXAMPLE))
    cli.control.servers.pop("srv-b")  # nowhere to move to: the drain cannot progress
    r = await cli("drain", "srv-a", "--wait", "--interval", "0.05", "--timeout", "0.2")
    assert r.code == 1
    assert r.err.startswith("exportctl: drain of srv-a not finished after 0.2s: 2 tasks left")


async def test_dead_master_first_then_live(cli: Cli) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    r = await cli("leader", "--master", dead, "--master", cli.url)
    assert r.code == 0 and r.out.startswith("leader m1,")
    r = await cli("--master", dead, "--master", cli.url, "--json", "leader")
    assert r.code == 0 and json.loads(r.out)["id"] == "m1"
    env = {**cli.env, "EXPORTD_MASTERS": f"{dead},{cli.url}"}
    assert (await cli("servers", env=env)).code == 0
    r = await cli("servers", "--master", dead)
    assert r.code == 1
    assert r.err == f"exportctl: no master answered: {dead} (connection refused)\n"


async def test_tokens_and_exit_codes(cli: Cli) -> None:
    read_only = {**cli.env, "EXPORTD_TOKEN": "r-token"}
    assert (await cli("servers", env=read_only)).code == 0
    r = await cli("cordon", "srv-a", env=read_only)
    assert r.code == 1
    assert r.err == ("exportctl: forbidden: this token may only read; writes need an admin "
                     "token (HTTP 403)\n")
    r = await cli("servers", env={"EXPORTD_MASTERS": cli.url})
    assert r.code == 1 and "unauthorized" in r.err and "401" in r.err


async def test_validation_error_is_one_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nsource: {topic: t, batch_size: -1}\nsink: {type: s3, bucket: abc}\n"
                   "colour: red\n")
    r = await cli("jobs", "submit", "-f", str(bad))
    assert r.code == 1
    lines = r.err.splitlines()
    assert lines[0] == "exportctl: invalid: 2 problems (HTTP 400):"
    assert lines[1] == "  source.batch_size: Input should be greater than 0"
    assert lines[2].startswith("  colour: ")
    assert len(lines) == 3
    assert cli.control.jobs == {}
    # --json: the API's answer with every problem, on stdout.
    r = await cli("jobs", "submit", "-f", str(bad), "--json")
    assert r.code == 1
    body = json.loads(r.out)
    assert [p["field"] for p in body["details"]["problems"]] == ["source.batch_size", "colour"]


async def test_missing_token_names_the_variable(cli: Cli) -> None:
    r = await cli("servers", env={"EXPORTD_MASTERS": cli.url})
    assert r.code == 1
    assert "EXPORTD_TOKEN" in r.err and "(HTTP 401)" in r.err and r.err.count("\n") == 1


async def test_jobs_get_shows_the_spec(cli: Cli) -> None:
    await cli("jobs", "submit", "-f", str(EXAMPLE))
    r = await cli("jobs", "get", "nginx-to-s3")
    assert r.code == 0, r.err
    spec = r.out.split("spec:\n", 1)[1]
    assert "  id: nginx-to-s3" in spec and "  source:" in spec and "    topic: access-logs" in spec


@pytest.mark.parametrize("argv", [
    ("bogus",), ("jobs",), ("jobs", "submit"), ("drain",), ("rebalance",),
    ("drain", "s", "--timeout", "-1"), ("jobs", "submit", "-f", "/nonexistent/job.yaml"),
])
async def test_usage_errors_exit_2(cli: Cli, argv: tuple[str, ...]) -> None:
    r = await cli(*argv)
    assert r.code == 2, r
    assert r.out == ""
    assert r.err.startswith("exportctl") and r.err.count("\n") == 1
    assert cli.control.writes == 0


def test_as_a_process_errors_are_one_line_without_traceback() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "tools.exportctl.main", "servers", "--master", dead],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "EXPORTD_MASTERS": "", "EXPORTD_TOKEN": ""}, check=False)
    assert done.returncode == 1
    assert done.stderr == f"exportctl: no master answered: {dead} (connection refused)\n"
    assert done.stdout == ""


async def test_a_standby_view_is_flagged(cli: Cli) -> None:
    """No leader answers: the standby answers from ZooKeeper, and exportctl says so (stderr, so
    --json output stays the API's answer)."""
    standby = FakeControl(leads=False, master_id="m2")
    standby.has_leader = False
    async with serve(create_app(standby, SETTINGS.model_copy(update={"master_id": "m2"}))) \
            as url:
        r = await cli("tasks", "--master", url)
        assert r.code == 0, r.err
        assert r.err == ("exportctl: no leader answered; this is a standby's view from "
                         "ZooKeeper (no task states or loads; histories as the leader last "
                         "wrote them)\n")
        r = await cli("--json", "tasks", "--master", url)
        assert json.loads(r.out) == [] and "standby's view" in r.err
    assert (await cli("tasks")).err == ""   # the leader's answer: no note
