"""Numbered schema migrations: engine/store/migrations/NNNN_name.sql, applied in order at
start inside one transaction each, recorded in schema_migrations.

Type tokens keep one SQL file for both backends: {id} {text} {blob} {float}.

Numbered migrations are shared: both backends apply every one, and the contract tests
check that each store records all of them. Schema only one backend has (PostgreSQL's
partitioned `message_content`, engine/store/partitions.py SCHEMA) is NOT a numbered
migration: PostgresStore.migrate runs it after the shared ones, in the same transaction
under the same advisory lock, as idempotent statements (CREATE ... IF NOT EXISTS). To
change such a table later, add an idempotent statement there (ALTER TABLE ... ADD COLUMN
IF NOT EXISTS), never edit one that has shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, tokens: dict[str, str]) -> list[str]:
        text = self.sql
        for token, value in tokens.items():
            text = text.replace("{" + token + "}", value)
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def available() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    folder = resources.files("engine.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {sorted(versions)}")
    return sorted(found, key=lambda m: m.version)
