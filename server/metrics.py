"""Prometheus metrics of an export server (per-task rate, lag, errors; lease state). The names
here are the contract with the Grafana dashboard (see master/metrics.py). Per-task metrics are
labelled `export_job` and `task`: a label named `job` would collide with the one Prometheus
gives every scrape target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks.budget import split

if TYPE_CHECKING:
    from tasks.spool import MemoryBudget

REGISTRY = CollectorRegistry()

SERVER_TASKS = Gauge("exportd_server_tasks", "Tasks on this server by state", ["state"],
                     registry=REGISTRY)
TASK_RECORDS = Counter("exportd_task_records_total", "Records exported", ["export_job", "task"],
                       registry=REGISTRY)
TASK_BYTES = Counter("exportd_task_bytes_total", "Record value bytes read",
                     ["export_job", "task"], registry=REGISTRY)
TASK_RECORDS_PER_SECOND = Gauge("exportd_task_records_per_second", "Records per second",
                                ["export_job", "task"], registry=REGISTRY)
TASK_BYTES_PER_SECOND = Gauge("exportd_task_bytes_per_second", "Bytes per second",
                              ["export_job", "task"], registry=REGISTRY)
TASK_LAG = Gauge("exportd_task_consumer_lag", "Records behind the partition's end",
                 ["export_job", "task"], registry=REGISTRY)
TASK_STALLED = Gauge("exportd_task_stalled",
                     "1 while the task runs but has not committed for longer than its rotation "
                     "allows while it has work (or cannot reach its broker)",
                     ["export_job", "task"], registry=REGISTRY)
TASK_FRESHNESS = Gauge("exportd_task_freshness_seconds",
                       "Age of the oldest record the task read and has not committed yet",
                       ["export_job", "task"], registry=REGISTRY)
TASK_RATE_SHARE = Gauge("exportd_task_rate_limit", "The task's share of its job's rate_limit "
                        "(unit: records or bytes per second); absent when not limited",
                        ["export_job", "task", "unit"], registry=REGISTRY)
TASK_RATE_LIMITED = Gauge("exportd_task_rate_limited_seconds",
                          "Seconds the task's pull has waited on its job's rate_limit since it "
                          "started here", ["export_job", "task"], registry=REGISTRY)
TASK_COMMIT_AGE = Gauge("exportd_task_last_commit_age_seconds",
                        "Seconds since the task last committed an offset (or started)",
                        ["export_job", "task"], registry=REGISTRY)
TASK_ERRORS = Counter("exportd_task_errors_total", "Sink or source errors", ["export_job", "task"],
                      registry=REGISTRY)
TASK_DEAD_LETTERS = Counter("exportd_task_dead_letters_total", "Records sent to dead-letter",
                            ["export_job", "task"], registry=REGISTRY)
LEASE_REMAINING = Gauge("exportd_server_lease_remaining_seconds",
                        "Seconds until this server self-fences without an ack", registry=REGISTRY)
SELF_FENCES = Counter("exportd_server_self_fences_total",
                      "Times the server stopped every task because its lease ran out",
                      registry=REGISTRY)
CPU_UTILISATION = Gauge("exportd_server_cpu_utilisation", "CPU fraction of the machine",
                        registry=REGISTRY)
NET_BYTES_PER_SECOND = Gauge("exportd_server_net_bytes_per_second", "Network bytes/s",
                             ["direction"], registry=REGISTRY)

# Added with the server host (server/host.py, server/session.py).
REPORTS_SENT = Counter("exportd_server_reports_total", "Heartbeat reports sent to the leader",
                       registry=REGISTRY)
SESSION_RECONNECTS = Counter("exportd_server_session_reconnects_total",
                             "Heartbeat sessions re-opened, by reason (requested: leader change "
                             "or self-fence; reregister; broken: the stream failed)", ["reason"],
                             registry=REGISTRY)
STALE_MESSAGES = Counter("exportd_server_stale_epoch_messages_total",
                         "Leader messages ignored because their epoch is older than one seen",
                         registry=REGISTRY)
REFUSED_ASSIGNMENTS = Counter("exportd_server_refused_assignments_total",
                              "Assignments refused, by reason (stale generation, invalid spec)",
                              ["reason"], registry=REGISTRY)
REGISTERED = Gauge("exportd_server_registered", "1 while servers/<id> exists for this server",
                   registry=REGISTRY)
SESSION_UP = Gauge("exportd_server_session_up", "1 while the leader answers on the session",
                   registry=REGISTRY)
MAX_TASKS = Gauge("exportd_server_max_tasks",
                  "The most tasks this server takes (its memory budget's task slots, or "
                  "max_tasks); 0: no cap", registry=REGISTRY)


# Added with the host budget (tasks/budget.py): read from the budget's shared counters at each
# scrape, so the figures are the whole host's (every worker process's).
class BudgetCollector(Collector):
    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        b, snap = self.budget, self.budget.snapshot()
        limit = GaugeMetricFamily("exportd_server_memory_budget_bytes",
                                  "The host's memory budget, by kind (total: all kinds)",
                                  labels=["kind"])
        parts = split(b.total)
        for kind in ("total", "prefetch", "bodies", "uploads", "pipeline"):
            limit.add_metric([kind], getattr(parts, kind))
        yield limit
        used = GaugeMetricFamily("exportd_server_memory_budget_used_bytes",
                                 "Budget in use by kind: prefetch the consumers may hold, "
                                 "consumed batches, file bodies in memory, uploads in flight "
                                 "(estimate)", labels=["kind"])
        for kind in ("prefetch", "pipeline", "bodies", "uploads"):
            used.add_metric([kind], snap[kind])
        yield used
        yield GaugeMetricFamily("exportd_server_spill_bytes", "File bodies spilled to disk now",
                                value=snap["spilled"])
        yield GaugeMetricFamily("exportd_server_spill_budget_bytes", "The host's spill budget",
                                value=b.spill_limit or 0)
        yield CounterMetricFamily("exportd_server_spilled_bytes", "Bytes written to spill files",
                                  value=snap["spilled_total"])
        yield GaugeMetricFamily("exportd_server_sources_paused_by_budget",
                                "Tasks whose pull waits for spill room now", value=snap["paused"])
        yield CounterMetricFamily("exportd_server_budget_pauses",
                                  "Times a task's pull waited for spill room",
                                  value=snap["pauses_total"])
        yield CounterMetricFamily("exportd_server_budget_early_cuts",
                                  "Files ended before their rotation because spill was full",
                                  value=snap["cuts_total"])
        yield GaugeMetricFamily("exportd_server_uploads_in_flight", "Uploads running on the host",
                                value=snap["uploads_in_flight"])


def register_budget(budget: MemoryBudget) -> None:
    """Expose the host budget's counters (once per process: the server's)."""
    REGISTRY.register(BudgetCollector(budget))
