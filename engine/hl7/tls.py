"""TLS contexts for MLLP: a server context (optionally requiring client certificates) and a
client context (optionally presenting one)."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from engine.errors import ChargeBridgeError

__all__ = ["TlsConfigError", "client_ssl_context", "server_ssl_context"]


class TlsConfigError(ChargeBridgeError):
    """A certificate, key or CA file cannot be loaded."""


def _load(what: str, path: str, load: Callable[[], None]) -> None:
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load TLS {what} from {path}: {exc}") from exc


def server_ssl_context(
    cert: str, key: str, ca: str | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with `require_client_cert`, clients must present a
    certificate signed by `ca` (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load("certificate/key", f"{cert}, {key}", lambda: context.load_cert_chain(cert, key))
    if ca is not None:
        _load("CA", ca, lambda: context.load_verify_locations(cafile=ca))
    if require_client_cert:
        if ca is None:
            raise TlsConfigError("mutual TLS needs a CA file to verify client certificates")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ client context verifying the server against `ca` (system CAs when None),
    presenting `cert`/`key` for mutual TLS when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _load("CA", ca, lambda: context.load_verify_locations(cafile=ca))
    if cert is not None:
        _load("certificate/key", f"{cert}, {key}", lambda: context.load_cert_chain(cert, key))
    return context
