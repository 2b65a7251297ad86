"""The environment every node starts Serve with: the same on the real machines and here."""

import re
from pathlib import Path

from cluster.local import REPLICA_MESSAGE_BYTES, SERVE_ENV
from deployments.settings import Settings
from graphs.routes import embeddings, ner, retrieval

START_NODE = Path(__file__).resolve().parents[2] / "cluster" / "start_node.sh"


def test_the_largest_request_the_edge_admits_fits_one_replica_message():
    # A clip travels to WhisperSTT as uploaded; ingest and embeddings pass their texts on.
    largest = max(Settings().speech.whisper.max_audio_bytes, retrieval.INGEST_MAX_BYTES,
                  embeddings.MAX_BODY_BYTES, ner.MAX_BODY_BYTES)
    assert largest * 2 <= REPLICA_MESSAGE_BYTES  # room for pickling and the call's own fields


def test_start_node_exports_what_the_local_clusters_use():
    script = START_NODE.read_text()
    for name, value in SERVE_ENV.items():
        exported = re.search(rf"export {name}=(?:\$\{{{name}:-)?(\w+)", script)
        assert exported, f"start_node.sh does not export {name}"
        assert exported.group(1) == value
