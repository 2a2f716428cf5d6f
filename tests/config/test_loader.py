"""config.yaml loading: connector settings checked by their own models, ${ENV}, and
every error located as file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import ConfigError

GOOD = """\
store:
  url: sqlite:///var/test.db
channels:
  - name: ehr_dft
    source:
      type: mllp
      port: ${CB_TEST_PORT:-2575}
    destinations: [files]
destinations:
  - name: files
    type: x12_837p
    submitter: {name: A, id: "A1", contact_name: B, contact_phone: "5555550100"}
    receiver: {name: R, id: "R1"}
    billing_provider:
      npi: "1234567893"
      name: CLINIC
      tax_id: "123456789"
      address: {line1: 1 MAIN ST, city: SPRINGFIELD, state: IL, postal_code: "62701"}
    interchange: {sender_id: A1, receiver_id: R1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


class TestLoadConfig:
    def test_valid_config_loads_with_connector_settings(self, tmp_path: Path) -> None:
        """A valid file yields the channel with its MLLP settings validated and typed."""
        config = load_config(_write(tmp_path, GOOD))
        assert config.channels[0].name == "ehr_dft"
        assert config.source_settings["ehr_dft"].port == 2575
        assert config.destination_settings["files"].usage_indicator == "T"

    def test_env_substitution(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """${VAR} is replaced from the environment and validated like a literal."""
        monkeypatch.setenv("CB_TEST_PORT", "3999")
        config = load_config(_write(tmp_path, GOOD))
        assert config.source_settings["ehr_dft"].port == 3999

    def test_missing_env_names_variable_and_line(self, tmp_path: Path) -> None:
        """An unset ${VAR} without a default is an error at its line."""
        path = _write(tmp_path, GOOD.replace("${CB_TEST_PORT:-2575}", "${CB_NOT_SET_XYZ}"))
        [problem] = _problems(path)
        assert problem.startswith(f"{path}:7:")
        assert "CB_NOT_SET_XYZ" in problem

    def test_connector_setting_error_has_file_line_and_field(self, tmp_path: Path) -> None:
        """A bad value inside a connector's settings is reported at its own line."""
        path = _write(tmp_path, GOOD.replace("${CB_TEST_PORT:-2575}", "not-a-port"))
        [problem] = _problems(path)
        assert problem.startswith(f"{path}:7:")
        assert "channels.0.source.port" in problem

    def test_unknown_field_is_rejected_at_its_line(self, tmp_path: Path) -> None:
        """A misspelt top-level key is reported with its line, not silently ignored."""
        path = _write(tmp_path, GOOD + "chanels: []\n")
        [problem] = _problems(path)
        assert f"{path}:20:1" in problem and "chanels" in problem
        assert "did you mean 'channels'" in problem

    def test_unknown_destination_suggests_the_closest(self, tmp_path: Path) -> None:
        """A channel routing to an undefined destination gets a did-you-mean hint."""
        path = _write(tmp_path, GOOD.replace("destinations: [files]", "destinations: [file]"))
        [problem] = _problems(path)
        assert "did you mean 'files'" in problem
        assert problem.startswith(f"{path}:8:")

    def test_unknown_connector_type(self, tmp_path: Path) -> None:
        """An unknown source type names the known ones."""
        path = _write(tmp_path, GOOD.replace("type: mllp", "type: mlp"))
        [problem] = _problems(path)
        assert "did you mean 'mllp'" in problem

    def test_yaml_syntax_error_has_position(self, tmp_path: Path) -> None:
        """Broken YAML is reported with the parser's line and column."""
        path = _write(tmp_path, "store: [unclosed\n")
        [problem] = _problems(path)
        assert problem.startswith(f"{path}:2:")
