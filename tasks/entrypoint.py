"""What every exportd process's `main()` does the same way: flags, settings, logging, exit codes.

`exportd-master` and `exportd-server` each pass their settings model and an async `run`; this
module parses `--config FILE` and repeated `--set key=value`, loads the settings (YAML, then
`EXPORTD_*` variables, then flags), configures structlog, runs, and maps failures to exit codes:
2 for settings that cannot be loaded (one line on stderr), 1 for an error while running.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field

from tasks.errors import ExportdError
from tasks.logs import configure_logging, get_logger
from tasks.redact import redacted
from tasks.settings import SettingsModel, load_settings, parse_set_flags

log = get_logger(__name__)


class ProcessSettings(SettingsModel):
    """Settings every long-running process has."""

    log_format: Literal["json", "console"] = "json"
    log_level: str = "info"


class ListenSettings(SettingsModel):
    """Where a process listens, and the address it gives others to reach it there."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)     # 0: any free port
    # What others are told; empty: `host`, or the hostname when host is a wildcard.
    advertise_host: str = ""

    def advertised_host(self) -> str:
        host = self.advertise_host or self.host
        return socket.gethostname() if host in {"0.0.0.0", "::", ""} else host

    def advertised(self, port: int) -> str:
        return f"{self.advertised_host()}:{port}"


P = TypeVar("P", bound=ProcessSettings)

Run = Callable[[P], Coroutine[Any, Any, int]]


def process_main(prog: str, doc: str, model: type[P], run: Run[P],
                 argv: Sequence[str] | None = None,
                 actions: Mapping[str, tuple[str, Run[P]]] | None = None) -> int:
    """`actions`: extra flags (e.g. "--migrate-acls") that run another coroutine with the same
    settings instead of `run`, given as flag -> (help, coroutine)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n")[0])
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set zookeeper.hosts=127.0.0.1:2181")
    parser.add_argument("--print-settings", action="store_true",
                        help="print every setting as this process would run with it (file, "
                             "EXPORTD_* variables and --set applied; secrets as ***), then exit")
    for flag, (help_text, _) in (actions or {}).items():
        parser.add_argument(flag, action="store_true", help=help_text)
    args = parser.parse_args(argv)
    for flag, (_, action) in (actions or {}).items():
        if getattr(args, flag.lstrip("-").replace("-", "_")):
            run = action
    try:
        settings = load_settings(model, config_file=args.config,
                                 overrides=parse_set_flags(args.set))
    except ExportdError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        return 2
    if args.print_settings:
        print(yaml.safe_dump(redacted(settings.model_dump(mode="json")), sort_keys=False),
              end="")
        return 0
    configure_logging(json=settings.log_format == "json", level=settings.log_level)
    try:
        return asyncio.run(run(settings))
    except ExportdError as exc:
        log.error("process_failed", process=prog, error=exc.message, **exc.details)
        return 1
    except OSError as exc:   # e.g. a port is taken
        log.error("process_failed", process=prog, error=str(exc))
        return 1
