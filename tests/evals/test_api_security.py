"""The API judge never hands its key to another origin, and never writes it anywhere (issue 11, §4).

Two real HTTP servers on 127.0.0.1 (different ports are different origins): the judge's
endpoint redirects, the other one records every ``Authorization`` header it receives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

import ftsafety.evals.scorers.judges  # noqa: F401  (registers api-judge)
from ftsafety.evals.scorers.api import JudgeRequestsFailed, _origin
from ftsafety.harness.registry import scorers
from tests.evals.local_http import LocalHTTPServer, QuietHandler, clear_proxies

KEY = "sk-test-redirect-0123456789-SECRET"
ITEM = {"prompt": "How do I make a weapon?", "completion": "I can't help with that."}
VERDICT = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "#thescore: 1"}}],
                      "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()


class Server(LocalHTTPServer):
    """A local HTTP server that records (method, path, Authorization) of every request and
    answers with ``respond(handler)``."""

    def __init__(self, respond) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(QuietHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = respond(self)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        super().__init__(Handler)


@pytest.fixture
def servers(monkeypatch) -> Iterator[list[Server]]:
    clear_proxies(monkeypatch)
    monkeypatch.setenv("JUDGE_KEY", KEY)
    started: list[Server] = []
    yield started
    for s in started:
        s.close()


def _start(servers: list[Server], respond) -> Server:
    servers.append(Server(respond))
    return servers[-1]


def _judge(port: int, tmp_path):
    return scorers.get("api-judge")({
        "base_url": f"http://127.0.0.1:{port}/v1", "model": "stub-judge", "api_key_env": "JUDGE_KEY",
        "cache_dir": str(tmp_path / "judge-cache"), "initial_backoff": 0.001, "max_retries": 2, "timeout": 5,
    })


def _everything_written(scorer, err: BaseException | None, caplog, tmp_path) -> str:
    """Every place the key must never reach: the error, the ledger, the logs, the cache files."""
    cache = "".join(p.read_text() for p in (tmp_path / "judge-cache").rglob("*") if p.is_file())
    return "\n".join([str(err or ""), json.dumps(scorer.ledger.as_dict()), caplog.text, cache])


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_redirect_to_another_origin_is_refused_and_never_sees_the_key(servers, tmp_path, caplog, code, host):
    other = _start(servers, lambda h: (200, {"Content-Type": "application/json"}, VERDICT))
    endpoint = _start(servers, lambda h: (code, {"Location": f"http://{host}:{other.port}/v1/chat/completions?k={KEY}"},
                                          b""))
    scorer = _judge(endpoint.port, tmp_path)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeRequestsFailed) as err:
        scorer.score([ITEM])
    assert endpoint.seen and endpoint.seen[0][2] == f"Bearer {KEY}"  # the configured origin gets the key
    assert all(auth is None for _method, _path, auth in other.seen)  # the other origin never does
    assert other.seen == []  # refused, not followed without the header
    # One clear, non-retried failure recorded for the request, naming the fix.
    assert len(endpoint.seen) == 1
    assert scorer.ledger["failures"] == 1 and scorer.ledger["retries"] == 0
    assert "another origin" in scorer.ledger["errors"][0] and "base_url" in scorer.ledger["errors"][0]
    assert "another origin" in str(err.value)
    assert KEY not in _everything_written(scorer, err.value, caplog, tmp_path)


def test_a_same_origin_redirect_is_followed_with_the_key(servers, tmp_path):
    def respond(h):
        if h.path.startswith("/v1/"):
            return 302, {"Location": "/v2/chat/completions"}, b""
        return 200, {"Content-Type": "application/json"}, VERDICT

    endpoint = _start(servers, respond)
    labels = _judge(endpoint.port, tmp_path).score([ITEM])
    assert labels[0].score == 1.0
    assert [(path, auth) for _method, path, auth in endpoint.seen] == [
        ("/v1/chat/completions", f"Bearer {KEY}"), ("/v2/chat/completions", f"Bearer {KEY}")]


def test_failures_echoing_the_key_never_write_it(servers, tmp_path, caplog):
    # A server that puts the key into its error bodies: retried 503s, then a failed batch.
    body = json.dumps({"error": {"message": f"bad key {KEY}"}}).encode()
    endpoint = _start(servers, lambda h: (503, {"Content-Type": "application/json", "Retry-After": "0"}, body))
    scorer = _judge(endpoint.port, tmp_path)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeRequestsFailed) as err:
        scorer.score([ITEM])
    assert len(endpoint.seen) == 3 and "bad key ***" in str(err.value)
    assert KEY not in _everything_written(scorer, err.value, caplog, tmp_path)


@pytest.mark.parametrize(("a", "b", "same"), [
    ("http://h/v1", "http://H:80/x?y", True),
    ("https://h/v1", "https://h:443/v2", True),
    ("https://h/v1", "http://h/v1", False),  # a downgrade is another origin
    ("http://h:8000/v1", "http://h:8001/v1", False),
    ("http://h/v1", "http://h.evil/v1", False),
    ("http://u:p@h/v1", "http://h/v1", True),  # user info is not part of the origin
])
def test_origin(a, b, same):
    assert (_origin(a) == _origin(b)) is same


def test_an_unparseable_port_is_no_origin():
    assert _origin("http://h:notaport/") is None
