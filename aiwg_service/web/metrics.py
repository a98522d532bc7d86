"""``/metrics``: the service's state in Prometheus' text format, read at scrape time.

One custom collector turns a snapshot (``daemon.status``, ``task.stats``, ``budget.status``, the finished runs
of the last 30 days) into metric families, so no subsystem carries instrumentation of its own: a scrape costs
a few reads, and an idle service that nobody scrapes does nothing at all.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
COST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TASK_STATES = ("queued", "held", "running", "completed", "failed", "timeout", "cancelled", "interrupted")
RULE_OUTCOMES = {"runs": "ran", "skipped": "skipped", "loop_guarded": "loop_guarded", "chain_cuts": "chain_cut",
                 "regex_timeouts": "regex_timeout"}


@dataclass
class Snapshot:
    status: dict[str, Any]
    stats: dict[str, Any]
    budgets: dict[str, Any]
    #: (duration seconds or None, cost USD or None) of tasks finished in the window
    runs: list[tuple[float | None, float | None]] = field(default_factory=list)
    web: dict[str, Any] = field(default_factory=dict)


def _histogram(name: str, doc: str, values: list[float], buckets: tuple[float, ...]) -> HistogramMetricFamily:
    values = sorted(values)
    cumulative = [(str(b), float(bisect.bisect_right(values, b))) for b in buckets]
    cumulative.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=sum(values))


class StateCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        subs: dict[str, Any] = s.status.get("subsystems", {})
        g = GaugeMetricFamily("aiwg_tasks", "Tasks in the store by state", labels=["state"])
        for st in TASK_STATES:
            g.add_metric([st], float(s.stats.get(st, 0)))
        yield g
        yield GaugeMetricFamily("aiwg_queue_depth", "Tasks waiting to run (queued)",
                                value=float(s.stats.get("queued", 0)))
        yield GaugeMetricFamily("aiwg_tasks_running", "Agent processes running now",
                                value=float(subs.get("supervisor", {}).get("running", 0)))
        durations = [d for d, _ in s.runs if d is not None]
        costs = [c for _, c in s.runs if c is not None]
        yield _histogram("aiwg_task_duration_seconds", "Run time of tasks finished in the last 30 days",
                         durations, DURATION_BUCKETS)
        yield _histogram("aiwg_task_cost_usd", "Cost of tasks finished in the last 30 days", costs, COST_BUCKETS)
        yield GaugeMetricFamily("aiwg_store_cost_usd", "Cost of every task the store keeps (USD; pruned ones leave)",
                                value=float(s.stats.get("cost_usd") or 0.0))

        auto = subs.get("automation", {})
        c = CounterMetricFamily("aiwg_rule_runs", "Rule runs since start by outcome", labels=["outcome"])
        for key, outcome in RULE_OUTCOMES.items():
            c.add_metric([outcome], float(auto.get(key, 0)))
        yield c
        yield GaugeMetricFamily("aiwg_approvals_pending", "Approvals waiting for a decision",
                                value=float(auto.get("approvals", {}).get("pending", 0)))

        router = subs.get("router", {})
        c = CounterMetricFamily("aiwg_events", "Events published on the bus since start by type", labels=["type"])
        for typ, n in sorted(router.get("events_by_type", {}).items()):
            c.add_metric([typ], float(n))
        yield c
        yield CounterMetricFamily("aiwg_events_dropped", "Events dropped for subscribers that fell behind",
                                  value=float(router.get("dropped", 0)))
        yield GaugeMetricFamily("aiwg_dead_letters", "Events in the dead-letter queue",
                                value=float(router.get("dead_letters", 0)))

        roots = subs.get("watcher", {}).get("roots", {})
        w = GaugeMetricFamily("aiwg_watcher_watched_dirs", "Directories under inotify watch", labels=["project"])
        o = CounterMetricFamily("aiwg_watcher_overflows", "inotify queue overflows", labels=["project"])
        r = CounterMetricFamily("aiwg_watcher_rescans", "Rescans after an overflow or a lost watch",
                                labels=["project"])
        for root, info in sorted(roots.items()):
            w.add_metric([root], float(info.get("watched_dirs", 0)))
            o.add_metric([root], float(info.get("overflows", 0)))
            r.add_metric([root], float(info.get("rescans", 0)))
        yield from (w, o, r)

        ipc = subs.get("ipc", {})
        yield GaugeMetricFamily("aiwg_rpc_connections", "Open RPC connections", value=float(ipc.get("connections", 0)))
        yield CounterMetricFamily("aiwg_rpc_requests", "RPC requests served", value=float(ipc.get("requests", 0)))
        yield CounterMetricFamily("aiwg_rpc_notifications_dropped", "Notifications not sent to slow subscribers",
                                  value=float(ipc.get("notifications_dropped", 0)))

        hooks = subs.get("webhooks", {})
        c = CounterMetricFamily("aiwg_webhook_deliveries", "Webhook deliveries by result", labels=["result"])
        for key, n in sorted(hooks.items()):
            if isinstance(n, int) and not isinstance(n, bool) and key != "hooks":
                c.add_metric([key], float(n))
        yield c

        bridges = subs.get("messaging", {}).get("bridges", {})
        b = GaugeMetricFamily("aiwg_bridge_up", "1 when a chat bridge is connected (or sending), else 0",
                              labels=["bridge", "state"])
        for name, info in sorted(bridges.items()):
            if info.get("enabled"):
                st = str(info.get("state"))
                b.add_metric([name, st], 1.0 if st in ("connected", "sending-only") else 0.0)
        yield b

        spent = GaugeMetricFamily("aiwg_budget_spent_usd", "Spent in the budget's current period",
                                  labels=["budget", "key", "period"])
        limit = GaugeMetricFamily("aiwg_budget_limit_usd", "The budget's limit", labels=["budget", "key", "period"])
        for bd in s.budgets.get("budgets", []):
            labels = [str(bd.get("budget")), str(bd.get("key")), str(bd.get("period"))]
            spent.add_metric(labels, float(bd.get("spent_usd") or 0.0))
            limit.add_metric(labels, float(bd.get("limit_usd") or 0.0))
        yield from (spent, limit)
        yield GaugeMetricFamily("aiwg_tasks_held", "Tasks held by a budget",
                                value=float(len(s.budgets.get("held", []))))
        yield GaugeMetricFamily("aiwg_web_streams", "Dashboard live streams open",
                                value=float(s.web.get("streams", 0)))


def render(snap: Snapshot) -> tuple[bytes, str]:
    """The text exposition of one snapshot, and its content type."""
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StateCollector(snap))
    return generate_latest(reg), CONTENT_TYPE_LATEST
