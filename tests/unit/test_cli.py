"""The CLI without a cluster: the capacity planner's tables, readable errors, generic tables."""

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
