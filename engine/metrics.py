"""Prometheus metrics at /metrics, in the text exposition format (written by hand).

Two sources: the store (message, charge and queue counts per channel and destination,
delivery latency of SENT deliveries — correct across processes and nodes), and this
process (ACK latency, observed by ingest through `observe_ack`). /metrics needs the same
authentication as the API (a bearer token for Prometheus); it carries no PHI.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from typing import Any

ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
               5.0, 10.0)
DELIVERY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


class Histogram:
    """A labelled cumulative histogram, safe to observe from several threads."""

    def __init__(self, name: str, help_text: str, label: str, buckets: Sequence[float]) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, label_value: str, seconds: float) -> None:
        # One count in the first bucket that holds the value (the ACK path calls this per
        # message); snapshot() makes them cumulative.
        slot = bisect.bisect_left(self.buckets, seconds)
        with self._lock:
            series = self._series.get(label_value)
            if series is None:
                series = self._series[label_value] = ([0] * (len(self.buckets) + 1), [0.0])
            series[0][slot] += 1
            series[1][0] += seconds

    def snapshot(self) -> dict[str, tuple[list[int], float]]:
        """Per label: cumulative counts (bucket by bucket, then +Inf) and the sum."""
        with self._lock:
            return {k: (list(itertools.accumulate(c)), t[0])
                    for k, (c, t) in self._series.items()}

    def render(self) -> list[str]:
        return render_histogram(self.name, self.help, self.label, self.buckets,
                                self.snapshot())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_histogram(name: str, help_text: str, label: str, buckets: Sequence[float],
                     series: dict[str, tuple[list[int], float]]) -> list[str]:
    """`counts` per series: one cumulative count per bucket, then the total count."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for value, (counts, total) in sorted(series.items()):
        lab = f'{label}="{_escape(value)}"'
        for bound, count in zip(buckets, counts, strict=False):
            lines.append(f'{name}_bucket{{{lab},le="{_fmt(bound)}"}} {count}')
        lines.append(f'{name}_bucket{{{lab},le="+Inf"}} {counts[-1]}')
        lines.append(f"{name}_sum{{{lab}}} {_fmt(total)}")
        lines.append(f"{name}_count{{{lab}}} {counts[-1]}")
    return lines


ACK_LATENCY = Histogram("chargebridge_ack_latency_seconds",
                        "Time from a message's arrival to its ACK being ready (journaled).",
                        "channel", ACK_BUCKETS)


def observe_ack(channel: str, seconds: float) -> None:
    """Record one ACK latency; called by ingest after the journal commit."""
    ACK_LATENCY.observe(channel, seconds)


def _gauge(name: str, help_text: str, kind: str, samples: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{{{labels}}} {_fmt(value)}" for labels, value in samples)
    return lines


def _delivery_latency(store: Any) -> dict[str, tuple[list[int], float]]:
    """Queued-to-sent seconds of SENT deliveries, bucketed in SQL (one scan)."""
    sums = ", ".join("SUM(CASE WHEN updated_at - created_at <= ? THEN 1 ELSE 0 END)"
                     for _ in DELIVERY_BUCKETS)
    rows = store._query(f"SELECT destination, {sums}, COUNT(*), SUM(updated_at - created_at) "
                        "FROM deliveries WHERE status = ? GROUP BY destination",
                        (*DELIVERY_BUCKETS, "SENT"))
    return {r[0]: ([int(v or 0) for v in r[1:-1]], float(r[-1] or 0.0)) for r in rows}


def render(store: Any, config: Any) -> str:
    """The whole exposition text for one scrape."""
    lines: list[str] = []
    store.settle()  # count what was just acknowledged too
    messages = store._query("SELECT channel, status, COUNT(*) FROM messages "
                            "GROUP BY channel, status")
    charges = store._query("SELECT channel, status, COUNT(*) FROM charges "
                           "GROUP BY channel, status")
    queues = store._query("SELECT destination, COUNT(*), MIN(created_at) FROM deliveries "
                          "WHERE status = ? GROUP BY destination", ("QUEUED",))
    channels = sorted({c.name for c in config.channels} | {r[0] for r in messages})
    by_channel: dict[str, dict[str, int]] = {c: {} for c in channels}
    for channel, status, count in messages:
        by_channel.setdefault(channel, {})[status] = int(count)
    held: dict[str, int] = {c: 0 for c in channels}
    for channel, status, count in charges:
        if status == "HELD":
            held[channel] = int(count)

    def lab(channel: str) -> str:
        return f'channel="{_escape(channel)}"'

    lines += _gauge("chargebridge_messages_received_total",
                    "Messages journaled per channel.", "counter",
                    [(lab(c), sum(s.values())) for c, s in sorted(by_channel.items())])
    lines += _gauge("chargebridge_messages_processed", "Messages processed into charges.",
                    "gauge", [(lab(c), s.get("PROCESSED", 0)) for c, s in
                              sorted(by_channel.items())])
    lines += _gauge("chargebridge_messages_errors", "Messages in ERROR.", "gauge",
                    [(lab(c), s.get("ERROR", 0)) for c, s in sorted(by_channel.items())])
    lines += _gauge("chargebridge_messages", "Messages per channel and status.", "gauge",
                    [(f'{lab(c)},status="{_escape(st)}"', n)
                     for c, s in sorted(by_channel.items()) for st, n in sorted(s.items())])
    lines += _gauge("chargebridge_charges_held", "Charges HELD for a person.", "gauge",
                    [(lab(c), n) for c, n in sorted(held.items())])
    lines += _gauge("chargebridge_charges", "Charges per channel and status.", "gauge",
                    [(f'{lab(c)},status="{_escape(st)}"', int(n))
                     for c, st, n in sorted(charges)])
    import time

    now = time.time()
    dest_names = sorted({d.name for d in config.destinations} | {r[0] for r in queues})
    depth = {r[0]: (int(r[1]), r[2]) for r in queues}
    lines += _gauge("chargebridge_queue_depth", "Deliveries QUEUED per destination.", "gauge",
                    [(f'destination="{_escape(d)}"', depth.get(d, (0, None))[0])
                     for d in dest_names])
    lines += _gauge("chargebridge_queue_oldest_age_seconds",
                    "Age of the oldest QUEUED delivery per destination.", "gauge",
                    [(f'destination="{_escape(d)}"', now - depth[d][1])
                     for d in dest_names if d in depth and depth[d][1] is not None])
    lines += ACK_LATENCY.render()
    lines += render_histogram("chargebridge_delivery_latency_seconds",
                              "Seconds from queued to SENT, per destination.", "destination",
                              DELIVERY_BUCKETS, _delivery_latency(store))
    return "\n".join(lines) + "\n"


def router(state: Any) -> Any:
    """GET /metrics (authenticated like the API; any role)."""
    from fastapi import APIRouter, Depends
    from fastapi.responses import PlainTextResponse

    from engine.api.auth import Principal, require
    from engine.auth.roles import Permission

    r = APIRouter(tags=["health"])

    @r.get("/metrics", response_class=PlainTextResponse, response_model=None)
    def metrics(_: Principal = Depends(require(Permission.READ))) -> Any:
        """Prometheus text exposition format 0.0.4."""
        return PlainTextResponse(render(state.store, state.config),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return r
