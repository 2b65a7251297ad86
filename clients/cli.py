"""``her-serve``: the cluster from a terminal (status, capacity, ask, say, transcribe, embed,
ingest, retrieve, forget).

Server errors print as one readable line and exit 1; no tracebacks.
"""

from __future__ import annotations

import io
import sys
import wave
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, NoReturn, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from api.schemas import MAX_DOCUMENTS
from clients import tables
from clients.client import DEFAULT_SPEECH_MODEL, HerClient
from clients.retry import HerServeError, RetryPolicy
from clients.status_view import render_capacity, render_status

app = typer.Typer(
    name="her-serve",
    help="Talk to the her-serve cluster (URLs from --url or HER_SERVE_URLS, "
         "token from --token or HER_SERVE_TOKEN).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


@dataclass
class Options:
    urls: list[str] | None
    token: str | None
    deadline_s: float


@app.callback()
def main(
    ctx: typer.Context,
    url: Optional[List[str]] = typer.Option(
        None, "--url", help="Base URL, repeatable, preferred first (else env HER_SERVE_URLS, "
                            "comma-separated, else http://127.0.0.1:8000)"),
    token: Optional[str] = typer.Option(None, "--token", envvar="HER_SERVE_TOKEN",
                                        show_envvar=True, help="Auth token"),
    deadline: float = typer.Option(30.0, "--deadline", help="Seconds per command, retries included"),
) -> None:
    ctx.obj = Options(urls=url or None, token=token, deadline_s=deadline)


def refuse(message: str) -> NoReturn:
    """A command that cannot be sent as given: one red line, exit code 2."""
    errors.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[HerClient]:
    """A client for one command. A HerServeError becomes one red line and exit code 1;
    a request the client refuses to send (bad URL, empty text) exit code 2."""
    opts: Options = ctx.obj
    try:
        with HerClient(opts.urls, opts.token, RetryPolicy(deadline_s=opts.deadline_s)) as client:
            yield client
    except HerServeError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}")
        if exc.url:
            errors.print(f"[dim]  url: {escape(exc.url)}  request id: {exc.request_id}[/]")
        raise typer.Exit(1) from None
    except ValidationError as exc:  # a ValueError: first, for one line per field, no links
        refuse("; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                         for e in exc.errors()))
    except ValueError as exc:
        refuse(str(exc))


@app.command()
def status(ctx: typer.Context) -> None:
    """Nodes, deployments and replicas (GET /v1/status)."""
    with connect(ctx) as client:
        data = client.status()
    console.print(render_status(data))


@app.command()
def models(ctx: typer.Context) -> None:
    """What the cluster serves, and where (GET /v1/models)."""
    with connect(ctx) as client:
        cards = client.models()
    console.print(tables.models_table(cards))


@app.command()
def capacity(
    ctx: typer.Context,
    config: Path = typer.Argument(Path("serve_config.yaml"), help="Serve config to plan"),
    nodes: Optional[Path] = typer.Option(None, "--nodes", help="Node definitions "
                                         "[default: topology/nodes.yaml]"),
    planned: bool = typer.Option(True, "--planned/--enabled-only",
                                 help="Count disabled (planned) deployments too"),
    live: bool = typer.Option(False, "--live", help="Also show the running cluster's use "
                              "next to the plan (GET /v1/status)"),
) -> None:
    """Does the config fit on Titan and Panda? The plan reads files; --live asks the cluster."""
    from topology.capacity import check_files
    from topology.nodes import NODES_FILE

    try:
        loads, problems = check_files(config, nodes or NODES_FILE, planned)
    except (OSError, ValueError, KeyError) as exc:
        refuse(f"cannot plan: {exc}")
    for table in tables.capacity_tables(loads):
        console.print(table)
    if live:
        with connect(ctx) as client:
            console.print(render_capacity(client.status()))
    if problems:
        raise typer.Exit(1)
    console.print("[green]every node fits (failover targets included)[/]")


@app.command()
def ask(
    ctx: typer.Context,
    question: str = typer.Argument(..., help="What to ask"),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest reply, in tokens"),
    temperature: float = typer.Option(0.6, "--temperature", help="0 is greedy"),
    retrieve: bool = typer.Option(False, "--retrieve", help="Answer from your documents"),
    k: int = typer.Option(3, "-k", help="How many documents (with --retrieve)"),
) -> None:
    """Ask the assistant in text (POST /v1/chat/completions): the reply, then its tokens.
    With --retrieve the k documents closest to the question go in its system prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    with connect(ctx) as client:
        answer = client.chat([*messages, {"role": "user", "content": question}],
                             max_tokens=max_tokens, temperature=temperature, retrieve=retrieve,
                             k=k)
    choice = answer.choices[0]
    console.print(Text(choice.message.content))
    cut = " (cut at --max-tokens)" if choice.finish_reason == "length" else ""
    console.print(f"[dim]{answer.usage.completion_tokens} tokens{cut}[/]")


@app.command()
def say(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="What to say"),
    output: Path = typer.Option(..., "-o", "--output", help="WAV file to write"),
    voice: str = typer.Option("alloy", "--voice", help="Voice name (OpenAI names mean the "
                              "model's default voice)"),
    speed: float = typer.Option(1.0, "--speed"),
    model: str = typer.Option(DEFAULT_SPEECH_MODEL, "--model",
                              help="kokoro, piper, chatterbox (or an OpenAI name: Kokoro)"),
) -> None:
    """Text to a WAV file (POST /v1/audio/speech)."""
    with connect(ctx) as client:
        audio = client.speech(text, voice, model, response_format="wav", speed=speed)
    try:
        audio, summary = _sized_wav(audio)
    except (wave.Error, EOFError):
        summary = " (not a WAV header the wave module reads)"
    output.write_bytes(audio)
    console.print(f"wrote {escape(str(output))}: {len(audio)} bytes{summary}")


def _sized_wav(audio: bytes) -> tuple[bytes, str]:
    """The WAV written with its real sizes, and its length. A streamed WAV's header gives
    no sizes (0xFFFFFFFF, as OpenAI's): fine for a player reading a stream, wrong in a file."""
    with wave.open(io.BytesIO(audio)) as streamed:
        params = streamed.getparams()
        frames = streamed.readframes(streamed.getnframes())
    out = io.BytesIO()
    with wave.open(out, "wb") as sized:
        sized.setparams(params._replace(nframes=0))  # counted as the frames are written
        sized.writeframes(frames)
    seconds = len(frames) / (params.sampwidth * params.nchannels) / params.framerate
    return out.getvalue(), f", {seconds:.2f} s at {params.framerate} Hz"


@app.command()
def transcribe(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Audio file"),
    language: Optional[str] = typer.Option(None, "--language", help="e.g. en; default: detect"),
    response_format: str = typer.Option("json", "--format",
                                        help="json, verbose_json, text, srt or vtt"),
) -> None:
    """Speech to text (POST /v1/audio/transcriptions)."""
    with connect(ctx) as client:
        result = client.transcribe(file.read_bytes(), file.name, language, response_format)
    if isinstance(result, dict):
        console.print(escape(result.get("text", "")))
        rest = {k: v for k, v in result.items() if k != "text"}
        if rest:
            console.print(tables.generic(rest))
    else:
        console.print(escape(result))


@app.command()
def embed(
    ctx: typer.Context,
    texts: List[str] = typer.Argument(..., help="One or more texts"),
    model: Optional[str] = typer.Option(None, "--model", help="default: the real-time embedder"),
    query: bool = typer.Option(False, "--query", help="Embed as a search query"),
) -> None:
    """Embed texts: dims, norms and a preview (POST /v1/embeddings)."""
    with connect(ctx) as client:
        vectors = client.embed(texts, model=model, input_type="query" if query else "document")
    console.print(tables.embeddings_table(texts, vectors))


@app.command()
def ingest(
    ctx: typer.Context,
    files: List[Path] = typer.Argument(..., help="UTF-8 text files, one document each ('-': stdin)"),
    doc_id: Optional[str] = typer.Option(None, "--id", help="The document's id (one file only; "
                                                          "default: the file's name)"),
    transcript: bool = typer.Option(False, "--transcript", help="Store as a transcript"),
) -> None:
    """Add documents to the memory (POST /v1/ingest), MAX_DOCUMENTS a request. The same
    text under the same id again writes nothing; new text under an id replaces it."""
    documents = [{"id": name, "text": text, "kind": "transcript" if transcript else "document"}
                 for name, text in _read_documents(files, doc_id)]
    with connect(ctx) as client:
        answers = [client.ingest(documents[i:i + MAX_DOCUMENTS])
                   for i in range(0, len(documents), MAX_DOCUMENTS)]
    for answer in answers:
        for name in answer["written"]:
            console.print(f"written: {escape(name)}")
        for name in answer["unchanged"]:
            console.print(f"unchanged: {escape(name)}")
    entities = sum(a["entities"] for a in answers)
    skipped = next((a["entities_skipped"] for a in answers if a.get("entities_skipped")), None)
    console.print(f"[dim]{entities} entities" + (f" ({escape(skipped)})" if skipped else "") + "[/]")


def _read_documents(files: list[Path], doc_id: str | None) -> list[tuple[str, str]]:
    """(id, text) per file, without the whitespace around it (a file's last newline);
    a file that cannot be read as text is exit code 2, nothing sent."""
    if doc_id is not None and len(files) != 1:
        refuse("--id names one document: give one file")
    documents = []
    for path in files:
        if str(path) == "-" and doc_id is None:
            refuse("text from stdin needs --id")
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            refuse(f"{path}: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}")
        documents.append((doc_id or path.name, text.strip()))
    return documents


@app.command()
def retrieve(
    ctx: typer.Context,
    query: str = typer.Argument(...),
    k: int = typer.Option(10, "-k", help="How many results"),
    hops: int = typer.Option(1, "--hops", help="Graph hops around the hits"),
) -> None:
    """Search the memory (POST /v1/retrieve)."""
    with connect(ctx) as client:
        result = client.retrieve(query, k=k, hops=hops)
    console.print(tables.retrieval_view(result))


@app.command()
def forget(
    ctx: typer.Context,
    ids: List[str] = typer.Argument(..., help="Ids of the documents to forget"),
) -> None:
    """Forget documents everywhere the cluster keeps them (DELETE /v1/documents/{id};
    several ids: POST /v1/documents/delete). An id no store holds is no error."""
    with connect(ctx) as client:
        results = client.forget(ids)
    for result in results:
        console.print(f"{'deleted' if result.deleted else 'not found'}: {escape(result.id)}")
    deleted = sum(r.deleted for r in results)
    console.print(f"[dim]{deleted} deleted, {len(results) - deleted} not found[/]")


if __name__ == "__main__":
    app()
