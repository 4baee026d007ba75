"""The metrics endpoint: one thread, bounded connections, bounded time.

prometheus_client's own server (``start_http_server``) is a
``ThreadingHTTPServer``: a thread per connection, kept for as long as the
client keeps it open.  80 idle TCP connections from any local user then
meant 80 threads, under the unit's ``TasksMax=64`` no thread or fork left
for hooks or the status socket, and 25 tracebacks printed raw into the log.

This server is a single thread around a ``selectors`` loop over
non-blocking sockets: at most ``MAX_CONNECTIONS`` open (when full, the
oldest still reading its request is closed for the newcomer: a client that
sends nothing cannot hold the endpoint), each given ``REQUEST_TIMEOUT_S``
to send its request and ``RESPONSE_TIMEOUT_S`` to take the answer, a
request head of at most ``MAX_REQUEST_BYTES``.  It answers ``GET /metrics``
(and ``/``) with prometheus_client's ``generate_latest``, made in this
thread at most every ``RENDER_EVERY_S``, ``Connection: close``.  No exception leaves it: each is logged as a
JSON event (``metrics_request_failed``, at most one a second), never printed.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 2.0
RESPONSE_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
ERROR_LOG_EVERY_S = 1.0


class _Conn:
    __slots__ = ("deadline", "inbuf", "out", "since", "sock", "writing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.since = now
        self.deadline = now + REQUEST_TIMEOUT_S
        self.inbuf = bytearray()
        self.out = b""
        self.writing = False


def _response(status: str, body: bytes, ctype: str = "text/plain; charset=utf-8", head: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {ctype}", f"Content-Length: {len(body)}",
             "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else body)


class BoundedHTTPServer:
    """``render()`` gives (content type, body) for ``/metrics``."""

    def __init__(self, host: str, port: int, render: Callable[[], tuple[str, bytes]],
                 log: Callable[..., None], max_connections: int = MAX_CONNECTIONS) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host or "0.0.0.0", port))
            self.listener.listen(64)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.server_port: int = self.listener.getsockname()[1]
        self.render = render
        self.log = log
        self.max_connections = max_connections
        self.conns: dict[int, _Conn] = {}
        self.refused = 0  # connections closed to make room, or timed out
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.listener, selectors.EVENT_READ, None)
        self._stop_r, self._stop_w = socket.socketpair()
        self._sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._last_error_log = 0.0
        self._thread = threading.Thread(target=self._run, name="pyoomd-metrics-http", daemon=True)

    def start(self) -> BoundedHTTPServer:
        self._thread.start()
        return self

    # -- loop -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception as e:  # noqa: BLE001 - the endpoint must never die loudly
                self._error("loop", e)
                time.sleep(0.1)

    def _step(self) -> bool:
        now = time.monotonic()
        timeout = min((c.deadline for c in self.conns.values()), default=now + 60) - now
        for key, _ in self._sel.select(max(0.0, timeout)):
            if key.data == "stop":
                return True
            if key.data is None:
                self._accept()
            else:
                self._serve(key.data)
        now = time.monotonic()
        for c in [c for c in self.conns.values() if c.deadline <= now]:
            self.refused += 1
            self._close(c)
        return False

    def _accept(self) -> None:
        for _ in range(64):  # drain the backlog, a bounded number at a time
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: drop this round, and do not spin on it
                self._error("accept", e)
                time.sleep(0.1)
                return
            sock.setblocking(False)
            if len(self.conns) >= self.max_connections:
                reading = [c for c in self.conns.values() if not c.writing]
                if not reading:
                    self.refused += 1
                    sock.close()
                    continue
                self.refused += 1
                self._close(min(reading, key=lambda c: c.since))  # the oldest idle one makes room
            c = _Conn(sock, time.monotonic())
            self.conns[sock.fileno()] = c
            self._sel.register(sock, selectors.EVENT_READ, c)

    def _serve(self, c: _Conn) -> None:
        try:
            if c.writing:
                sent = c.sock.send(c.out)
                c.out = c.out[sent:]
                if not c.out:
                    self._close(c)
                return
            data = c.sock.recv(4096)
            if not data:
                self._close(c)
                return
            c.inbuf += data
            end = c.inbuf.find(b"\r\n\r\n")
            if end < 0:
                end = c.inbuf.find(b"\n\n")
            if end < 0:
                if len(c.inbuf) > MAX_REQUEST_BYTES:
                    self._answer(c, _response("431 Request Header Fields Too Large", b"request too large\n"))
                return
            self._answer(c, self._respond(bytes(c.inbuf[:end])))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)  # the client went away: nothing to say
        except Exception as e:  # noqa: BLE001
            self._error("request", e)
            self._close(c)

    def _respond(self, head: bytes) -> bytes:
        line = head.split(b"\n", 1)[0].strip().split()
        if len(line) != 3 or not line[2].startswith(b"HTTP/"):
            return _response("400 Bad Request", b"bad request\n")
        method, target = line[0], line[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"only GET\n")
        if target not in (b"/metrics", b"/"):
            return _response("404 Not Found", b"try /metrics\n")
        ctype, body = self.render()
        return _response("200 OK", body, ctype, head=method == b"HEAD")

    def _answer(self, c: _Conn, data: bytes) -> None:
        c.writing, c.out = True, data
        c.deadline = time.monotonic() + RESPONSE_TIMEOUT_S
        self._sel.modify(c.sock, selectors.EVENT_WRITE, c)
        self._serve(c)  # most answers fit the socket buffer at once

    def _close(self, c: _Conn) -> None:
        self.conns.pop(c.sock.fileno(), None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _error(self, where: str, e: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY_S:
            self._last_error_log = now
            self.log("metrics_request_failed", where=where, error=repr(e)[:500])

    # -- end ------------------------------------------------------------------
    def shutdown(self) -> None:
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def server_close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        for s in (self.listener, self._stop_r, self._stop_w):
            s.close()
        self._sel.close()


# A body is rendered at most this often; scrapes in between get the last one
# (a flood of scrapes costs one render per interval, not one each: the
# rendering holds the GIL the killer's loop needs).
RENDER_EVERY_S = 0.25


def prometheus_render(registry: Any, every_s: float = RENDER_EVERY_S,
                      clock: Callable[[], float] = time.monotonic) -> Callable[[], tuple[str, bytes]]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    last: list[Any] = [-1e9, b""]

    def render() -> tuple[str, bytes]:
        now = clock()
        if now - last[0] >= every_s:
            last[:] = [now, generate_latest(registry)]
        return CONTENT_TYPE_LATEST, last[1]

    return render
