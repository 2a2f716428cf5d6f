"""The mapping context of one ChargeItem: the resources its references point at, resolved
against the FHIR resource store, and a finding for every reference that cannot be.

The context dict a `input: fhir` mapping sees:
    ChargeItem    the ChargeItem itself
    Patient       ChargeItem.subject
    Encounter     ChargeItem.context (when it is an Encounter)
    Practitioner  the first ChargeItem.performer.actor that is a Practitioner
    Account       the first ChargeItem.account
    Coverage      list: the Account's coverages by priority, else the Patient's active
                  Coverages (Coverage.beneficiary) by Coverage.order; each payor Reference
                  that resolves to an Organization gains that Organization's first
                  identifier and its name as display (when it had none), so a mapping reads
                  `Coverage.payor.identifier.value` and `Coverage.payor.display`
    Organization  ChargeItem.performingOrganization (else requestingOrganization)
A key is absent when there is nothing to put there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.charge import Finding
from engine.fhir.references import parse_reference
from engine.store import fhir_resources as rs
from engine.store.base import SqlStore

__all__ = ["ChargeItemContext", "build_context", "resolve_reference"]


@dataclass
class ChargeItemContext:
    """The mapping context and what could not be resolved."""

    context: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    mrn: str | None = None


def resolve_reference(store: SqlStore, container: dict[str, Any], ref: Any,
                      expected: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(resource, None) when `ref` resolves; (None, why) when it does not; (None, None)
    when there is no reference. Handles `#contained`, `Type/id[/_history/v]`, absolute
    URLs and identifier-only (logical) references."""
    if not isinstance(ref, dict):
        return None, None
    text = ref.get("reference")
    if isinstance(text, str) and text:
        if text.startswith("#"):
            for item in container.get("contained") or []:
                if isinstance(item, dict) and item.get("id") == text[1:]:
                    return item, None
            return None, f"contained resource {text} is not in the resource"
        target = parse_reference(text)
        if target is None:
            return None, f"reference {text!r} was not resolved when it arrived"
        if expected is not None and target.resource_type != expected:
            return None, f"refers to a {target.resource_type}, expected a {expected}"
        if target.version_id is not None and target.version_id.isdigit():
            found = rs.get_version(store, target.resource_type, target.resource_id,
                                   int(target.version_id))
        else:
            found = rs.get_resource(store, target.resource_type, target.resource_id)
        if found is None:
            return None, f"{target.key} has not been received"
        return found.content, None
    ident = ref.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        rtype = ref.get("type") if isinstance(ref.get("type"), str) else expected
        if rtype is None:
            return None, "an identifier reference without a type cannot be resolved"
        system = ident.get("system")
        found = rs.find_by_identifier(store, rtype, system if isinstance(system, str) else None,
                                      ident["value"])
        if found is None:
            return None, f"no {rtype} with the referenced identifier has been received"
        return found.content, None
    return None, None


def _mrn(patient: dict[str, Any]) -> str | None:
    idents = [i for i in patient.get("identifier") or [] if isinstance(i, dict)
              and isinstance(i.get("value"), str)]
    for ident in idents:
        codes = [c.get("code") for c in (ident.get("type") or {}).get("coding") or []
                 if isinstance(c, dict)]
        if "MR" in codes:
            return str(ident["value"])
    return str(idents[0]["value"]) if idents else None


def _hold(path: str, why: str) -> Finding:
    return Finding(rule="fhir.unresolved_reference", severity="hold", field=path,
                   message=f"ChargeItem.{path}: {why}")


def _warn(path: str, why: str) -> Finding:
    return Finding(rule="fhir.unresolved_reference", severity="warn", field=path,
                   message=f"ChargeItem.{path}: {why}")


def build_context(store: SqlStore, item: dict[str, Any]) -> ChargeItemContext:
    """Resolve a ChargeItem's references into the mapping context (module docstring)."""
    out = ChargeItemContext({"ChargeItem": item})
    ctx = out.context

    patient, why = resolve_reference(store, item, item.get("subject"), "Patient")
    if patient is not None:
        ctx["Patient"] = patient
        out.mrn = _mrn(patient)
    else:
        out.findings.append(_hold("subject", why or "no subject: the patient is unknown"))

    encounter_ref = item.get("context")
    if isinstance(encounter_ref, dict):
        target = parse_reference(str(encounter_ref.get("reference") or ""))
        if target is None or target.resource_type == "Encounter":
            encounter, why = resolve_reference(store, item, encounter_ref, "Encounter")
            if encounter is not None:
                ctx["Encounter"] = encounter
            elif why:
                out.findings.append(_hold("context", why))

    for index, performer in enumerate(item.get("performer") or []):
        actor = performer.get("actor") if isinstance(performer, dict) else None
        target = parse_reference(str((actor or {}).get("reference") or ""))
        if target is not None and target.resource_type != "Practitioner":
            continue  # a PractitionerRole, Organization or Device: not a rendering NPI
        practitioner, why = resolve_reference(store, item, actor, "Practitioner")
        if practitioner is not None:
            ctx["Practitioner"] = practitioner
            break
        if why:
            out.findings.append(_hold(f"performer[{index}].actor", why))
            break

    for key in ("performingOrganization", "requestingOrganization"):
        org, why = resolve_reference(store, item, item.get(key), "Organization")
        if org is not None:
            ctx["Organization"] = org
            break
        if why:
            out.findings.append(_warn(key, why))

    coverages: list[dict[str, Any]] = []
    accounts = [a for a in item.get("account") or [] if isinstance(a, dict)]
    if accounts:
        account, why = resolve_reference(store, item, accounts[0], "Account")
        if account is not None:
            ctx["Account"] = account
            ranked = sorted((c for c in account.get("coverage") or [] if isinstance(c, dict)),
                            key=lambda c: c.get("priority") or 1 << 30)
            for entry in ranked:
                coverage, _ = resolve_reference(store, account, entry.get("coverage"),
                                                "Coverage")
                if coverage is not None:
                    coverages.append(coverage)
        elif why:
            out.findings.append(_warn("account[0]", why))
    if not coverages and patient is not None and patient.get("id"):
        found = rs.find_referencing(store, "Coverage", "beneficiary", f"Patient/{patient['id']}")
        active = [r.content for r in found if r.content.get("status") == "active"]
        coverages = sorted(active, key=lambda c: c.get("order") or 1 << 30)
    if coverages:
        ctx["Coverage"] = [_with_payor_details(store, c) for c in coverages]
    return out


def _with_payor_details(store: SqlStore, coverage: dict[str, Any]) -> dict[str, Any]:
    """A copy of `coverage` whose payor References carry the payor's identifier and name."""
    payors = []
    for ref in coverage.get("payor") or []:
        org, _ = resolve_reference(store, coverage, ref, None)
        if isinstance(ref, dict) and org is not None and org.get("resourceType") == "Organization":
            ref = dict(ref)
            idents = [i for i in org.get("identifier") or [] if isinstance(i, dict)]
            if "identifier" not in ref and idents:
                ref["identifier"] = idents[0]
            if "display" not in ref and org.get("name"):
                ref["display"] = org["name"]
        payors.append(ref)
    return {**coverage, "payor": payors} if payors else coverage
