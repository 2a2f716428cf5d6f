"""HTTPS for the HTTP listener when `http.tls` is configured: the API answers over TLS
and the session cookie is marked Secure."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import yaml

from engine.api.testing import (
    PASSWORD,
    add_users,
    cheap_password_hashing,
    running_node,
    write_config,
)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TestHttps:
    def test_api_over_tls_sets_a_secure_cookie(self, tmp_path: Path) -> None:
        """With http.tls set the listener speaks HTTPS only, and a login cookie carries
        Secure besides HttpOnly and SameSite."""
        cert, key = _self_signed(tmp_path)
        config = write_config(tmp_path)
        doc = yaml.safe_load(config.read_text())
        doc["http"]["tls"] = {"cert": str(cert), "key": str(key)}
        config.write_text(yaml.safe_dump(doc))
        cheap_password_hashing()
        with running_node(config) as node:
            add_users(node.store)
            base = f"https://127.0.0.1:{node.http_port}"
            trust = ssl.create_default_context(cafile=str(cert))
            with httpx.Client(base_url=base, verify=trust, timeout=30) as client:
                assert client.get("/healthz").status_code == 200
                reply = client.post("/api/session",
                                    json={"name": "operator", "password": PASSWORD})
                assert reply.status_code == 200
                cookie = reply.headers["set-cookie"].lower()
                assert "secure" in cookie and "httponly" in cookie
            plain = httpx.Client(base_url=f"http://127.0.0.1:{node.http_port}", timeout=10)
            try:
                refused = False
                try:
                    plain.get("/healthz")
                except httpx.HTTPError:
                    refused = True
                assert refused or plain.get("/healthz").status_code >= 400
            finally:
                plain.close()
