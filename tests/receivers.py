"""Tiny HTTP receivers on 127.0.0.1 for tests of outbound calls (managed providers, webhooks).
Loopback only; each serves in a thread and records what it received."""

import http.server
import json
import threading
from contextlib import contextmanager


@contextmanager
def receiver(responder=None):
    """Yields (base_url, requests). `responder(request_dict) -> (status, body, headers)`: a body given as bytes
    is sent as it is, anything else as its JSON."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            request = {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
            received.append(request)
            status, body, headers = (responder or (lambda r: (200, {}, {})))(request)
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
