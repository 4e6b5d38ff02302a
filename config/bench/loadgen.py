"""A small HTTP/1.1 load generator for the bench commands: keep-alive connections to 127.0.0.1 only, each
sending one request after the other for a fixed time (closed loop). Prints one JSON object: requests,
requests/s, errors (status >= 400 or broken connections), latency percentiles in milliseconds (and, with
--latencies, every latency, so that several runs can be merged).

    python -m config.bench.loadgen --port 8000 --path /healthz --duration 5 --concurrency 16

Deliberately minimal (asyncio streams, no parsing beyond status line, headers and Content-Length), so
that it takes as little as possible of the CPU the server under test needs."""

import argparse
import asyncio
import json
import time

HOST = "127.0.0.1"


def _request(method: str, path: str, port: int, headers: list[str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: keep-alive", *headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep the connection)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, close, chunked = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, not close


async def _client(port: int, request: bytes, deadline: float, latencies: list[float], counts: dict) -> None:
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            started = time.perf_counter()
            writer.write(request)
            status, keep = await _read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            counts["requests"] += 1
            if status >= 400:
                counts["errors"] += 1
                counts.setdefault("statuses", {}).setdefault(str(status), 0)
                counts["statuses"][str(status)] += 1
            if not keep:
                writer.close()
                writer = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            counts["errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def run(
    *,
    port: int,
    path: str,
    method: str,
    headers: list[str],
    body: bytes,
    duration: float,
    concurrency: int,
    key: str | None = None,
    with_latencies: bool = False,
) -> dict:
    """`key`: the API key every request carries (Authorization: Bearer <key>)."""
    if key:
        headers = [*headers, f"Authorization: Bearer {key}"]
    request = _request(method, path, port, headers, body)
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    started = time.monotonic()
    deadline = started + duration
    await asyncio.gather(*(_client(port, request, deadline, latencies, counts) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else None

    return {
        **counts,
        "seconds": elapsed,
        "rps": counts["requests"] / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        **({"latencies_ms": [round(ms, 3) for ms in latencies]} if with_latencies else {}),
    }


def _read_key(path: str) -> str:
    with open(path) as lines:
        return lines.read().strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body", default="")
    parser.add_argument("--key-file", help="a file holding the API key every request carries (not argv: ps shows it)")
    parser.add_argument("--latencies", action="store_true", help="also print every latency (to merge runs)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    result = asyncio.run(
        run(
            port=args.port,
            path=args.path,
            method=args.method.upper(),
            headers=args.header,
            body=args.body.encode(),
            duration=args.duration,
            concurrency=args.concurrency,
            key=_read_key(args.key_file) if args.key_file else None,
            with_latencies=args.latencies,
        )
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
