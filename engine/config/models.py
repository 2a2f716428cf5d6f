"""The pydantic models of config.yaml.

Connector settings (`source:` and each destination) are validated by the model the
connector itself declares; here they are kept as raw dicts until `loader` resolves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(_Strict):
    url: str = Field("sqlite:///var/chargebridge.db",
                     description="sqlite:///path (embedded) or postgresql://... (production).")
    fsync: bool = Field(True, description="fsync every journal commit before acknowledging.")
    group_commit_max: int = Field(
        512, ge=1, description="Most messages one journal commit may carry.")


class TlsConfig(_Strict):
    cert: Path = Field(description="PEM certificate chain.")
    key: Path = Field(description="PEM private key.")
    ca: Path | None = Field(None, description="CA bundle for verifying client certificates.")
    require_client_cert: bool = Field(False, description="Mutual TLS.")


class HttpConfig(_Strict):
    host: str = Field("127.0.0.1", description="Listen address of the HTTP listener.")
    port: int = Field(8080, ge=0, le=65535, description="Listen port (0 = any free port).")
    tls: TlsConfig | None = Field(None, description="Serve HTTPS when set.")
    max_body_bytes: int = Field(10 << 20, ge=1024, description="Largest accepted request body.")


class ProcessingConfig(_Strict):
    nice: int = Field(10, ge=0, le=19, description=(
        "CPU priority (Unix nice) of the processor child under `--role all`: when the "
        "cores are short, acknowledgements go first and processing catches up in lulls. "
        "On a host busy with other work, 0 keeps processing from being starved."))


class ConnectorConfig(BaseModel):
    """`type:` plus that connector's own settings, checked by the connector's model."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Connector type name from the registry.")

    def settings_dict(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DestinationConfig(ConnectorConfig):
    name: str = Field(description="Unique destination name; deliveries are tracked per name.")


class ChannelConfig(_Strict):
    name: str = Field(description="Unique channel name, used in ids, logs and the dashboard.")
    enabled: bool = Field(True, description="A disabled channel is loaded but not started.")
    source: ConnectorConfig = Field(description="Where messages come from.")
    accept: list[str] = Field(
        default_factory=lambda: ["DFT^P03"],
        description="Message types accepted (MSH-9.1^MSH-9.2); others get AR.")
    mapping: Path | None = Field(None, description="YAML mapping that turns messages into charges.")
    destinations: list[str] = Field(default_factory=list,
                                    description="Names of destinations charges are routed to.")
    ack_timing: Literal["journal", "processed"] = Field(
        "journal", description="Acknowledge after journaling (default) or after processing.")
    duplicate_window_seconds: int = Field(
        7 * 86400, ge=0, description="A resent MSH-10 from the same sender within this window "
        "is acknowledged again but not processed twice.")
    retention_days: int | None = Field(None, ge=1, description="Days message content is kept.")
    strict_validation: bool = Field(
        False, description="Validate every message with hl7apy against its version and "
        "structure; a failure is answered AE with an ERR naming the segment and field.")
    enrichment: Literal["off", "fill-missing", "prefer-ADT"] = Field(
        "fill-missing", description="How a DFT lacking demographics or coverage is enriched "
        "from the ADT context of the same MRN and visit.")

    @field_validator("accept")
    @classmethod
    def _types_upper(cls, value: list[str]) -> list[str]:
        return [v.strip().upper() for v in value]


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class EngineConfig(_Strict):
    """The whole deployment: store, listeners, channels and destinations."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    out_dir: Path = Field(Path("var/out"), description="Base directory for output files.")
    scrub: dict[str, Any] = Field(default_factory=dict, description="Scrubber rule settings.")
    channels: list[ChannelConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    # Filled by the loader: validated connector settings objects, by channel/destination name.
    source_settings: dict[str, Any] = Field(default_factory=dict, exclude=True)
    destination_settings: dict[str, Any] = Field(default_factory=dict, exclude=True)
    base_dir: Path = Field(Path("."), exclude=True)

    def channel(self, name: str) -> ChannelConfig:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def resolve(self, path: Path) -> Path:
        """A path from the config, relative to the config file's directory."""
        return path if path.is_absolute() else self.base_dir / path
