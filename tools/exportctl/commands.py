"""exportctl's commands: each makes its API calls and returns the text to print.

Rendering is in tools/exportctl/format.py (pure); with --json a read command prints the API's
JSON answer unchanged, so scripts see exactly what the API documents.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tools.exportctl import format as fmt
from tools.exportctl.client import Client, CliError

API = "/api/v1"

Command = Callable[[Client, argparse.Namespace, TextIO], str]


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def _show(args: argparse.Namespace, answer: Any, render: Callable[[Any], str]) -> str:
    return _json(answer) if args.json else render(answer)


def servers(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    answer = client.request("GET", f"{API}/servers")
    return _show(args, answer, lambda a: fmt.servers_table(a, time.time(),
                                                           show_all=args.all))


def tasks(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    query = {"job": args.job, "server": args.server, "group": args.group, "state": args.state}
    return _show(args, client.request("GET", f"{API}/tasks", query=query), fmt.tasks_table)


def placement(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    answer = client.request("GET", f"{API}/placement", query={"group": args.group})
    return _show(args, answer, fmt.placement_map)


def leader(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    answer = client.request("GET", f"{API}/leader")
    return _show(args, answer, lambda a: fmt.leader_text(a, time.time()))


def explain(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    answer = client.request("GET", f"{API}/tasks/{_q(args.task)}")
    return _show(args, answer, lambda a: fmt.explain_task(a, time.time()))


def jobs_submit(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    path = Path(args.file)
    try:
        body = path.read_bytes() if args.file != "-" else _stdin_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}", exit_code=2) from exc
    kind = "application/json" if path.suffix == ".json" else "application/yaml"
    answer = client.request("POST", f"{API}/jobs", body=body, content_type=kind)
    return _show(args, answer, lambda a: (
        f"job {a['job']['spec']['id']} submitted ({a['job']['state']}): "
        f"{len(a['tasks'])} tasks\n{fmt.tasks_table(a['tasks'])}"))


def _stdin_bytes() -> bytes:
    return sys.stdin.buffer.read()


def jobs_list(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    return _show(args, client.request("GET", f"{API}/jobs"), fmt.jobs_table)


def jobs_get(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    answer = client.request("GET", f"{API}/jobs/{_q(args.id)}")
    return _show(args, answer, lambda a: "\n\n".join([
        fmt.jobs_table([a['job']]), f"spec:\n{fmt.spec_text(a['job']['spec'])}",
        *(["\n".join(fmt.table_lines(a["job"]["table"], time.time()))]
          if a["job"].get("table") else []),
        fmt.tasks_table(a['tasks'])]))


def _post_action(collection: str, key: str, action: str, done: str) -> Command:
    """A command that POSTs /{collection}/{args.<key>}/{action} and prints `done`, formatted
    with `name` and the fields of the answer."""

    def command(client: Client, args: argparse.Namespace, out: TextIO) -> str:
        name = getattr(args, key)
        answer = client.request("POST", f"{API}/{collection}/{_q(name)}/{action}")
        return _show(args, answer, lambda a: done.format(name=name, **a))

    return command


jobs_pause = _post_action("jobs", "id", "pause", "job {name} paused (state {state})")
jobs_resume = _post_action("jobs", "id", "resume", "job {name} resumed (state {state})")
cordon = _post_action("servers", "server", "cordon",
                      "server {name} cordoned: no new tasks will be placed on it")
uncordon = _post_action("servers", "server", "uncordon",
                        "server {name} uncordoned: no cordon and no drain, it takes work again")


def jobs_delete(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    client.request("DELETE", f"{API}/jobs/{_q(args.id)}")
    done = f"job {args.id} deleted (its tasks drain and stop; --wait waits for them)"
    if args.wait:
        def left() -> Any:
            return client.request("GET", f"{API}/tasks", query={"job": args.id})

        _follow(args, out, left(), poll=left, done=lambda tasks: not tasks,
                line=lambda tasks: f"job {args.id} deleted: {len(tasks)} tasks stopping",
                late=lambda tasks: f"job {args.id} deleted, but {len(tasks)} of its tasks had "
                                   f"not stopped after {args.timeout:g}s")
        done = f"job {args.id} deleted: every task stopped; it can be submitted again"
    return _json({"deleted": args.id}) if args.json else done


def drain(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    path = f"{API}/servers/{_q(args.server)}/drain"
    progress = client.request("POST", path)
    if not args.wait:
        return _show(args, progress, lambda p: (
            f"draining {p['server']}: {p['tasks_left']} tasks to move; follow with "
            f"exportctl drain {p['server']} --wait"))
    progress = _follow(args, out, progress, poll=lambda: client.request("GET", path),
                       line=fmt.drain_line,
                       done=lambda p: p["tasks_left"] == 0 or not p.get("draining", True),
                       late=lambda p: f"drain of {args.server} not finished after "
                                      f"{args.timeout:g}s: {p['tasks_left']} tasks left")
    if progress["tasks_left"] and not progress.get("draining", True):
        raise CliError(f"the drain of {args.server} ended with {progress['tasks_left']} tasks "
                       "still on it: it was uncordoned, or another process registered as it")
    return _show(args, progress, lambda p: (
        f"{p['server']} is drained: {p['tasks_at_start']} tasks moved; it takes no new work "
        f"until `exportctl uncordon {p['server']}` or until it restarts (not if cordoned)"))


def _follow(args: argparse.Namespace, out: TextIO, answer: Any, *, poll: Callable[[], Any],
            line: Callable[[Any], str], done: Callable[[Any], bool],
            late: Callable[[Any], str]) -> Any:
    """--wait: poll every `args.interval` until `done`, printing `line` when it changes (in
    place on a terminal); a CliError saying `late` after `args.timeout`. Returns the last
    answer."""
    deadline = time.monotonic() + args.timeout
    live = out.isatty() and not args.json
    last = ""
    # Bounded: at most timeout / interval polls (+1), each bounded by the request timeout.
    for _ in range(int(args.timeout / args.interval) + 2):
        text = line(answer)
        if not args.json and text != last:
            out.write(("\r" + text) if live else text + "\n")
            out.flush()
            last = text
        if done(answer):
            break
        if time.monotonic() >= deadline:
            if live:
                out.write("\n")
            raise CliError(f"{late(answer)} (it goes on; run again to keep watching)")
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
        answer = poll()
    if live:
        out.write("\n")
    return answer


def rebalance(client: Client, args: argparse.Namespace, out: TextIO) -> str:
    if not args.dry_run:
        raise CliError("only 'rebalance --dry-run' exists: the leader rebalances by itself "
                       "every round", exit_code=2)
    return _show(args, client.request("GET", f"{API}/rebalance/plan"), fmt.plan_text)
