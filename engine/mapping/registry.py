"""Hot reload: the running set of compiled mappings, swapped atomically when files change.

`check_for_changes` is called between messages (the pipeline decides when). A changed
mapping, base mapping or table is reloaded and checked in full; only a mapping that passes
replaces the running one. One that fails is refused and reported once, and the old one keeps
running until a fixed file arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from engine.errors import ConfigError
from engine.mapping.loader import load_mapping
from engine.mapping.mapping import CompiledMapping

__all__ = ["MappingRegistry"]

log = structlog.get_logger(__name__)
Fingerprint = tuple[tuple[str, int, int], ...]


def _fingerprint(files: Iterable[Path]) -> Fingerprint:
    out = []
    for path in files:
        try:
            stat = path.stat()
            out.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            out.append((str(path), -1, -1))
    return tuple(out)


@dataclass
class _Entry:
    mapping: CompiledMapping
    fingerprint: Fingerprint
    refused: Fingerprint | None = None  # the file state last refused, reported once


class MappingRegistry:
    """Compiled mappings by path and by name; `get` never sees a half-loaded mapping."""

    def __init__(self, paths: Iterable[str | Path] = ()) -> None:
        """Load every mapping; raise ConfigError with the problems of all that fail."""
        self._entries: dict[Path, _Entry] = {}
        # get() runs per message; resolving a path is a few syscalls, so remember it.
        self._resolved: dict[str | Path, Path] = {}
        self._lock = threading.Lock()
        problems: list[str] = []
        for path in paths:
            try:
                self._load(Path(path))
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)

    def _load(self, path: Path) -> CompiledMapping:
        mapping = load_mapping(path)
        self._entries[path.resolve()] = _Entry(mapping, _fingerprint(mapping.files))
        return mapping

    def get(self, name_or_path: str | Path) -> CompiledMapping:
        """The running mapping for a file path (loaded on first use) or a mapping name."""
        key = self._resolved.get(name_or_path)
        if key is None:
            key = self._resolved[name_or_path] = Path(name_or_path).resolve()
        entry = self._entries.get(key)
        if entry is not None:
            return entry.mapping
        if isinstance(name_or_path, str):
            for candidate in list(self._entries.values()):
                if candidate.mapping.name == name_or_path:
                    return candidate.mapping
        if Path(name_or_path).is_file():
            with self._lock:
                return self._load(Path(name_or_path))
        known = ", ".join(sorted(e.mapping.name for e in self._entries.values())) or "none"
        raise ConfigError([f"{name_or_path}:1:1: mapping: no such mapping file or name "
                           f"(loaded: {known})"])

    def mappings(self) -> list[CompiledMapping]:
        """Every running mapping."""
        return [entry.mapping for entry in self._entries.values()]

    def check_for_changes(self) -> list[str]:
        """Reload changed mappings; returns one report line per reload or refusal."""
        reports: list[str] = []
        with self._lock:
            for key, entry in list(self._entries.items()):
                now = _fingerprint(entry.mapping.files)
                if now == entry.fingerprint or now == entry.refused:
                    continue
                try:
                    fresh = load_mapping(entry.mapping.path)
                except ConfigError as exc:
                    entry.refused = now
                    log.warning("mapping_reload_refused", mapping=entry.mapping.name,
                                problems=len(exc.problems))
                    reports.append(
                        f"refused {entry.mapping.path}: keeping {entry.mapping.name} version "
                        f"{entry.mapping.version} running\n  " + "\n  ".join(exc.problems))
                    continue
                if fresh.file_hash == entry.mapping.file_hash:
                    # Touched but identical: nothing to swap.
                    self._entries[key] = _Entry(entry.mapping, _fingerprint(fresh.files))
                    continue
                # One assignment: readers see the old or the new mapping, never a mix.
                self._entries[key] = _Entry(fresh, _fingerprint(fresh.files))
                log.info("mapping_reloaded", mapping=fresh.name, version=fresh.version,
                         mapping_hash=fresh.file_hash)
                reports.append(f"reloaded {fresh.path}: {fresh.name} version {fresh.version} "
                               f"(hash {fresh.file_hash})")
        return reports
