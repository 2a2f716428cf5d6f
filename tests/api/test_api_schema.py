"""The admin API against its own OpenAPI document, with schemathesis (bounded run)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from engine.auth.tokens import create_token

# Channel control would stop this test's own listener; everything else is exercised.
_SKIP = ("/api/channels/{name}/{action}",)


class TestOpenApi:
    def test_every_api_operation_conforms_to_the_document(self, node: Any,
                                                          base_url: str) -> None:
        """Generated requests to each /api operation never cause a server error, and every
        answer matches the status codes, content types and schemas the document declares."""
        token = create_token(node.store, "schemathesis", "admin")
        headers = {"Authorization": f"Bearer {token}"}
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        operations = []
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.startswith("/api/") and operation.path not in _SKIP:
                operations.append(operation)
        assert len(operations) >= 15
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=4, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, timeout=30)

            check()
