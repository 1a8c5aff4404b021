"""A real HTTP server on 127.0.0.1 for tests of HTTP clients (no network), and the proxy
variables to clear so that requests to it go straight there."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def clear_proxies(monkeypatch) -> None:
    """Unset every proxy variable for this test, so a request to 127.0.0.1 is not sent to a proxy."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps pytest output clean (no access log on stderr)."""

    def log_message(self, *args) -> None:
        pass


class LocalHTTPServer:
    """Serves ``handler_cls`` on a free port of 127.0.0.1 in a daemon thread until ``close()``."""

    def __init__(self, handler_cls: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.port: int = self.httpd.server_address[1]
        self.url_base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
