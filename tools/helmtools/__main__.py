"""CLI: `python -m tools.helmtools ensure | check`.

ensure: install helm into .cache/bin (from the Go module proxy) and the schema validator; print
where they are. check: lint, render and validate helm/exportd with its default values and with
every helm/exportd/values-*.yaml example. Exit status 2 when a prerequisite (go) is missing.
"""

from __future__ import annotations

import argparse
import sys

from tools.helmtools.install import (
    HELM_VERSION,
    HelmToolsError,
    PrerequisiteMissing,
    ensure_helm,
    ensure_validator,
)
from tools.helmtools.validate import CHART_DIR, K8S_VERSION, check_chart


def _log(message: str) -> None:
    print(f"helmtools: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.helmtools", description=__doc__)
    parser.add_argument("command", choices=["ensure", "check"])
    args = parser.parse_args(argv)
    try:
        helm = ensure_helm(_log)
        validator = ensure_validator()
    except PrerequisiteMissing as exc:
        print(f"helmtools: {exc}", file=sys.stderr)
        return 2
    except HelmToolsError as exc:
        print(f"helmtools: {exc}", file=sys.stderr)
        return 1
    if args.command == "ensure":
        print(f"helm {HELM_VERSION}: {helm}")
        print(f"kubernetes-validate {validator} (schemas of Kubernetes {K8S_VERSION} used)")
        return 0
    failed = 0
    # The bare defaults do not render by design (no tokens, no certificates: docs/SECURITY.md);
    # values-minimal.yaml is the least that does.
    for values in ([p] for p in sorted(CHART_DIR.glob("values-*.yaml"))):
        label = values[0].name
        result = check_chart(values)
        status = "ok" if not result.errors else f"{len(result.errors)} error(s)"
        print(f"{label}: {len(result.manifests)} manifests, {status}")
        for error in result.errors:
            print(f"  {error}")
        failed += bool(result.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
