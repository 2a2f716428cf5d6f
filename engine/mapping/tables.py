"""Lookup tables: CSV or YAML files (or inline rows), loaded once into plain dicts.

A table maps a key to a row (a dict of column -> value). CSV: a header row, the key column
is `key:` or the first one. YAML: a mapping of key -> value or key -> row, or a list of rows.
A table whose rows are single values (inline `rows: {CG: charge}`) has one column, `value`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Table", "TableError", "load_table"]

VALUE_COLUMN = "value"


class TableError(ValueError):
    """A table file cannot be read; the message says which row or column and why."""


@dataclass
class Table:
    """Rows by key; `columns` lists every column (the key column first)."""

    name: str
    rows: dict[str, dict[str, Any]]
    columns: list[str]
    path: Path | None = None
    key_column: str = "key"
    files: list[Path] = field(default_factory=list)


def _key_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _from_rows(name: str, rows: list[dict[str, Any]], key: str | None,
               path: Path | None) -> Table:
    if not rows:
        return Table(name, {}, [key or "key"], path, key or "key")
    columns: list[str] = []
    for row in rows:
        columns += [str(c) for c in row if str(c) not in columns]
    key_column = key or columns[0]
    if key_column not in columns:
        raise TableError(f"key column {key_column!r} is not a column "
                         f"(columns: {', '.join(columns)})")
    out: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, 1):
        key_value = _key_text(row.get(key_column))
        if not key_value:
            raise TableError(f"row {number}: the key column {key_column!r} is empty")
        if key_value in out:
            raise TableError(f"row {number}: duplicate key {key_value!r}")
        out[key_value] = {str(k): v for k, v in row.items()}
    columns.remove(key_column)
    return Table(name, out, [key_column, *columns], path, key_column)


def _from_mapping(name: str, data: dict[Any, Any], key: str | None,
                  path: Path | None) -> Table:
    key_column = key or "key"
    rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = [key_column]
    for raw_key, value in data.items():
        key_value = _key_text(raw_key)
        if isinstance(value, dict):
            row = {str(k): v for k, v in value.items()}
            columns += [c for c in row if c not in columns]
        else:
            row = {VALUE_COLUMN: value}
            if VALUE_COLUMN not in columns:
                columns.append(VALUE_COLUMN)
        row[key_column] = key_value
        rows[key_value] = row
    return Table(name, rows, columns, path, key_column)


def table_from_data(name: str, data: Any, key: str | None, path: Path | None = None) -> Table:
    """Build a table from parsed YAML (a mapping or a list of rows)."""
    if isinstance(data, dict):
        return _from_mapping(name, data, key, path)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return _from_rows(name, data, key, path)
    raise TableError("a YAML table is a mapping of key -> value/row, or a list of rows")


def load_table(name: str, path: Path, key: str | None) -> Table:
    """Read a .csv, .yaml or .yml table file; raise TableError saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TableError(f"cannot read {path} ({exc.strerror})") from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise TableError("the CSV file has no header row")
        header = [h.strip() for h in reader.fieldnames]
        if len(set(header)) != len(header):
            raise TableError(f"duplicate column names in the header: {', '.join(header)}")
        rows = []
        for row in reader:
            if None in row:
                raise TableError(f"line {reader.line_num}: more cells than header columns")
            cleaned = {k.strip(): (v.strip() if isinstance(v, str) else v)
                       for k, v in row.items()}
            # Empty cells are absent values, so a lookup falls through to its default.
            rows.append({k: (v if v != "" else None) for k, v in cleaned.items()})
        try:
            table = _from_rows(name, rows, key, path)
        except TableError as exc:
            raise TableError(f"{exc} (CSV data rows are numbered from 1 after the header)") \
                from None
        if not rows:
            table.columns = header if key is None else [key, *[h for h in header if h != key]]
            table.key_column = table.columns[0]
        return table
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TableError(f"YAML syntax error: {exc}") from exc
        return table_from_data(name, data if data is not None else {}, key, path)
    raise TableError(f"unsupported table file type {suffix!r} (use .csv, .yaml or .yml)")
