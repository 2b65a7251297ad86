"""The retry policy both clients share: deadlines, backoff, what to retry, where.

Ray Serve does not retry a request a replica already accepted, so the client
must. The decisions live here, free of I/O: ``RetryPolicy`` says how long and
how often, and ``Attempts`` walks one call through it. The loop that repeats an
attempt and sleeps is tenacity's (``retrying``), the same for the sync and the
async client; each client only writes one attempt's I/O.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

import httpx
import tenacity


class HerServeError(Exception):
    """A call that failed for good: the server's error, or why none came back.

    ``status`` is None when no HTTP response arrived (connection refused, deadline).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str = "server_error",
        code: str | None = None,
        param: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.url = url
        self.request_id = request_id
        self.attempts = attempts

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else self.type
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{where}: {self.message}{tries}"

    @classmethod
    def from_response(cls, response: httpx.Response, **kw) -> "HerServeError":
        """Read OpenAI's error envelope ``{"error": {...}}``; fall back to the raw body."""
        try:
            detail = response.json()["error"]
            message, type_ = detail["message"], detail.get("type", "server_error")
            code, param = detail.get("code"), detail.get("param")
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:500] or response.reason_phrase
            type_, code, param = "server_error", None, None
        return cls(message, status=response.status_code, type=type_, code=code, param=param,
                   url=str(response.request.url), **kw)


NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures before the request left: another URL can take it at once."""


class DeadlineExceeded(HerServeError, TimeoutError):
    """The call's deadline passed before any attempt succeeded."""


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How one call is retried. The deadline bounds the whole call, sleeps included."""

    deadline_s: float = 30.0
    max_attempts: int = 5
    connect_timeout_s: float = 2.0
    """A dead proxy refuses at once; an unreachable host must not eat the deadline."""
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    max_retry_after_s: float = 10.0
    """A longer Retry-After than this is capped: the deadline still rules."""
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    """Only overload and gateway failures: a 4xx means the request itself is wrong."""

    def __post_init__(self) -> None:
        if self.deadline_s <= 0 or self.max_attempts < 1 or self.backoff_base_s < 0:
            raise ValueError(
                "RetryPolicy needs deadline_s > 0, max_attempts >= 1, backoff_base_s >= 0"
            )

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**retry)] (retry counts from 0)."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2**retry)
        return (rng or random).uniform(0.0, cap)

    def retryable(self, status: int | None = None, error: BaseException | None = None) -> bool:
        """Network failures, timeouts, answers cut short, and the listed statuses.

        Not a malformed URL or a local protocol misuse: those fail the same way every time.
        """
        if error is not None:
            return isinstance(error, (httpx.NetworkError, httpx.TimeoutException,
                                      httpx.RemoteProtocolError))
        return status in self.retry_statuses

    def start(self, urls: list[str], rng: random.Random | None = None) -> "Attempts":
        if not urls:
            raise ValueError("no base URL: pass urls=[...] or set HER_SERVE_URLS")
        return Attempts(self, list(urls), rng or random.Random())


@dataclass
class Attempts:
    """One call's walk through the policy: which URL next, how long to wait, when to stop.

    URLs rotate on every retry, the first preferred. A URL that could not be
    connected to is skipped for the rest of the call (until no URL is left):
    the request was never sent there, so the next URL goes at once. Every
    other retry backs off, or waits what Retry-After asks.
    """

    policy: RetryPolicy
    urls: list[str]
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    made: int = 0
    """Attempts made so far."""
    last_error: HerServeError | None = None
    refused: set[str] = field(default_factory=set)
    _next_index: int = 0
    _url: str = ""

    def remaining_s(self) -> float:
        return self.policy.deadline_s - (time.monotonic() - self.started)

    def next(self) -> tuple[str, httpx.Timeout]:
        """The URL and timeouts for the next attempt (both bounded by the deadline)."""
        left = self.remaining_s()
        if left <= 0:
            raise self._deadline()
        if self.refused >= set(self.urls):
            self.refused.clear()
        n = len(self.urls)
        index = next(i % n for i in range(self._next_index, self._next_index + n)
                     if self.urls[i % n] not in self.refused)
        self._next_index, self._url = index + 1, self.urls[index]
        self.made += 1
        return self._url, httpx.Timeout(left, connect=min(left, self.policy.connect_timeout_s))

    def failed(
        self,
        *,
        response: httpx.Response | None = None,
        error: httpx.TransportError | None = None,
        request_id: str | None = None,
    ) -> float:
        """Record a failed attempt; the seconds to sleep before the next, or raise to give up.

        ``response`` must be read already (its body carries the error message).
        """
        if response is not None:
            failure = HerServeError.from_response(response, request_id=request_id,
                                                  attempts=self.made)
            retry = self.policy.retryable(status=response.status_code)
        else:
            failure = self._transport_failure(error, request_id)
            retry = self.policy.retryable(error=error)
            if isinstance(error, NEVER_SENT):
                self.refused.add(self._url)
        self.last_error = failure
        if not retry:
            raise failure
        if self.remaining_s() <= 0:
            raise self._deadline()
        if self.made >= self.policy.max_attempts:
            raise failure
        delay = self._delay(response, error)
        if delay >= self.remaining_s():
            raise self._deadline()
        return delay

    def _delay(self, response: httpx.Response | None, error: BaseException | None) -> float:
        hinted = retry_after_s(response.headers.get("retry-after")) if response else None
        if hinted is not None:
            return min(hinted, self.policy.max_retry_after_s)
        if isinstance(error, NEVER_SENT) and not self.refused >= set(self.urls):
            return 0.0
        return self.policy.backoff_s(self.made - 1, self.rng)

    def try_again(self, **failure) -> "TryAgainIn":
        """``failed``'s decision as what an attempt raises: tenacity sleeps and tries again."""
        return TryAgainIn(self.failed(**failure))

    def _transport_failure(self, error: BaseException | None, request_id: str | None):
        kind = "timeout" if isinstance(error, httpx.TimeoutException) else "connection_error"
        url = str(error.request.url) if _has_request(error) else None
        message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return HerServeError(message, type=kind, url=url, request_id=request_id,
                             attempts=self.made)

    def _deadline(self) -> DeadlineExceeded:
        last = f"; last failure: {self.last_error}" if self.last_error else ""
        err = self.last_error
        return DeadlineExceeded(
            f"deadline of {self.policy.deadline_s:g} s exceeded{last}",
            status=err.status if err else None,
            type="timeout",
            url=err.url if err else None,
            request_id=err.request_id if err else None,
            attempts=self.made,
        )


def _has_request(error: BaseException | None) -> bool:
    try:
        return error is not None and error.request is not None  # type: ignore[union-attr]
    except RuntimeError:  # httpx raises when the error was made without a request
        return False


class TryAgainIn(tenacity.TryAgain):
    """Raised by a failed attempt that ``Attempts`` says to retry after ``delay_s``."""

    def __init__(self, delay_s: float):
        super().__init__(delay_s)
        self.delay_s = delay_s


def retrying(kind: type[tenacity.BaseRetrying]) -> tenacity.BaseRetrying:
    """The retry loop, ``tenacity.Retrying`` or ``AsyncRetrying``, new for each call
    (tenacity keeps a loop's state on the instance, per thread: concurrent
    coroutines must not share one).

    It retries exactly the attempts that raise ``TryAgainIn``, after their delay.
    Giving up is ``Attempts``' decision (it raises the final error), so tenacity
    never stops on its own, and any other exception passes straight through.
    """
    return kind(retry=tenacity.retry_never, stop=tenacity.stop_never,
                wait=lambda state: state.outcome.exception().delay_s)
