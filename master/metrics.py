"""Prometheus metrics of a master. The names here are the contract with the Grafana dashboard
(helm/exportd/dashboards): a test checks the dashboard uses only names defined in this module or
server/metrics.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

IS_LEADER = Gauge("exportd_master_is_leader", "1 while this master leads, else 0",
                  registry=REGISTRY)
EPOCH = Gauge("exportd_master_epoch", "The fencing epoch this master leads (or last saw)",
              registry=REGISTRY)
LEADERSHIP_SUSPENDED = Gauge("exportd_master_leadership_suspended",
                             "1 while the ZooKeeper session is SUSPENDED and directives are paused",
                             registry=REGISTRY)
SERVERS_ALIVE = Gauge("exportd_servers_alive", "Servers with a live lease", ["group"],
                      registry=REGISTRY)
TASKS = Gauge("exportd_tasks", "Tasks by state", ["state"], registry=REGISTRY)
TASKS_PENDING = Gauge("exportd_tasks_pending", "Tasks with no eligible server", ["group"],
                      registry=REGISTRY)
GROUP_UTILISATION = Gauge("exportd_group_utilisation",
                          "Mean dominant utilisation of a group's schedulable servers", ["group"],
                          registry=REGISTRY)
GROUP_IMBALANCE = Gauge("exportd_group_imbalance", "Max minus mean utilisation in a group",
                        ["group"], registry=REGISTRY)
GROUP_SERVERS_WANTED = Gauge("exportd_group_servers_wanted",
                             "Servers that would bring the group to the target watermark",
                             ["group"], registry=REGISTRY)
PLANS = Counter("exportd_plans_total", "Scheduler rounds run", registry=REGISTRY)
PLAN_SECONDS = Histogram(
    "exportd_plan_seconds", "Time to build the view, plan and apply it (one reconcile round)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
MOVES = Counter("exportd_moves_total", "Task moves started, by kind", ["kind"], registry=REGISTRY)
HEARTBEATS = Counter("exportd_heartbeats_total", "Reports received from servers",
                     registry=REGISTRY)
SESSIONS_REFUSED = Counter(
    "exportd_sessions_refused_total",
    "Heartbeat streams refused: the client certificate does not name the server they claim",
    registry=REGISTRY)
REPORT_ACK_SECONDS = Histogram(
    "exportd_report_ack_seconds", "Time from receiving a report to sending its ack",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
FENCED_WRITES = Counter("exportd_fenced_writes_total",
                        "Writes rejected because this master's epoch is stale", registry=REGISTRY)
API_REQUESTS = Counter("exportd_api_requests_total", "HTTP API requests", ["method", "status"],
                       registry=REGISTRY)
