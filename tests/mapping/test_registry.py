"""Hot reload: changed mappings and tables are swapped in whole; a broken one is refused,
reported once, and the running version keeps working."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.mapping import MappingRegistry
from tests.mapping.helpers import dft, ft1, write

MAPPING = """\
name: hot
version: "{version}"
iterate: FT1
tables:
  pos: {{file: pos.csv}}
fields:
  procedure.code: FT1-25.1
  place_of_service: {{path: FT1-16.1, lookup: pos.pos}}
"""


def _touch_later(path: Path) -> None:
    """Move the mtime forward so a change is seen even within one clock tick."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write(tmp_path, "pos.csv", "location,pos\nNCFM,11\n")
    return write(tmp_path, "hot.yaml", MAPPING.format(version="1"))


class TestMappingRegistry:
    def test_get_by_path_or_name(self, files: Path) -> None:
        """A mapping is found by its file path or its name."""
        registry = MappingRegistry([files])
        assert registry.get(files) is registry.get("hot")
        assert registry.check_for_changes() == []

    def test_changed_mapping_is_swapped_in(self, files: Path) -> None:
        """A valid edit replaces the mapping between messages and is reported."""
        registry = MappingRegistry([files])
        files.write_text(MAPPING.format(version="2"))
        _touch_later(files)
        (report,) = registry.check_for_changes()
        assert report.startswith("reloaded") and "version 2" in report
        assert registry.get("hot").version == "2"

    def test_changed_table_is_swapped_in(self, files: Path) -> None:
        """Editing a lookup table reloads the mapping that uses it."""
        registry = MappingRegistry([files])
        table = files.parent / "pos.csv"
        table.write_text("location,pos\nNCFM,22\n")
        _touch_later(table)
        assert len(registry.check_for_changes()) == 1
        charge = registry.get("hot").apply(dft(ft1(1, location="NCFM")), channel="c")
        assert charge.charges[0].charge.place_of_service == "22"

    def test_broken_edit_is_refused_once_and_old_mapping_kept(self, files: Path) -> None:
        """A mapping that fails the check is refused, reported once, and the old one runs."""
        registry = MappingRegistry([files])
        running = registry.get("hot")
        files.write_text(MAPPING.format(version="3").replace("FT1-25.1", "FT1-25.1.1.1"))
        _touch_later(files)
        (report,) = registry.check_for_changes()
        assert report.startswith(f"refused {files}") and "fields.procedure.code" in report
        assert registry.check_for_changes() == []
        assert registry.get("hot") is running
        result = running.apply(dft(ft1(1)), channel="c")
        assert result.charges[0].charge.procedure.code == "99213"

    def test_startup_failure_lists_every_problem(self, tmp_path: Path) -> None:
        """The registry refuses to start with a broken mapping, naming its problems."""
        bad = write(tmp_path, "bad.yaml", 'version: "1"\nfields:\n  nope: PID-3\n')
        with pytest.raises(ConfigError) as caught:
            MappingRegistry([bad])
        assert "unknown charge field 'nope'" in caught.value.problems[0]

    def test_unregistered_path_is_loaded_on_first_use(self, files: Path) -> None:
        """An empty registry loads a mapping file the first time it is asked for."""
        registry = MappingRegistry()
        assert registry.get(str(files)).name == "hot"
        assert [m.name for m in registry.mappings()] == ["hot"]
        with pytest.raises(ConfigError, match="no such mapping"):
            registry.get("nowhere")
