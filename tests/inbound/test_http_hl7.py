"""HL7 over HTTP (`POST /hl7/{channel}`) on a real engine's listener: the ACK in the body,
the HTTP status matching MSA-1, token auth, and refusals that journal nothing."""

from __future__ import annotations

import httpx
import pytest

from engine.auth.tokens import create_token
from engine.runtime import IngestNode
from tests.inbound.conftest import StartNode, channel, count, dft, err, msa

HL7 = {"Content-Type": "application/hl7-v2"}


def _http_channel(**settings: object) -> dict[str, object]:
    return channel("web", source={"type": "http_hl7", "require_token": False, **settings})


def _url(node: IngestNode, name: str = "web") -> str:
    return f"http://127.0.0.1:{node.http_port}/hl7/{name}"


@pytest.fixture
async def client() -> httpx.AsyncClient:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http  # type: ignore[misc]


class TestHttpHl7:
    async def test_good_message_is_200_with_aa(self, start_node: StartNode,
                                               client: httpx.AsyncClient) -> None:
        """A DFT posted as application/hl7-v2 is journaled and answered 200 with an AA ACK."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), content=dft(1), headers=HL7)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/hl7-v2")
        assert msa(response.content)[1:3] == ["AA", "C1"]
        [stored] = node.store.search_messages(channel="web")
        assert stored.raw == dft(1) and stored.transport == "http"

    async def test_text_plain_is_accepted(self, start_node: StartNode,
                                          client: httpx.AsyncClient) -> None:
        """text/plain bodies are HL7 too."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), content=dft(2),
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        assert response.status_code == 200 and msa(response.content)[1] == "AA"

    async def test_unreadable_message_is_400_ae_and_kept(self, start_node: StartNode,
                                                         client: httpx.AsyncClient) -> None:
        """A message without MSH-10 is 400 with an AE naming MSH-10, stored as ERROR."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), content=dft(3).replace(b"|C3|", b"||"),
                                     headers=HL7)
        assert response.status_code == 400
        assert msa(response.content)[1] == "AE" and "MSH^1^10" in err(response.content)
        assert count(node.store, status="ERROR") == 1

    async def test_refused_type_is_422_ar(self, start_node: StartNode,
                                          client: httpx.AsyncClient) -> None:
        """A message type the channel does not accept is 422 with AR, stored as ERROR."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), content=dft(4).replace(b"DFT^P03", b"ORU^R01"),
                                     headers=HL7)
        assert response.status_code == 422 and msa(response.content)[1] == "AR"
        assert count(node.store, status="ERROR") == 1

    async def test_enhanced_ne_is_204_without_body(self, start_node: StartNode,
                                                   client: httpx.AsyncClient) -> None:
        """MSH-15 NE asks for no ACK: 204 No Content, the message journaled."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), content=dft(5, msh15="NE"), headers=HL7)
        assert response.status_code == 204 and response.content == b""
        assert count(node.store) == 1

    async def test_duplicate_post_is_200_again_stored_once(self, start_node: StartNode,
                                                           client: httpx.AsyncClient) -> None:
        """Posting the same MSH-10 twice answers AA both times and stores one message."""
        node = await start_node([_http_channel()])
        for _ in range(2):
            response = await client.post(_url(node), content=dft(6), headers=HL7)
            assert response.status_code == 200 and msa(response.content)[1] == "AA"
        assert count(node.store) == 1


class TestHttpRefusals:
    async def test_json_content_type_is_415_and_not_kept(self, start_node: StartNode,
                                                         client: httpx.AsyncClient) -> None:
        """A JSON body is refused with 415 before anything is journaled."""
        node = await start_node([_http_channel()])
        response = await client.post(_url(node), json={"resourceType": "Patient"})
        assert response.status_code == 415
        assert count(node.store) == 0

    async def test_unknown_channel_is_404(self, start_node: StartNode,
                                          client: httpx.AsyncClient) -> None:
        """Posting to a channel that is not an http_hl7 channel is 404 (here: an MLLP one)
        for a caller with a valid token; without one it is 401, so names cannot be probed."""
        node = await start_node([_http_channel(), channel("ehr")])
        token = create_token(node.store, "ehr-feed", "operator")
        for name in ("nope", "ehr"):
            anonymous = await client.post(_url(node, name), content=dft(7), headers=HL7)
            assert anonymous.status_code == 401
            response = await client.post(_url(node, name), content=dft(7),
                                         headers={**HL7, "Authorization": f"Bearer {token}"})
            assert response.status_code == 404
        assert count(node.store) == 0

    async def test_missing_token_is_401(self, start_node: StartNode,
                                        client: httpx.AsyncClient) -> None:
        """With require_token, a request without a valid bearer token is 401, not journaled."""
        node = await start_node([_http_channel(require_token=True)])
        bare = await client.post(_url(node), content=dft(8), headers=HL7)
        wrong = await client.post(_url(node), content=dft(8),
                                  headers={**HL7, "Authorization": "Bearer not-a-token"})
        assert bare.status_code == wrong.status_code == 401
        assert bare.headers["www-authenticate"].startswith("Bearer")
        assert count(node.store) == 0

    async def test_operator_token_is_accepted_viewer_token_is_403(
            self, start_node: StartNode, client: httpx.AsyncClient) -> None:
        """A live operator token may post (200 AA); a viewer token is 403 and not journaled."""
        node = await start_node([_http_channel(require_token=True)])
        operator = create_token(node.store, "ehr-feed", "operator")
        viewer = create_token(node.store, "dashboard-bot", "viewer")
        ok = await client.post(_url(node), content=dft(10),
                               headers={**HL7, "Authorization": f"Bearer {operator}"})
        refused = await client.post(_url(node), content=dft(11),
                                    headers={**HL7, "Authorization": f"Bearer {viewer}"})
        assert ok.status_code == 200 and msa(ok.content)[1] == "AA"
        assert refused.status_code == 403
        assert [m.control_id for m in node.store.search_messages()] == ["C10"]

    async def test_body_over_limit_is_413(self, start_node: StartNode,
                                          client: httpx.AsyncClient) -> None:
        """A body larger than max_body_bytes is 413 and not journaled."""
        node = await start_node([_http_channel(max_body_bytes=4096)])
        big = dft(9) + b"NTE|1||" + b"z" * 5000 + b"\r"
        response = await client.post(_url(node), content=big, headers=HL7)
        assert response.status_code == 413
        assert count(node.store) == 0
