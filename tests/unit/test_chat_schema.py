"""The /v1/chat/completions request shape: what the route can rely on once validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.schemas import ChatCompletionRequest

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize("stop,expected", [(None, []), ("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_is_always_a_list(stop, expected):
    body = {"messages": [USER]} if stop is None else {"messages": [USER], "stop": stop}
    assert ChatCompletionRequest.model_validate(body).stop == expected


@pytest.mark.parametrize("body", [
    {"messages": []},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [USER], "max_tokens": 0},
    {"messages": [USER], "stop": [""]},
    {"messages": [USER], "logprobs": True},
])
def test_bad_requests_are_refused(body):
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)
