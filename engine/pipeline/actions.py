"""Operator actions shared by the CLI and the admin API: release held charges and
reprocess messages. Each returns what it did, per item."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.store.base import SqlStore


def release_charges(store: SqlStore, config: Any, charge_ids: Iterable[str],
                    who: str) -> dict[str, str]:
    """Send HELD charges on to the destinations of their channel that accept them."""
    from engine.runtime import build_destinations

    destinations = build_destinations(config, store)
    results: dict[str, str] = {}
    for charge_id in charge_ids:
        found = store.get_charge(charge_id)
        if found is None:
            results[charge_id] = "not found"
            continue
        charge, status, _, _ = found
        if status != "HELD":
            results[charge_id] = f"not held (status {status})"
            continue
        channel_name = charge.source.get("channel", "")
        try:
            channel = config.channel(channel_name)
        except KeyError:
            results[charge_id] = f"channel {channel_name!r} is no longer configured"
            continue
        targets = [d for d in channel.destinations if destinations[d].accepts(charge)]
        ok = store.release_charge(charge_id, targets, who)
        results[charge_id] = "released" if ok else "not held"
    return results


def reprocess_messages(store: SqlStore, message_ids: Iterable[int], who: str) -> dict[int, str]:
    return {mid: "queued for reprocessing" if store.requeue_message(mid, who) else "not found"
            for mid in message_ids}
