"""A real HTTP server on 127.0.0.1 for download tests: Range requests (416 past the end), connections
cut on demand, and responses held back until a test lets them go."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, int] = {}  # path → how many more responses to cut half way
        self.requests: list[tuple[str, str | None]] = []
        self.holds: dict[str, threading.Event] = {}  # path → its responses wait until the event is set
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path.lstrip('/')}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        wanted = self.headers.get("Range")
        self.server.requests.append((self.path, wanted))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
        if start >= len(data) > 0:  # as real servers answer a Range past the end (RFC 9110 15.5.17)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in self.server.holds:
            self.server.holds[self.path].wait()
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cuts.get(self.path, 0) > 0:
            self.server.cuts[self.path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass
