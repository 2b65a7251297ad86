"""/v1/embeddings on the real two-node cluster: OpenAI client, auth, bad input."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json

import httpx
import numpy as np
import openai
import pytest

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def oai(serve_cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve_cluster.base_url}/v1", api_key=serve_cluster.token)


def test_openai_client_unchanged(oai):
    # The client asks for base64 by default and decodes it itself.
    resp = oai.embeddings.create(model=MODEL, input=["The cat sat on the mat.", "A kitten on a rug."])
    assert resp.model == MODEL and len(resp.data) == 2
    v = np.array([d.embedding for d in resp.data])
    assert v.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert float(v[0] @ v[1]) > 0.5
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0


def test_openai_client_float_and_short_model_name(oai):
    resp = oai.embeddings.create(model="all-MiniLM-L6-v2", input="hello", encoding_format="float")
    assert len(resp.data[0].embedding) == 384


def test_float_and_base64_agree(api):
    body = {"input": "same text", "model": MODEL}
    f = api.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    b = api.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, f["data"][0]["embedding"], atol=1e-7)


def test_concurrent_requests_are_batched_without_mixing(api):
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(24)]
    expected = np.array(api.post("/v1/embeddings", json={"input": texts}).json()["data"][0]["embedding"])

    def one(t: str) -> list[float]:
        return api.post("/v1/embeddings", json={"input": t}).json()["data"][0]["embedding"]

    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, texts))
    np.testing.assert_allclose(results[0], expected, atol=1e-5)
    # each answer belongs to its own text: nearest neighbour of result i is text i
    full = np.array([d["embedding"] for d in api.post("/v1/embeddings", json={"input": texts}).json()["data"]])
    sims = np.array(results) @ full.T
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()


@pytest.mark.parametrize(
    "headers,status",
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"X-Internal-Token": "wrong"}, 401)],
)
def test_auth_rejected(serve_cluster, headers, status):
    r = httpx.post(f"{serve_cluster.base_url}/v1/embeddings", json={"input": "x"}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["type"] == "authentication_error"


def test_auth_accepted_with_internal_token_header(serve_cluster):
    r = httpx.post(
        f"{serve_cluster.base_url}/v1/embeddings",
        json={"input": "x"},
        headers={"X-Internal-Token": serve_cluster.token},
    )
    assert r.status_code == 200


def test_models_lists_backend_device_node(api):
    cards = {c["deployment"]: c for c in api.get("/v1/models").json()["data"]}
    emb = cards["Embedder"]
    assert (emb["id"], emb["status"], emb["backend"], emb["device"]) == (MODEL, "ready", "MiniLMBackend", "cpu")
    assert emb["nodes"] == ["titan"]  # label_selector host=titan on the local cluster
    assert cards["BatchEmbedder"]["status"] == "unavailable"
    assert "GPU" in cards["BatchEmbedder"]["reason"]


def test_unavailable_model_is_a_clear_error(api):
    r = api.post("/v1/embeddings", json={"input": "x", "model": "Qwen/Qwen3-Embedding-8B"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


BAD_BODIES = [
    ("empty list", json.dumps({"input": []}), "application/json", 422),
    ("empty string", json.dumps({"input": ""}), "application/json", 422),
    ("10,000 inputs", json.dumps({"input": ["x"] * 10_000}), "application/json", 400),
    ("non-strings", json.dumps({"input": [1, 2, 3]}), "application/json", 422),
    ("nested", json.dumps({"input": [["a"]]}), "application/json", 422),
    ("1 MB string", json.dumps({"input": "a" * 1_000_000}), "application/json", 400),
    ("malformed JSON", '{"input": "x"', "application/json", 400),
    ("not an object", "[1, 2]", "application/json", 400),
    ("wrong content type", "input=x", "text/plain", 415),
    ("unknown field", json.dumps({"input": "x", "bogus": 1}), "application/json", 422),
    ("bad encoding", json.dumps({"input": "x", "encoding_format": "int8"}), "application/json", 422),
    ("dimensions on a fixed model", json.dumps({"input": "x", "dimensions": 128}), "application/json", 400),
    ("9 MB body", json.dumps({"input": ["a" * 1000] * 9000}), "application/json", 413),
]


@pytest.mark.parametrize("name,body,ctype,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_4xx_json_error(api, name, body, ctype, status):
    r = api.post("/v1/embeddings", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    # and the server still serves
    assert api.post("/v1/embeddings", json={"input": "still here"}).status_code == 200
