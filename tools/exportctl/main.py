"""`exportctl`: command-line parsing and the one place where errors become exit codes.

Exit codes: 0 ok, 1 an API or connection error, 2 a usage error. Every error is one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from tools.exportctl import commands as c
from tools.exportctl.client import ApiError, Client, CliError, master_urls
from tools.exportctl.commands import Command


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() decides the exit code and output."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message}")


def _common() -> _Parser:
    # SUPPRESS: a subcommand's option only overrides the top-level one when given.
    common = _Parser(add_help=False)
    common.add_argument("--master", action="append", default=argparse.SUPPRESS,
                        help="a master's URL; repeat to try several in turn "
                             "(default: $EXPORTD_MASTERS, comma-separated)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON answer")
    common.add_argument("--request-timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds to wait for one master (default 10)")
    common.add_argument("--ca", default=argparse.SUPPRESS, metavar="FILE",
                        help="the cluster CA (PEM) to verify masters' certificates with "
                             "(default: $EXPORTD_CA, else the system's trust store)")
    return common


def build_parser() -> argparse.ArgumentParser:
    # Two instances: parents share action objects, and set_defaults below would otherwise
    # give the subcommands' copies real defaults that overwrite options given before them.
    common = _common()
    parser = _Parser(prog="exportctl", description="Operate an exportd cluster through its "
                     "masters' HTTP API (https). Token from $EXPORTD_TOKEN.", parents=[_common()])
    parser.set_defaults(master=None, json=False, request_timeout=10.0, ca=None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, command: Command, helptext: str,
            where: argparse._SubParsersAction[_Parser] = sub) -> _Parser:
        p = where.add_parser(name, help=helptext, description=helptext, parents=[common])
        p.set_defaults(run=command)
        return p

    p = add("servers", c.servers, "export servers: state, utilisation, tasks")
    p.add_argument("--all", action="store_true",
                   help="also dead servers that hold nothing and went silent long ago")
    p = add("tasks", c.tasks, "tasks, filtered")
    for name in ("job", "server", "group", "state"):
        p.add_argument(f"--{name}")
    p = add("placement", c.placement, "the placement map: servers, bars, tasks, pending")
    p.add_argument("--group")
    add("leader", c.leader, "the leading master and since when")
    p = add("explain", c.explain, "where a task runs, since when, and why")
    p.add_argument("task", help="a task id: <job>:<topic>:<partition>")

    jobs = sub.add_parser("jobs", help="submit and manage jobs").add_subparsers(
        dest="jobs_command", required=True, parser_class=_Parser)
    p = add("submit", c.jobs_submit, "submit a job spec (YAML or JSON)", jobs)
    p.add_argument("-f", "--file", required=True, help="the job spec file ('-' for stdin)")
    add("list", c.jobs_list, "list jobs", jobs)
    for name, command, helptext in (("get", c.jobs_get, "a job with its tasks"),
                                    ("pause", c.jobs_pause, "pause a job"),
                                    ("resume", c.jobs_resume, "resume a job")):
        add(name, command, helptext, jobs).add_argument("id", help="the job id")
    p = add("delete", c.jobs_delete, "delete a job", jobs)
    p.add_argument("id", help="the job id")
    _wait_flags(p, "wait until every task of the job has stopped")

    for name, command, helptext in (
            ("cordon", c.cordon, "place no new tasks on a server (kept across its restarts)"),
            ("uncordon", c.uncordon, "put a server back in service: clear its cordon and any "
                                     "drain")):
        add(name, command, helptext).add_argument("server")
    p = add("drain", c.drain, "move every task off a server (throttled handoffs)")
    p.add_argument("server")
    _wait_flags(p, "show progress until it is empty")
    p = add("rebalance", c.rebalance, "show what a rebalance round would change")
    p.add_argument("--dry-run", action="store_true",
                   help="only show the plan (the only mode: the leader rebalances by itself)")
    return parser


def _wait_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=what)
    parser.add_argument("--timeout", type=_positive, default=600.0,
                        help="seconds --wait waits at most (default 600)")
    parser.add_argument("--interval", type=_positive, default=1.0, help=argparse.SUPPRESS)


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value


def run(argv: Sequence[str], *, stdout: TextIO, stderr: TextIO,
        environ: Mapping[str, str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except _UsageError as exc:
        stderr.write(f"{exc} (see exportctl --help)\n")
        return 2
    except SystemExit as exc:  # --help printed its text
        return int(exc.code or 0)
    client = Client(master_urls(args.master, environ), environ.get("EXPORTD_TOKEN") or None,
                    args.request_timeout, args.ca or environ.get("EXPORTD_CA") or None)
    try:
        text = args.run(client, args, stdout)
    except CliError as exc:
        if args.json and isinstance(exc, ApiError) and isinstance(exc.body, dict):
            # --json: the API's error body as it is (every problem of a bad job spec in it).
            stdout.write(json.dumps(exc.body, indent=2) + "\n")
        stderr.write(f"exportctl: {exc.message}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        stderr.write("exportctl: interrupted\n")
        return 1
    if text:
        stdout.write(text.rstrip("\n") + "\n")
    if client.standby_view:
        stderr.write("exportctl: no leader answered; this is a standby's view from ZooKeeper "
                     "(no task states or loads; histories as the leader last wrote them)\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, stdout=sys.stdout, stderr=sys.stderr,
               environ=os.environ)


if __name__ == "__main__":
    sys.exit(main())
