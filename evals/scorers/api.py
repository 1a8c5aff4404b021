"""OpenAI-compatible chat-completions client for API judges: retries, on-disk cache, ledger.

Standard library only (``urllib.request`` + ``concurrent.futures``): the judge must work in a
bare environment, and a stub server in the tests exercises exactly this code.

Judge hygiene (METRICS.md):

- the API key is read from the environment variable the config *names* (``api_key_env``); it
  is sent only in the ``Authorization`` header and only to ``base_url``'s origin (a redirect
  to another origin is refused: ``_SameOriginRedirects``), redacted from error messages, and
  never written to the cache, the ledger or logs;
- judgments are cached on disk, one JSON file per key, keyed by sha256 of (judge, endpoint,
  model, template name and hash, decoding, sanitiser version, prompt, response); a cache file
  holds the raw output and token usage only;
- a ledger counts requests, cache hits, retries, failures, prompt/completion tokens (from the
  response's ``usage``) and cost (from optional per-1k-token prices), for the run manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ftsafety.harness.errors import RetryableError, UserError

log = logging.getLogger(__name__)

#: Status codes worth retrying: rate limits, timeouts, conflicts and server errors.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Status codes that mean the configuration is wrong (key, endpoint, model): stop the stage.
FATAL_STATUS = frozenset({401, 403, 404})
#: Longest wait between retries, whatever the server's ``Retry-After`` says.
MAX_BACKOFF_S = 60.0


class JudgeLedger(dict):
    """Token and cost accounting for one judge over a run, for the run manifest.

    A plain ``dict`` (JSON-ready as it is) with keys ``model``, ``requests``, ``cache_hits``,
    ``retries``, ``failures`` (requests that failed after their retries), ``malformed`` (answers
    that are not a chat completion's text: unscored items), ``rejected`` (requests the endpoint
    refused for their content, HTTP 400/413/422: unscored items), ``prompt_tokens``,
    ``completion_tokens``, ``cost_usd`` (None without prices) and ``errors`` (the first 20
    failure messages, key redacted).
    """

    MAX_ERRORS: ClassVar[int] = 20

    def __init__(self, model: str = "") -> None:
        super().__init__(
            model=model,
            requests=0,
            cache_hits=0,
            retries=0,
            failures=0,
            malformed=0,
            rejected=0,
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=None,
            errors=[],
        )

    def count(self, key: str, n: int = 1) -> None:
        self[key] += n

    def add_error(self, message: str) -> None:
        self["failures"] += 1
        if len(self["errors"]) < self.MAX_ERRORS:
            self["errors"].append(message)

    def add_usage(
        self,
        usage: dict[str, Any] | None,
        prompt_price_per_1k: float | None,
        completion_price_per_1k: float | None,
    ) -> None:
        """Add one response's ``usage`` tokens, and their cost when prices are given."""
        usage = usage if isinstance(usage, dict) else {}
        p, c = _token_count(usage.get("prompt_tokens")), _token_count(usage.get("completion_tokens"))
        self["prompt_tokens"] += p
        self["completion_tokens"] += c
        if prompt_price_per_1k is not None or completion_price_per_1k is not None:
            cost = p / 1000 * (prompt_price_per_1k or 0.0) + c / 1000 * (completion_price_per_1k or 0.0)
            self["cost_usd"] = (self["cost_usd"] or 0.0) + cost

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {**self, "errors": list(self["errors"])}


def _token_count(value: Any) -> int:
    """A usage count as an int; anything that is not a non-negative number counts 0 (a server's
    odd ``usage`` must not crash the accounting)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        return 0
    return int(value)


class JudgeCache:
    """One JSON file per judgment under ``root/<key[:2]>/<key>.json``; writes are atomic."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        """sha256 of the canonical JSON of ``fields`` (judge, model, template, decoding, texts)."""
        blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a torn or foreign file is a miss, not a crash
            log.warning("ignoring unreadable judge cache entry %s: %s", path, exc)
            return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(entry, ensure_ascii=False, indent=1), "utf-8")
        os.replace(tmp, path)


class ApiRequestFailed(Exception):
    """A request that still failed after all retries (network, HTTP or gateway error)."""


class ApiRequestRejected(ApiRequestFailed):
    """The endpoint refused this one request for what it holds (HTTP 400, 413, 422: e.g. a
    judge prompt longer than the judge's context). Asking again gets the same answer, so the
    item is unscored with the reason, not left for a rerun."""


#: Status codes that reject a request for its content (not retried; the item is unscored).
REJECTED_STATUS = frozenset({400, 413, 422})


class JudgeRequestsFailed(RetryableError):
    """Some of a batch's judge requests failed after their retries. Failed requests are not a
    result: the batch gets no labels (its score artifact is not written), the answers that did
    arrive are in the judgment cache, and a rerun asks only for the failed items."""

    def __init__(self, reason: str, *, failed: int, total: int, answered: int) -> None:
        # reason: the first failure's message (API key redacted)
        super().__init__(f"{failed} of {total} item(s) not judged: {reason}", reason=reason, failed=failed,
                         answered=answered)
        self.total = total


class MalformedCompletion(ValueError):
    """A 200 response that is not a chat completion with a text answer (the reason is the
    message). The judge answered, but with nothing to parse: an unscored item, not a retry."""


def completion_text(payload: Any) -> str:
    """The text of the first choice of a chat-completions body; ``MalformedCompletion`` (with
    the reason) for any other shape: not an object, ``choices`` missing or empty, a choice or
    ``message`` that is not an object, ``content`` missing/null or not text. ``content`` given
    as a list of text parts (the newer OpenAI form) is joined."""
    if not isinstance(payload, dict):
        raise MalformedCompletion(f"body is a JSON {type(payload).__name__}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedCompletion("no 'choices' list" if not isinstance(choices, list) else "'choices' is empty")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedCompletion("choices[0] has no 'message' object")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(_is_text_part(part) for part in content):
        return "".join(part if isinstance(part, str) else part["text"] for part in content)
    refusal = message.get("refusal")
    if content is None and isinstance(refusal, str) and refusal:
        raise MalformedCompletion(f"the judge refused: {refusal[:200]}")
    raise MalformedCompletion(f"message content is {'null' if content is None else type(content).__name__}, not text")


def _is_text_part(part: Any) -> bool:
    return isinstance(part, str) or (isinstance(part, dict) and isinstance(part.get("text"), str))


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in; ``None`` if unparseable."""
    try:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # e.g. a port that is not a number
        return None


def _origin_text(url: str) -> str:
    """``scheme://host:port`` of ``url`` for messages: never its path, query or user info, which
    a server chose and could carry anything."""
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "an unparseable URL"


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the request's origin (scheme, host and port).

    urllib copies every header, ``Authorization`` included, onto the redirected request: a
    redirect to another origin (another host, port, or an https → http downgrade) would hand the
    API key to whoever that is. Such a redirect is refused rather than followed without the
    header: a POST redirected with 301/302/303 becomes a body-less GET, so following it could
    not produce a judgment anyway, and refusing names the fix (``base_url``)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        source_origin = _origin(req.full_url)
        if source_origin is None or _origin(newurl) != source_origin:
            fp.close()
            # Not retried (ApiRequestFailed is not one of the errors ``complete`` retries): the
            # same request would be redirected the same way. Recorded as this item's failure.
            raise ApiRequestFailed(
                f"refused HTTP {code} redirect from {_origin_text(req.full_url)} to another origin "
                f"{_origin_text(newurl)}: the API key is never sent across origins; set base_url to "
                "the endpoint that answers"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


#: The opener every judge request goes through (urllib's default handlers, redirects same-origin).
_OPENER = urllib.request.build_opener(_SameOriginRedirects)


@dataclass
class ChatCompletionsClient:
    """POSTs ``{base_url}/chat/completions`` with bounded retries and exponential backoff."""

    base_url: str
    api_key: str | None
    timeout: float = 60.0
    max_retries: int = 5
    initial_backoff: float = 1.0

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def complete(self, body: dict[str, Any], on_retry: Any = None) -> Any:
        """The decoded JSON body of a 200 response, whatever its shape (``completion_text``
        extracts the answer); raises ``UserError`` on 401/403/404, ``ApiRequestFailed`` when
        retries are exhausted or the error is not retryable (a body that is not JSON, or an
        error object, counts as a failed attempt: it is retried)."""
        url = self.base_url.rstrip("/") + "/chat/completions"
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with _OPENER.open(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                if isinstance(payload, dict) and payload.get("error") and "choices" not in payload:
                    # Some gateways report failures as an error object with status 200: a failed
                    # request (retried), not an answer. Any other shape is the judge's answer,
                    # judged by ``completion_text`` (an unparseable one is an unscored item).
                    raise ValueError(f"error in a 200 response: {str(payload['error'])[:300]}")
                return payload
            except urllib.error.HTTPError as exc:
                detail = self._redact(_read_error_body(exc))
                if exc.code in FATAL_STATUS:
                    raise UserError(
                        f"api-judge: {url} answered HTTP {exc.code} ({detail}); check base_url, "
                        "model and the key in the environment variable named by api_key_env"
                    ) from None
                error = f"HTTP {exc.code}: {detail}"
                if exc.code in REJECTED_STATUS:
                    raise ApiRequestRejected(f"rejected: {error}") from None
                retryable = exc.code in RETRYABLE_STATUS
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
                # Connection refused/reset, timeouts and garbled bodies are usually transient.
                error = self._redact(f"{type(exc).__name__}: {exc}")
                retryable = True
            if not retryable or attempt >= self.max_retries:
                raise ApiRequestFailed(f"after {attempt + 1} attempt(s): {error}")
            delay = retry_after if retry_after is not None else self.initial_backoff * 2**attempt
            delay = min(MAX_BACKOFF_S, delay) * (1.0 + 0.1 * random.random())  # jitter: no herd
            log.info("api-judge retry %d/%d in %.2fs (%s)", attempt + 1, self.max_retries, delay, error)
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
            attempt += 1


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:
        return exc.reason or ""
    try:
        message = json.loads(body).get("error", {})
        if isinstance(message, dict):
            message = message.get("message", "")
        body = str(message) or body
    except (ValueError, AttributeError):
        pass
    return " ".join(body.split())[:300]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to exponential backoff


def read_api_key(env_name: str | None) -> str | None:
    """The key from ``os.environ[env_name]``; ``None`` when ``env_name`` is empty/None (local
    servers without auth). A named but unset variable is a ``UserError``."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise UserError(
            f"api-judge: environment variable {env_name} is not set (api_key_env names the "
            "variable that holds the API key; the key itself never goes into a config)"
        )
    return key
