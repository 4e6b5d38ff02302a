"""A real HTTP receiver on 127.0.0.1 (never anything else: tests do not reach the network) that records
every request and answers what the test tells it to, plus an independent signature check written from the
contract (API.md), not from the code under test."""

import hashlib
import hmac
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict  # lower-cased names
    body: bytes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "Receiver"

    def verify_request(self, request, client_address):
        self.owner.connections += 1  # counted before any HTTP parsing: even a TLS hello is seen here
        return True

    def handle_error(self, request, client_address):
        pass  # a client killed mid-request is part of some tests


class Receiver:
    """`respond(received) -> (status, headers)`; default 200."""

    def __init__(self, *, port: int = 0, respond=None):
        self.requests: list[Received] = []
        self.connections = 0
        self.respond = respond or (lambda received: (200, {}))
        self._port = port
        self._server = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                receiver.requests.append(received)
                status, headers = receiver.respond(received)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _handle  # noqa: N815 - http.server's naming

            def log_message(self, format, *args):
                pass

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._server.owner = self
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self._port}{path}"

    @property
    def posts(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST"]


def parse_signature(header: str) -> tuple[int, list[str]]:
    """`t=<unix seconds>,v1=<hex>[,v1=<hex>]` → (t, [v1, ...])."""
    timestamp, signatures = None, []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    assert timestamp is not None, header
    return timestamp, signatures


def signed_with(received: Received, secret: str) -> bool:
    """True when one v1= of the request is HMAC-SHA256(secret, "<t>.<raw body>") in hex."""
    timestamp, signatures = parse_signature(received.headers["layers-signature"])
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + received.body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, sig) for sig in signatures)


class DripReceiver:
    """Reads a request, then answers `HTTP/1.1 200 OK` with its headers dripped one byte every `gap`
    seconds: never silent for long enough to trip a per-read timeout, never done in time. `ended` is set
    once it stops; `client_left` says whether the client hung up before the headers were complete."""

    def __init__(self, *, gap: float, header_bytes: int):
        self.gap, self.header_bytes = gap, header_bytes
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.ended = threading.Event()
        self.client_left = self.completed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lengths = [
                line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            ]
            while len(body) < int(lengths[0]):
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(self.header_bytes):
                if self.stopped.is_set():
                    return
                time.sleep(self.gap)
                conn.sendall(b"X")
            conn.sendall(b"-Drip: 1\r\nContent-Length: 0\r\n\r\n")
            self.completed = True
        except OSError:  # the client hung up: a send to its closed connection fails
            self.client_left = True
        finally:
            conn.close()
            self.ended.set()

    def stop(self):
        self.stopped.set()
        self.sock.close()
