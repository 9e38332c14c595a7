"""Pure text rendering for exportctl: tables, utilisation bars, the placement map, a task's
story. Inputs are the API's JSON (dicts); outputs are strings that fit an 80-column terminal.
No I/O here, so every function is unit-tested on plain data.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

Json = Mapping[str, Any]

WIDTH = 80


def bar(fraction: float | None, width: int = 10) -> str:
    """`[####------]`; past 100 % the bar is full and ends in `!`."""
    if fraction is None or fraction != fraction:  # unknown or NaN
        return "[" + "?" * width + "]"
    filled = max(0, min(width, round(fraction * width)))
    if fraction > 1.0:
        return "[" + "#" * (width - 1) + "!]"
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def percent(fraction: float | None) -> str:
    return "  ?%" if fraction is None else f"{round(fraction * 100):3d}%"


def meter(fraction: float | None, width: int = 10) -> str:
    return f"{bar(fraction, width)} {percent(fraction)}"


def ellipsize(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def clock(unix: float | None) -> str:
    if unix is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))


def rate(value: float, unit: str = "B/s") -> str:
    for prefix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, width: int = WIDTH,
          squeeze: int = 0) -> str:
    """Left-aligned columns, two spaces apart. If the table is wider than `width`, column
    `squeeze` (the one with ids, usually) is cut with an ellipsis to make it fit."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    total = sum(widths) + 2 * (len(widths) - 1)
    if total > width:
        widths[squeeze] = max(len(headers[squeeze]), widths[squeeze] - (total - width))
    lines = []
    for row in cells:
        fitted = [ellipsize(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(fitted).rstrip())
    return "\n".join(lines)


def server_state(server: Json) -> str:
    """dead, or ok, or what keeps new work away: `draining` (tasks still on it), `drained`
    (empty; takes no work until `uncordon` or until the process is replaced), `cordoned`
    (until `uncordon`), joined with `+`."""
    if not server.get("alive", True):
        return "dead"
    parts: list[str] = []
    if server.get("draining"):
        parts.append("draining" if server.get("tasks") else "drained")
    if server.get("cordoned"):
        parts.append("cordoned")
    return "+".join(parts) or "ok"


# A dead server that holds nothing and has not reported for this long leaves `servers`
# (`--all` shows it).
DEAD_HIDDEN_AFTER_S = 600.0


def aged_out(server: Json, now: float) -> bool:
    """Dead, holding no task, silent for DEAD_HIDDEN_AFTER_S (or never reported)."""
    last = server.get("last_report_unix")
    return (not server.get("alive", True) and not server.get("tasks")
            and (last is None or now - last > DEAD_HIDDEN_AFTER_S))


def task_count(server: Json) -> str:
    """Tasks held, and against the server's task cap when it has one: `3/8`."""
    held = len(server.get("tasks", ()))
    cap = server.get("max_tasks")
    return f"{held}/{cap}" if cap else str(held)


def servers_table(servers: Sequence[Json], now: float, *, show_all: bool = False) -> str:
    shown = [s for s in servers if show_all or not aged_out(s, now)]
    hidden = len(servers) - len(shown)
    notes: list[str] = []
    if hidden:
        notes.append(f"{hidden} dead server(s) silent for over {DEAD_HIDDEN_AFTER_S / 60:g} "
                     "min not shown (--all shows them)")
    if any(server_state(s).startswith("drained") for s in shown):
        notes.append("drained: takes no new work until `exportctl uncordon <server>`, or "
                     "until its process is replaced (a restart); cordoned: until uncordon")
    if not shown:
        return "\n".join(["no servers registered", *notes])
    rows = [(s["id"], s["group"], server_state(s), meter(s.get("cpu_utilisation"), 8),
             meter(s.get("net_utilisation"), 8), task_count(s),
             ago(s.get("last_report_unix"), now)) for s in shown]
    head = table(("SERVER", "GROUP", "STATE", "CPU", "NET", "TASKS", "REPORT"), rows)
    return "\n".join([head, *(textwrap.fill(n, WIDTH) for n in notes)])


def span(seconds: float | None) -> str:
    """A duration, short: `-` when unknown (negative), else `45s`, `12m`, `3h`, `2d`."""
    if seconds is None or seconds < 0:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def tasks_table(tasks: Sequence[Json]) -> str:
    """One row per task; COMMIT is the age of its last commit (`explain` adds the age of the
    oldest record read and not committed). Stalled tasks get their reason below the table."""
    if not tasks:
        return "no tasks"
    rows = [(t["id"], t["group"], t.get("server") or "-", t["state"], t.get("generation", 0),
             f"{t.get('records_per_s', 0.0):.0f}",
             "-" if t.get("consumer_lag", -1) < 0 else t["consumer_lag"],
             span(t.get("last_commit_age_s", -1.0))) for t in tasks]
    out = table(("TASK", "GROUP", "SERVER", "STATE", "GEN", "REC/S", "LAG", "COMMIT"), rows)
    stalled = [t for t in tasks if t.get("state") == "stalled"]
    if stalled:
        out += f"\n\nstalled ({len(stalled)}):"
        for t in stalled:
            out += "\n" + "\n".join(textwrap.wrap(
                f"{t['id']}: {t.get('stalled_reason') or 'no reason given'}", WIDTH,
                initial_indent="  ", subsequent_indent="      "))
    return out


def topics_of(source: Json) -> str:
    """A job's topic, its list of topics, or its pattern (as `/pattern/`)."""
    if source.get("topic_pattern"):
        return f"/{source['topic_pattern']}/"
    return source.get("topic") or ",".join(source.get("topics") or ())


def jobs_table(jobs: Sequence[Json]) -> str:
    if not jobs:
        return "no jobs"
    rows = [(j["spec"]["id"], j["spec"].get("group", "default"), j["state"],
             len(j.get("tasks", ())), topics_of(j["spec"]["source"]), j["spec"]["sink"]["type"])
            for j in jobs]
    return table(("JOB", "GROUP", "STATE", "TASKS", "TOPIC", "SINK"), rows)


def spec_text(spec: Json) -> str:
    """A job spec as YAML (what one would submit), indented under its heading."""
    text = yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=False, width=WIDTH - 2)
    return textwrap.indent(text.rstrip("\n"), "  ")


def group_line(group: Json) -> str:
    line = (f"group {group['group']}: {group['servers_alive']} servers, util "
            f"{percent(group['utilisation']).strip()}, imbalance "
            f"{percent(group['imbalance']).strip()}, {group['tasks']} tasks "
            f"({group['tasks_pending']} pending)")
    return ellipsize(line, WIDTH)


def group_lines(group: Json) -> list[str]:
    """The group's summary, then what `servers_wanted` means for it: how many servers would
    bring its mean utilisation to the target watermark (the advice's reason, in words)."""
    wanted = group["servers_wanted"]
    why = group.get("reason") or (f"{wanted} server(s) would bring mean utilisation to the "
                                  "target watermark")
    return [group_line(group),
            *textwrap.wrap(f"servers wanted {wanted}: {why}", WIDTH, initial_indent="  ",
                           subsequent_indent="    ")]


def _task_chips(task_ids: Sequence[str], states: Mapping[str, str], indent: int) -> list[str]:
    """Task ids with their state unless running, wrapped at WIDTH."""
    lines: list[str] = []
    line = ""
    for tid in task_ids:
        state = states.get(tid, "")
        chip = tid if state in ("running", "") else f"{tid} ({state})"
        chip = ellipsize(chip, WIDTH - indent)
        if line and len(line) + 2 + len(chip) > WIDTH - indent:
            lines.append(" " * indent + line)
            line = chip
        else:
            line = f"{line}  {chip}" if line else chip
    if line:
        lines.append(" " * indent + line)
    return lines


def placement_map(placement: Json) -> str:
    """Per group: each server with CPU and network bars and its tasks; then pending tasks with
    their reasons."""
    states = {t["id"]: t["state"] for t in placement["tasks"]}
    by_group: dict[str, list[Json]] = {}
    for server in placement["servers"]:
        by_group.setdefault(server["group"], []).append(server)
    summaries = {g["group"]: g for g in placement["groups"]}
    out: list[str] = []
    for group in sorted(set(by_group) | set(summaries)):
        out.extend(group_lines(summaries[group]) if group in summaries else [f"group {group}"])
        for server in by_group.get(group, []):
            state = server_state(server)
            flag = "" if state == "ok" else f" {state}"
            tasks = server.get("tasks", ())
            # 2 + 16 + 5 + 15 + 6 + 15 + 2 + 9 + len(" draining") = 79 columns at most.
            out.append(f"  {ellipsize(server['id'], 16):<16} cpu "
                       f"{meter(server['cpu_utilisation'], 8)}  net "
                       f"{meter(server['net_utilisation'], 8)}  {len(tasks):>3} "
                       f"{'task' if len(tasks) == 1 else 'tasks'}{flag}")
            out.extend(_task_chips(tasks, states, 4))
        out.append("")
    pending = [t for t in placement["tasks"] if t["state"] == "pending" or not t.get("server")]
    if pending:
        out.append(f"pending ({len(pending)}):")
        for task in pending:
            reason = ellipsize(task.get("pending_reason") or "no reason given", 46)
            out.append(f"  {ellipsize(task['id'], 30):<30}  {reason}")
    else:
        out.append("no pending tasks")
    return "\n".join(out)


def leader_text(leader: Json, now: float) -> str:
    by = (f"{leader['this_master']} (the leader)" if leader.get("this_master_leads")
          else f"{leader['this_master']} (a standby)")
    return (f"leader {leader['id']}, epoch {leader['epoch']}, since "
            f"{clock(leader['since_unix'])} ({ago(leader['since_unix'], now)})\n"
            f"  http {leader['http'] or '-'}  grpc {leader['grpc'] or '-'}\n"
            f"  answered by {by}")


def table_lines(view: Json | None, now: float, indent: str = "") -> list[str]:
    """An Iceberg job's table as its leader's committer sees it (the API's `table` block):
    last commit, what is pending, errors, partitions whose chain is blocked."""
    if not view:
        return []
    name = f"{view['catalog']}:{view['namespace']}.{view['table']}"
    if not view.get("exists"):
        return [f"{indent}table {name}: not created yet (no task has written)"]
    last = view.get("last_commit_unix")
    sub, more = indent + "  ", indent + "    "
    lines = [f"{indent}table {name}: last commit {ago(last, now)}, every "
             f"{span(view.get('commit_interval_s', 0.0))}, snapshot "
             f"{view.get('snapshot_id') or '-'}",
             f"{sub}pending: {view.get('pending_records', 0)} records in "
             f"{view.get('pending_files', 0)} files ({view.get('pending_reports', 0)} reports), "
             f"oldest {span(view.get('oldest_pending_age_s', -1.0))}"]
    if view.get("consecutive_errors"):
        lines.extend(textwrap.wrap(
            f"commit errors: {view['consecutive_errors']} in a row, last: "
            f"{view.get('last_error') or '-'}", WIDTH, initial_indent=sub,
            subsequent_indent=more))
    if view.get("bad_reports"):
        lines.append(f"{sub}unreadable reports: {view['bad_reports']} (left in place)")
    for partition, reason in sorted((view.get("blocked") or {}).items()):
        lines.extend(textwrap.wrap(f"blocked {partition}: {reason}", WIDTH, initial_indent=sub,
                                   subsequent_indent=more))
    if view.get("stalled_reason"):
        lines.extend(textwrap.wrap(f"stalled: {view['stalled_reason']}", WIDTH,
                                   initial_indent=sub, subsequent_indent=more))
    return lines


def explain_task(task: Json, now: float) -> str:
    """Where a task runs, since when, why, and its history of moves."""
    lines = [f"task {task['id']}",
             f"  job {task['job']}, group {task['group']}, topic {task['topic']}, "
             f"partition {task['partition']}"]
    if task.get("server"):
        since = task.get("since_unix")
        when = (f"since {clock(since)} ({ago(since, now)})" if since is not None
                else "since when: not recorded")
        lines.append(f"  runs on {task['server']} ({task['state']}, generation "
                     f"{task['generation']}) {when}")
    else:
        lines.append(f"  not placed ({task['state']}): "
                     f"{task.get('pending_reason') or 'no reason given'}")
    kind = "measured" if task.get("measured") else "estimated"
    lines.append(f"  load {task.get('cpu', 0.0):.2f} cpu, {rate(task.get('net', 0.0))} "
                 f"({kind}); {task.get('records_per_s', 0.0):.0f} records/s, lag "
                 f"{'-' if task.get('consumer_lag', -1) < 0 else task['consumer_lag']}")
    lines.append(f"  committed offset {task.get('committed_offset', -1)}, last commit "
                 f"{span(task.get('last_commit_age_s', -1.0))} ago, oldest uncommitted record "
                 f"{span(task.get('freshness_s') or None)}")
    lines.append(f"  totals: {task.get('records_total', 0)} read, "
                 f"{task.get('exported_total', 0)} exported, "
                 f"{task.get('dead_letters_total', 0)} dead letters")
    limits = []
    if task.get("rate_share_records_per_s"):
        limits.append(f"{task['rate_share_records_per_s']:.0f} records/s")
    if task.get("rate_share_bytes_per_s"):
        limits.append(rate(task["rate_share_bytes_per_s"]))
    if limits:
        lines.append(f"  rate limit: {' and '.join(limits)} (its share of the job's limit, over "
                     f"{task.get('job_tasks', 0)} tasks); waited "
                     f"{span(task.get('rate_limited_s', 0.0))} on it")
    if task.get("state") == "stalled":
        lines.extend(textwrap.wrap(f"stalled: {task.get('stalled_reason') or 'no reason given'}",
                                   WIDTH, initial_indent="  ", subsequent_indent="    "))
    if task.get("last_error"):
        lines.append(f"  last error: {task['last_error']}")
    lines.extend(table_lines(task.get("table"), now, indent="  "))
    history = task.get("history") or []
    lines.append("history:" if history else "history: none recorded")
    for event in history:
        # The event's server is the one it concerns (source of a revoke, target of a move).
        server = f"  {event['server']}" if event.get("server") else ""
        gen = f"  gen {event['generation']}" if event.get("generation") is not None else ""
        lines.append(f"  {clock(event['at_unix'])}  {event['kind']}{server}{gen}")
        lines.extend(textwrap.wrap(event["reason"], WIDTH, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6) or [])
    return "\n".join(lines)


def plan_text(plan: Json) -> str:
    """The changes a round would make; tasks that would stay pending are listed apart, they
    are not changes."""
    every = plan.get("changes") or []
    changes = [c for c in every if c["kind"] != "pending"]
    pending = [c for c in every if c["kind"] == "pending"]
    if not changes:
        head = "no changes: nothing to rebalance now"
    else:
        rows = [(c["kind"], c["task"], c.get("source") or "-", c.get("target") or "-",
                 c["reason"]) for c in changes]
        head = (f"a rebalance round now would make {len(changes)} change(s) (dry run, nothing "
                "changed):\n" + table(("KIND", "TASK", "FROM", "TO", "REASON"), rows, squeeze=4))
    out = [head]
    if pending:
        out.append(f"{len(pending)} task(s) would stay pending (not changes):")
        out.extend(f"  {ellipsize(c['task'], 30):<30}  {ellipsize(c['reason'], 46)}"
                   for c in pending)
    for group in plan.get("groups") or []:
        out.extend(group_lines(group))
    return "\n".join(out)


def drain_line(progress: Json, width: int = 30) -> str:
    start = progress.get("tasks_at_start") or 0
    left = progress.get("tasks_left") or 0
    moved = max(0, start - left)
    fraction = 1.0 if start == 0 else moved / start
    return (f"drain {progress['server']} {bar(fraction, width)} {moved}/{start} moved, "
            f"{left} left")
