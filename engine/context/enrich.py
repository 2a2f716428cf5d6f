"""Enriching mapped DFT charges from the ADT context, and flagging disagreements.

Per channel (`enrichment`):
- `off`: the ADT context is not consulted at all;
- `fill-missing` (default): a field the DFT left empty is taken from the context;
- `prefer-ADT`: the context's value wins wherever it has one.
Coverage moves as a whole list: filled when the charge has none (or replaced under
prefer-ADT). Every enriched field is recorded in `charge.source["enriched"]` as
`{field: "ADT message <id>"}`.

Whatever the mode (except off), a DFT whose PID disagrees with the context on birth
date, name or sex gets a `demographic_mismatch` finding with severity hold: one of the
two is wrong and a person decides which, instead of the engine silently picking one.
"""

from __future__ import annotations

from typing import Any

from engine.charge import Charge, Coverage, Finding
from engine.context.store import KnownContext, load_context

__all__ = ["MISMATCH_FIELDS", "MISMATCH_RULE", "enrich"]

MISMATCH_RULE = "demographic_mismatch"
MISMATCH_FIELDS = ("patient.birth_date", "patient.last_name", "patient.first_name",
                   "patient.sex")
_MODES = ("off", "fill-missing", "prefer-ADT")


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[last] = value


def _same(path: str, left: Any, right: Any) -> bool:
    if path == "patient.birth_date":
        return str(left)[:10] == str(right)[:10]
    return str(left).strip().casefold() == str(right).strip().casefold()


def _mismatches(data: dict[str, Any], known: KnownContext) -> list[Finding]:
    findings = []
    for path in MISMATCH_FIELDS:
        mine, theirs = _get(data, path), known.fields.get(path)
        if mine in (None, "") or theirs in (None, "") or _same(path, mine, theirs):
            continue
        findings.append(Finding(
            rule=MISMATCH_RULE, severity="hold", field=path,
            message=f"demographic mismatch: {path} differs from ADT message "
                    f"{known.sources.get(path, '?')}"))
    return findings


def enrich_one(charge: Charge, known: KnownContext, mode: str) -> tuple[Charge, list[Finding]]:
    """One charge enriched from `known` under `mode`, with its mismatch findings."""
    if mode == "off" or known.empty:
        return charge, []
    data = charge.to_json_dict()
    findings = _mismatches(data, known)
    enriched: dict[str, str] = {}
    for path, value in known.fields.items():
        if value in (None, ""):
            continue
        current = _get(data, path)
        missing = current in (None, "")
        if missing or (mode == "prefer-ADT" and not _same(path, current, value)):
            _set(data, path, value)
            enriched[path] = f"ADT message {known.sources.get(path, '?')}"
    coverage = [Coverage.model_validate(c).model_dump(mode="json") for c in known.coverage]
    if coverage and (not data.get("coverage") or mode == "prefer-ADT") and (
            data.get("coverage") != coverage):
        data["coverage"] = coverage
        enriched["coverage"] = f"ADT message {known.coverage_source}"
    if not enriched:
        return charge, findings
    source = dict(data.get("source") or {})
    source["enriched"] = {**source.get("enriched", {}), **enriched}
    data["source"] = source
    return Charge.model_validate(data), findings


def enrich(store: Any, channel_cfg: Any, mapped: list[tuple[Charge, list[Finding]]]
           ) -> list[tuple[Charge, list[Finding]]]:
    """Mapped charges of one DFT, enriched per the channel's `enrichment` mode, each with
    its findings plus any demographic mismatch. Charges without an MRN pass unchanged."""
    mode = getattr(channel_cfg, "enrichment", "fill-missing")
    if mode not in _MODES:
        raise ValueError(f"enrichment must be one of {_MODES}, got {mode!r}")
    if mode == "off":
        return mapped
    cache: dict[tuple[str, str | None], KnownContext] = {}
    out: list[tuple[Charge, list[Finding]]] = []
    for charge, findings in mapped:
        mrn = charge.patient.mrn
        if not mrn:
            out.append((charge, findings))
            continue
        key = (mrn, charge.encounter.id)
        if key not in cache:
            cache[key] = load_context(store, mrn, charge.encounter.id)
        enriched, extra = enrich_one(charge, cache[key], mode)
        out.append((enriched, list(findings) + extra))
    return out
