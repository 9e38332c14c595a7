"""`helm lint`, `helm template` and schema validation of the rendered manifests.

Schemas come from `kubernetes-validate` (strict mode: unknown fields are errors) for one fixed
Kubernetes version. Kinds of CRDs the chart may render (the Prometheus Operator's ServiceMonitor,
cert-manager's Certificate) have no schema there and get a small structural check here instead;
any other kind without a schema is an error, so nothing rendered goes unchecked.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.helmtools.install import REPO_ROOT, HelmToolsError, ensure_helm

CHART_DIR = REPO_ROOT / "helm" / "exportd"
K8S_VERSION = "1.29.0"
HELM_TIMEOUT_S = 120.0

Manifest = dict[str, Any]


def _run_helm(args: Sequence[str]) -> str:
    cmd = [str(ensure_helm()), *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=HELM_TIMEOUT_S,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        raise HelmToolsError(f"`{' '.join(cmd)}` did not finish in {HELM_TIMEOUT_S:.0f}s") from exc
    if result.returncode != 0:
        raise HelmToolsError(
            f"`{' '.join(cmd)}` exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def _values_args(values_files: Sequence[Path], set_values: Sequence[str]) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    for pair in set_values:
        args += ["--set", pair]
    return args


def helm_lint(chart: Path = CHART_DIR, values_files: Sequence[Path] = (),
              set_values: Sequence[str] = ()) -> str:
    """`helm lint --strict`; raises HelmToolsError on any lint error or warning."""
    return _run_helm(["lint", "--strict", str(chart), *_values_args(values_files, set_values)])


def helm_template(chart: Path = CHART_DIR, values_files: Sequence[Path] = (),
                  set_values: Sequence[str] = (), release: str = "exportd",
                  namespace: str = "exportd") -> list[Manifest]:
    """Render the chart and return its manifests (empty documents dropped)."""
    out = _run_helm(["template", release, str(chart), "--namespace", namespace,
                     *_values_args(values_files, set_values)])
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _name(doc: Manifest) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def _check_service_monitor(doc: Manifest) -> list[str]:
    errors: list[str] = []
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ["spec: missing"]
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not isinstance(selector.get("matchLabels"), dict):
        errors.append("spec.selector.matchLabels: missing")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        errors.append("spec.endpoints: missing or empty")
    else:
        allowed = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings",
                   "metricRelabelings", "scheme", "tlsConfig", "bearerTokenSecret"}
        for i, ep in enumerate(endpoints):
            if not isinstance(ep, dict) or not isinstance(ep.get("port"), str):
                errors.append(f"spec.endpoints[{i}].port: must be a port name")
                continue
            errors += [f"spec.endpoints[{i}].{k}: unknown field" for k in ep if k not in allowed]
    return errors


def _check_certificate(doc: Manifest) -> list[str]:
    """cert-manager's Certificate: the fields the chart sets, by name and shape."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ["spec: missing"]
    allowed = {"secretName", "duration", "renewBefore", "privateKey", "usages", "uris",
               "dnsNames", "ipAddresses", "issuerRef", "commonName", "subject",
               "secretTemplate", "keystores", "isCA", "emailAddresses"}
    errors = [f"spec.{key}: unknown field" for key in spec if key not in allowed]
    if not isinstance(spec.get("secretName"), str) or not spec.get("secretName"):
        errors.append("spec.secretName: missing")
    issuer = spec.get("issuerRef")
    if not isinstance(issuer, dict) or not issuer.get("name"):
        errors.append("spec.issuerRef.name: missing")
    for key in ("uris", "dnsNames", "usages"):
        if key in spec and not (isinstance(spec[key], list)
                                and all(isinstance(v, str) for v in spec[key])):
            errors.append(f"spec.{key}: must be a list of strings")
    return errors


_RULE_FIELDS = frozenset({"alert", "record", "expr", "for", "labels", "annotations",
                          "keep_firing_for"})
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def _check_prometheus_rule(doc: Manifest) -> list[str]:
    """The Prometheus Operator's PrometheusRule: groups of named rules, each alert with an
    expression, string labels and annotations, and a duration in `for`."""
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("groups"), list):
        return ["spec.groups: missing"]
    errors = [f"spec.{key}: unknown field" for key in spec if key != "groups"]
    for i, group in enumerate(spec["groups"]):
        if not isinstance(group, dict) or not group.get("name") or not isinstance(
                group.get("rules"), list):
            errors.append(f"spec.groups[{i}]: needs a name and rules")
            continue
        for j, rule in enumerate(group["rules"]):
            where = f"spec.groups[{i}].rules[{j}]"
            errors += [f"{where}.{k}: unknown field" for k in rule if k not in _RULE_FIELDS]
            if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                errors.append(f"{where}.expr: missing")
            if ("alert" in rule) == ("record" in rule):
                errors.append(f"{where}: exactly one of alert and record")
            if "for" in rule and not _DURATION.fullmatch(str(rule["for"])):
                errors.append(f"{where}.for: not a duration: {rule['for']!r}")
            for key in ("labels", "annotations"):
                values = rule.get(key, {})
                if not isinstance(values, dict) or not all(
                        isinstance(v, str) for v in values.values()):
                    errors.append(f"{where}.{key}: must map names to strings")
    return errors


CRD_CHECKS = {("monitoring.coreos.com/v1", "ServiceMonitor"): _check_service_monitor,
              ("monitoring.coreos.com/v1", "PrometheusRule"): _check_prometheus_rule,
              ("cert-manager.io/v1", "Certificate"): _check_certificate}


def validate_manifests(docs: Sequence[Manifest], k8s_version: str = K8S_VERSION,
                       strict: bool = True) -> list[str]:
    """Validate each manifest against Kubernetes `k8s_version`'s schemas; return the errors."""
    kv = importlib.import_module("kubernetes_validate")
    errors: list[str] = []
    for doc in docs:
        name = _name(doc)
        crd_check = CRD_CHECKS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
        if crd_check is not None:
            errors += [f"{name}: {problem}" for problem in crd_check(doc)]
            continue
        try:
            kv.validate(doc, k8s_version, strict)
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            errors.append(f"{name}: {path}: {exc.message}")
    return errors


@dataclass
class ChartCheck:
    """The result of linting, rendering and validating the chart with one set of values."""

    values_files: tuple[Path, ...]
    manifests: list[Manifest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def check_chart(values_files: Sequence[Path] = (), chart: Path = CHART_DIR,
                k8s_version: str = K8S_VERSION) -> ChartCheck:
    """Lint, render and validate; lint or render failures are reported as errors too."""
    check = ChartCheck(tuple(values_files))
    try:
        helm_lint(chart, values_files)
        check.manifests = helm_template(chart, values_files)
    except HelmToolsError as exc:
        check.errors.append(str(exc))
        return check
    check.errors = validate_manifests(check.manifests, k8s_version)
    return check
