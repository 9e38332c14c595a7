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

# Iceberg commits by the leader (master/iceberg/service.py), per job.
ICEBERG_LAST_COMMIT = Gauge("exportd_iceberg_last_commit_timestamp_seconds",
                            "Time of the newest exportd snapshot of the job's table", ["job"],
                            registry=REGISTRY)
ICEBERG_PENDING_RECORDS = Gauge("exportd_iceberg_pending_records",
                                "Records in chunk reports not (yet) committed to the table",
                                ["job"], registry=REGISTRY)
ICEBERG_PENDING_FILES = Gauge("exportd_iceberg_pending_files",
                              "Data files in chunk reports not (yet) committed", ["job"],
                              registry=REGISTRY)
ICEBERG_PENDING_REPORTS = Gauge("exportd_iceberg_pending_reports",
                                "Chunk reports not (yet) committed", ["job"], registry=REGISTRY)
ICEBERG_OLDEST_PENDING = Gauge("exportd_iceberg_oldest_pending_seconds",
                               "Age of the oldest chunk report not yet committed (0: none)",
                               ["job"], registry=REGISTRY)
ICEBERG_STALLED = Gauge("exportd_iceberg_stalled",
                        "1 while the table's commits fail or lag (its tasks show stalled)",
                        ["job"], registry=REGISTRY)
ICEBERG_BLOCKED = Gauge("exportd_iceberg_blocked_partitions",
                        "Partitions whose chain stops at a chunk that cannot be committed",
                        ["job"], registry=REGISTRY)
ICEBERG_COMMITS = Counter("exportd_iceberg_commits_total", "Snapshots committed", ["job"],
                          registry=REGISTRY)
ICEBERG_COMMITTED_RECORDS = Counter("exportd_iceberg_committed_records_total",
                                    "Records committed to the table", ["job"],
                                    registry=REGISTRY)
ICEBERG_COMMIT_ERRORS = Counter("exportd_iceberg_commit_errors_total",
                                "Commit rounds that failed or were refused by the fence",
                                ["job"], registry=REGISTRY)
ICEBERG_BAD_REPORTS = Counter("exportd_iceberg_bad_reports_total",
                              "Chunk reports that do not parse (left in place)", ["job"],
                              registry=REGISTRY)
