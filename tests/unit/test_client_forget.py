"""``forget`` in the client and the CLI, against a scripted server (httpx.MockTransport).

The server side (every store) is tested in tests/integration; here: which request
goes out, how the answer is read and checked, retries, and what the CLI prints.
"""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from api.schemas import DocumentDeleted
from clients import AsyncHerClient, HerClient, HerServeError, RetryPolicy
from clients import cli

FAST = RetryPolicy(deadline_s=5, backoff_base_s=0.01, backoff_max_s=0.02)
URL = "http://cluster:8000"


class ScriptedServer:
    """Answers forget requests from a set of stored ids, after ``failures`` 503s."""

    def __init__(self, stored: set[str], failures: int = 0):
        self.stored = set(stored)
        self.failures = failures
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.failures:
            self.failures -= 1
            return httpx.Response(503, json={"error": {
                "message": "PostgreSQL is unreachable", "type": "unavailable",
                "code": "store_unavailable"}})
        if request.method == "DELETE":
            prefix = "/v1/documents/"
            return httpx.Response(200, json=self.deleted(request.url.path[len(prefix):]))
        ids = json.loads(request.content)["ids"]
        return httpx.Response(200, json={"object": "list", "data": [self.deleted(i) for i in ids]})

    def deleted(self, doc_id: str) -> dict:
        present = doc_id in self.stored
        self.stored.discard(doc_id)
        return {"object": "document.deleted", "id": doc_id, "deleted": present}


def client_for(server: ScriptedServer, policy: RetryPolicy = FAST) -> HerClient:
    return HerClient([URL], "t", policy, transport=httpx.MockTransport(server))


def test_one_id_is_a_delete_of_its_path():
    server = ScriptedServer({"note-1"})
    with client_for(server) as client:
        assert client.forget("note-1") == [DocumentDeleted(id="note-1", deleted=True)]
    [request] = server.seen
    assert (request.method, request.url.path) == ("DELETE", "/v1/documents/note-1")
    assert request.headers["Authorization"] == "Bearer t"


def test_an_id_with_a_slash_or_space_travels_percent_encoded():
    server = ScriptedServer({"notes/2024 06?x"})
    with client_for(server) as client:
        [result] = client.forget(["notes/2024 06?x"])
    assert result.deleted and result.id == "notes/2024 06?x"
    assert server.seen[0].url.raw_path == b"/v1/documents/notes%2F2024%2006%3Fx"


def test_several_ids_are_one_bulk_call_answered_in_order():
    server = ScriptedServer({"a", "c"})
    with client_for(server) as client:
        results = client.forget(["a", "b", "c"])
    assert [(r.id, r.deleted) for r in results] == [("a", True), ("b", False), ("c", True)]
    [request] = server.seen
    assert (request.method, request.url.path) == ("POST", "/v1/documents/delete")
    assert json.loads(request.content) == {"ids": ["a", "b", "c"]}


def test_forgetting_twice_answers_deleted_false():
    server = ScriptedServer({"a"})
    with client_for(server) as client:
        assert client.forget("a")[0].deleted
        assert not client.forget("a")[0].deleted


def test_a_store_outage_is_retried_with_one_idempotency_key():
    server = ScriptedServer({"a", "b"}, failures=2)
    with client_for(server) as client:
        assert [r.deleted for r in client.forget(["a", "b"])] == [True, True]
    assert len(server.seen) == 3
    assert len({r.headers["Idempotency-Key"] for r in server.seen}) == 1


def test_an_outage_past_the_deadline_carries_the_servers_reason():
    server = ScriptedServer({"a"}, failures=1000)
    with client_for(server, RetryPolicy(deadline_s=1, backoff_base_s=0.05)) as client:
        with pytest.raises(HerServeError) as err:
            client.forget("a")
    assert err.value.status == 503 and "PostgreSQL is unreachable" in str(err.value)


@pytest.mark.parametrize("ids", [[], [""], ["a", "a"], ["x" * 257], [f"d{i}" for i in range(257)]])
def test_ids_the_server_would_refuse_are_refused_before_sending(ids):
    server = ScriptedServer(set())
    with client_for(server) as client, pytest.raises(ValueError):
        client.forget(ids)
    assert server.seen == []


def test_an_answer_about_other_ids_is_a_bad_response():
    def wrong(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "data": [
            {"object": "document.deleted", "id": "b", "deleted": True}]})

    with HerClient([URL], policy=FAST, transport=httpx.MockTransport(wrong)) as client:
        with pytest.raises(HerServeError) as err:
            client.forget(["a", "b"])
    assert err.value.type == "bad_response"


async def test_async_client_forgets():
    server = ScriptedServer({"a"})
    async with AsyncHerClient([URL], policy=FAST, transport=httpx.MockTransport(server)) as client:
        assert await client.forget("a") == [DocumentDeleted(id="a", deleted=True)]
        assert [r.deleted for r in await client.forget(["a", "b"])] == [False, False]


def test_cli_forget_says_what_was_deleted_and_what_was_not_found(cli_server):
    server = cli_server(ScriptedServer({"note-1", "[red]x"}))
    result = CliRunner().invoke(cli.app, ["--url", URL, "forget", "note-1", "gone", "[red]x"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == ["deleted: note-1", "not found: gone", "deleted: [red]x"]
    assert "2 deleted, 1 not found" in result.output
    assert server.stored == set()


def test_cli_forget_of_one_id_uses_delete(cli_server):
    server = cli_server(ScriptedServer(set()))
    result = CliRunner().invoke(cli.app, ["--url", URL, "forget", "nothing-here"])
    assert result.exit_code == 0 and "not found: nothing-here" in result.output
    assert server.seen[0].method == "DELETE"


def test_cli_forget_with_a_store_down_is_one_readable_error(cli_server):
    cli_server(ScriptedServer({"a"}, failures=1000))
    result = CliRunner().invoke(cli.app, ["--url", URL, "--deadline", "1", "forget", "a"])
    text = " ".join(result.output.split())  # the console wraps long lines
    assert result.exit_code == 1, result.output
    assert "error:" in text and "PostgreSQL is unreachable" in text, result.output
    assert "Traceback" not in text


def test_cli_forget_of_repeated_ids_is_refused_before_sending(cli_server):
    server = cli_server(ScriptedServer({"a"}))
    result = CliRunner().invoke(cli.app, ["--url", URL, "forget", "a", "a"])
    assert result.exit_code == 2 and "unique" in result.output
    assert server.seen == []
