"""API tokens: made by `chargebridge token add`, shown once, kept only as a hash, and
accepted by the FHIR endpoint until revoked."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.auth.tokens import (
    TokenError,
    create_token,
    list_tokens,
    revoke_token,
    role_allows,
    verify_token,
)
from engine.cli import main
from engine.store import open_store
from tests.fhir.conftest import start_node, write_config


class TestTokenStore:
    def test_token_is_kept_hashed_and_verifies(self, tmp_path: Path) -> None:
        """A new token verifies to its name and role, and its text is not in the store."""
        store = open_store(f"sqlite:///{tmp_path / 'cb.db'}", fsync=False)
        token = create_token(store, "ehr", "operator")
        info = verify_token(store, token)
        assert info is not None and (info.name, info.role) == ("ehr", "operator")
        rows = store._query("SELECT name, role, token_hash FROM api_tokens")
        assert token not in repr(rows)
        assert verify_token(store, token + "x") is None
        store.close()

    def test_revoked_token_no_longer_verifies(self, tmp_path: Path) -> None:
        """Revoking a token stops it at once and frees its name."""
        store = open_store(f"sqlite:///{tmp_path / 'cb.db'}", fsync=False)
        token = create_token(store, "ehr", "operator")
        revoke_token(store, "ehr")
        assert verify_token(store, token) is None
        assert create_token(store, "ehr", "admin") != token
        assert [t.revoked_at is not None for t in list_tokens(store)] == [True, False]
        with pytest.raises(TokenError, match="no live token"):
            revoke_token(store, "nobody")
        store.close()

    def test_unknown_role_and_duplicate_name_are_refused(self, tmp_path: Path) -> None:
        """Roles are viewer, operator, admin; a live name is unique."""
        store = open_store(f"sqlite:///{tmp_path / 'cb.db'}", fsync=False)
        with pytest.raises(TokenError, match="role must be one of"):
            create_token(store, "x", "root")
        create_token(store, "x", "viewer")
        with pytest.raises(TokenError, match="already exists"):
            create_token(store, "x", "viewer")
        assert role_allows("admin", "operator") and not role_allows("viewer", "operator")
        store.close()


class TestTokenCli:
    async def test_token_add_prints_a_working_token_once(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`chargebridge token add NAME --role ROLE --config` prints a token the FHIR
        endpoint accepts; `token list` never prints it."""
        config_path = write_config(tmp_path, mapping=None)
        code = main(["token", "add", "epic-prod", "--role", "operator", "--config",
                     str(config_path)])
        assert code == 0
        token = capsys.readouterr().out.splitlines()[0].strip()
        assert token.startswith("cbt_")
        assert main(["token", "list", "--config", str(config_path)]) == 0
        listing = capsys.readouterr().out
        assert "epic-prod" in listing and token not in listing
        running = await start_node(config_path)
        try:
            resp = await running.client.get("/fhir/metadata",
                                             headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 200
        finally:
            await running.client.aclose()
            await running.node.stop()
