"""Servers on loopback that answer as a cluster's other services might, for tests of what the operator
does with an address an author wrote: any HTTP answer a test chooses, or silence."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A real HTTP server on loopback whose answer a test chooses; it records the paths it was asked."""

    def __init__(self, answer: Handler) -> None:
        self.paths: list[str] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path)
                answer(self)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> Handler:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)

    return answer


def vector(value: str) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, value]}]}}
    ).encode()


class Silent:
    """A TCP server that accepts and then says nothing, or one byte at a time: the slowest of servers."""

    def __init__(self, drip: float | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.drip = drip
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            if self.drip is not None:
                threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        assert self.drip is not None
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            while True:
                conn.sendall(b"X-Slow: 1\r\n")
                time.sleep(self.drip)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


class Servers:
    """The servers a test starts, all closed when it ends: `with Servers() as servers: servers.http(...)`."""

    def __init__(self) -> None:
        self.started: list[Server | Silent] = []

    def http(self, answer: Handler) -> Server:
        self.started.append(Server(answer))
        return self.started[-1]  # type: ignore[return-value]

    def silent(self, drip: float | None = None) -> Silent:
        self.started.append(Silent(drip))
        return self.started[-1]  # type: ignore[return-value]

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *_: Any) -> None:
        for server in self.started:
            server.close()
