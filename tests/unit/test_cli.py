"""The CLI without a cluster: the capacity planner's tables, readable errors, the tables it
prints, and what ingest sends."""

from __future__ import annotations

import socket

import yaml
from rich.console import Console
from typer.testing import CliRunner

from clients import tables
from clients.cli import app
from topology.nodes import NODES_FILE

runner = CliRunner()


def test_capacity_renders_every_node_and_fits():
    result = runner.invoke(app, ["capacity"])
    assert result.exit_code == 0, result.output
    for text in ("titan (head)", "panda (worker)", "ChatterboxTTS", "total in Ray",
                 "every node fits"):
        assert text in result.output


def test_capacity_says_what_does_not_fit(tmp_path):
    nodes = yaml.safe_load(NODES_FILE.read_text())
    nodes["nodes"]["panda"]["reserved"]["something-huge"] = 10.0
    small = tmp_path / "nodes.yaml"
    small.write_text(yaml.safe_dump(nodes))
    result = runner.invoke(app, ["capacity", "--nodes", str(small)])
    assert result.exit_code == 1
    assert "DOES NOT FIT" in result.output and "panda" in result.output


def test_capacity_of_a_missing_file_is_a_readable_error(tmp_path):
    result = runner.invoke(app, ["capacity", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot plan" in result.output and "Traceback" not in result.output


def test_an_unreachable_server_is_one_readable_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["--url", f"http://127.0.0.1:{port}", "--deadline", "2",
                                 "embed", "hello"])
    assert result.exit_code == 1
    assert "error:" in result.output and "connection_error" in result.output
    assert "Traceback" not in result.output


def test_a_request_the_client_refuses_is_a_readable_error():
    for args in (["--url", "panda:8000", "embed", "hi"], ["embed", " "]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and "Traceback" not in result.output


def render(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_generic_tables_show_scalars_and_lists_of_objects():
    data = {"cluster": "local", "nodes": [{"host": "titan", "gpus": 1},
                                          {"host": "panda", "gpus": 1, "alive": False}],
            "deployments": {"Embedder": [{"replica": "r1", "state": "RUNNING"}]}}
    text = render(tables.generic(data))
    assert "cluster" in text and "local" in text
    assert "titan" in text and "alive" in text and "false" in text
    assert "deployments: Embedder" in text and "RUNNING" in text


def test_server_text_is_not_read_as_markup():
    text = render(tables.generic({"results": [{"text": "[bold]hi[/bold] [red]"}]}))
    assert "[bold]hi[/bold] [red]" in text


def test_the_retrieval_view_ranks_hits_with_their_text_and_the_graphs_additions():
    answer = {
        "object": "retrieval", "query": "[red]plumber", "edges": [],
        "results": [{"id": "plumber.txt", "score": 0.7123, "metadata": {},
                     "text": "The plumber comes on Tuesday at nine to fix the kitchen sink."},
                    {"id": "[bold]x", "score": 0.1, "text": "Piano on Thursday.", "metadata": {}}],
        "entities": [{"id": "e1", "name": "Tuesday", "label": "date", "hops": 0, "score": 0.3,
                      "documents": 2}],
        "related": [{"id": "doc-9", "score": 0.2}],
        "timings_ms": {"embed": 14.21, "vector": 4.1, "total": 22.0},
    }
    lines = render(tables.retrieval_view(answer)).splitlines()
    text = "\n".join(lines)
    assert "results for: [red]plumber" in text  # the server's text is never markup
    first = next(line for line in lines if "plumber.txt" in line)
    assert "1" in first and "0.712" in first and "fix the kitchen sink." in first  # whole
    assert any("[bold]x" in line and "0.100" in line for line in lines)
    assert "Tuesday" in text and "doc-9" in text
    assert lines[-1].strip() == "ms: embed 14.2 · vector 4.1 · total 22.0"
    empty = {**answer, "results": [], "entities": [], "related": []}
    assert render(tables.retrieval_view(empty)).splitlines()[0] == "no document matched"


def test_ask_refuses_a_temperature_out_of_range_before_sending():
    result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "ask", "hi", "--temperature", "5"])
    assert result.exit_code == 2, result.output  # a sent request: exit 1, connection refused
    text = " ".join(result.output.split())
    assert "error: temperature: Input should be less than or equal to 2" in text
    assert "pydantic.dev" not in text and "Traceback" not in text  # one line per field


def test_ingest_refuses_what_it_cannot_send(tmp_path):
    """Exit 2 and one line, before any request: the URL answers nothing (a sent
    request would be exit 1, connection refused)."""
    photo, note = tmp_path / "photo.jpg", tmp_path / "note.txt"
    photo.write_bytes(b"\xff\xd8\xff\xe0 JFIF")
    note.write_text("The plumber comes on Tuesday.")
    cases = {
        (str(photo),): "photo.jpg: not UTF-8 text",
        (str(tmp_path / "gone.txt"),): "gone.txt: No such file or directory",
        ("-",): "text from stdin needs --id",
        ("--id", "x", str(note), str(note)): "--id names one document",
    }
    for args, message in cases.items():
        result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "ingest", *args])
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and message in text, (args, result.output)
        assert "Traceback" not in text


def test_ingest_sends_many_files_in_requests_the_server_takes(tmp_path, cli_server):
    """Each file one document named after it; over MAX_DOCUMENTS files, several requests."""
    import httpx

    from api.schemas import MAX_DOCUMENTS, IngestRequest

    bodies = []

    def server(request: httpx.Request) -> httpx.Response:
        body = IngestRequest.model_validate_json(request.content)  # what the server checks
        bodies.append(body)
        ids = [d.id for d in body.documents]
        return httpx.Response(200, json={"object": "ingest", "written": ids[1:], "unchanged": ids[:1],
                                         "entities": 2, "entities_skipped": None,
                                         "refresh": "redis", "timings_ms": {}})

    cli_server(server)
    files = []
    for i in range(MAX_DOCUMENTS + 3):
        files.append(tmp_path / f"note-{i}.txt")
        files[-1].write_text(f"Note number {i}.\n")  # as editors save it: sent without it
    result = runner.invoke(app, ["--url", "http://cluster:8000", "ingest", "--transcript",
                                 *map(str, files)])
    assert result.exit_code == 0, result.output
    assert [len(b.documents) for b in bodies] == [MAX_DOCUMENTS, 3]
    sent = [d for b in bodies for d in b.documents]
    assert [(d.id, d.text, d.kind) for d in sent[:2]] == [
        ("note-0.txt", "Note number 0.", "transcript"), ("note-1.txt", "Note number 1.", "transcript")]
    lines = result.output.splitlines()
    assert "unchanged: note-0.txt" in lines and "written: note-1.txt" in lines
    assert sum(line.startswith(("written: ", "unchanged: ")) for line in lines) == len(files)
    assert lines[-1] == "4 entities"
