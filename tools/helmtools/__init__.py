"""Helm and a Kubernetes schema validator for the chart's tests, from reachable registries.

helm is built from its Go module (`go install helm.sh/helm/v3/cmd/helm@<version>` through the Go
module proxy) into the git-ignored `.cache/bin/`, once, under a file lock; a stamp file naming the
version makes later calls free. The schema validator is the PyPI package `kubernetes-validate`
(the `dev` extra), which ships the Kubernetes JSON schemas, so validation works offline.

    python -m tools.helmtools ensure    # install what is missing, print where it is
    python -m tools.helmtools check     # helm lint + template + schema validation of helm/exportd
"""

from tools.helmtools.install import (
    HELM_VERSION,
    HelmToolsError,
    PrerequisiteMissing,
    ensure_helm,
    ensure_validator,
    helm_path,
)
from tools.helmtools.validate import (
    K8S_VERSION,
    ChartCheck,
    check_chart,
    helm_lint,
    helm_template,
    validate_manifests,
)

__all__ = [
    "HELM_VERSION",
    "K8S_VERSION",
    "ChartCheck",
    "HelmToolsError",
    "PrerequisiteMissing",
    "check_chart",
    "ensure_helm",
    "ensure_validator",
    "helm_lint",
    "helm_path",
    "helm_template",
    "validate_manifests",
]
