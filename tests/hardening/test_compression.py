"""Compressed answers: one that decodes into far more than its size cap (a compression bomb: a few hundred
bytes on the wire, tens of MiB decoded) is refused without ever being decoded whole, for avatars, platform
answers and managed providers alike. Layers asks for answers as they are (Accept-Encoding: identity); a
server that compresses anyway is decoded a piece at a time, within the cap, and read as before."""

import functools
import gzip
import json
import tracemalloc
import zlib
from contextlib import contextmanager

import httpx
import pytest

from accounts.platforms import http as platform_http
from accounts.platforms.base import PlatformUnavailable
from accounts.platforms.tiktok import TikTokClient
from config import netguard
from tests.hardening.test_limits import serve

# Far over every cap (avatars 5 MiB, platform and provider answers 4 MiB), yet 64 KiB on the wire with one
# layer of gzip and a few hundred bytes with two: zeros compress about a thousand to one.
DECODED = 64 * 1024 * 1024
# What refusing such an answer may hold at most: the cap's worth of body and change. Decoding the answer
# whole (one network read of 64 KiB decodes into 64 MiB) is far over it.
PEAK = 16 * 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PROFILE = {"data": {"user": {"open_id": "abc", "username": "zipped"}}, "error": {"code": "ok"}}


@functools.cache
def bomb(encoding: str) -> bytes:
    """DECODED zero bytes, compressed as `encoding` ("gzip", or "gzip, gzip": gzip twice) names."""
    layer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 20)
    body = b"".join(layer.compress(zeros) for _ in range(DECODED >> 20)) + layer.flush()
    if encoding == "gzip, gzip":
        body = gzip.compress(body, 9)
    return body


def compressed(data: bytes, encoding: str) -> bytes:
    """`data` as a server answering `encoding` sends it ("deflate (raw)": the headerless deflate some send)."""
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15, "deflate (raw)": -15}[encoding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


def answering(content_type: bytes, encoding: str, body: bytes):
    """A `serve` responder: a 200 with this type, Content-Encoding and body, all at once."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
    head += b"Content-Encoding: " + encoding.removesuffix(" (raw)").encode() + b"\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n".encode()

    def respond(conn, done):
        conn.sendall(head + body)
        done.wait(5)

    return respond


@contextmanager
def peak_memory():
    """The most memory Python held at once inside the block (tracemalloc): `seen["peak"]`, in bytes."""
    seen = {}
    tracemalloc.start()
    try:
        yield seen
    finally:
        seen["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def asked_for_the_answer_as_it_is(request: bytes) -> bool:
    return b"\r\naccept-encoding: identity\r\n" in request.lower()


# --- Bombs --------------------------------------------------------------------------------------------

BOMBS = pytest.mark.parametrize(
    "encoding, refusal",
    [("gzip", "too large"), ("gzip, gzip", "content encoding gzip, gzip not accepted")],
    ids=["gzip", "gzip-twice"],
)


@BOMBS
def test_an_avatar_that_is_a_compression_bomb_is_refused_without_decoding_it_whole(encoding, refusal):
    assert len(bomb(encoding)) <= 64 * 1024
    url, done = serve(answering(b"image/png", encoding, bomb(encoding)))
    try:
        with (
            peak_memory() as seen,
            netguard.public_client() as client,
            pytest.raises(netguard.FetchFailed, match=refusal),
        ):
            netguard.fetch_limited(url, client=client, max_bytes=5 * 1024 * 1024, allowed_types=("image/png",))
    finally:
        done.set()
    assert seen["peak"] < PEAK, f"{seen['peak'] / 2**20:.0f} MiB held to refuse a 5 MiB-capped avatar"


@BOMBS
def test_a_platform_answer_that_is_a_compression_bomb_is_refused_without_decoding_it_whole(settings, encoding, refusal):
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    url, done = serve(answering(b"application/json", encoding, bomb(encoding)), path="")
    settings.LAYERS_TIKTOK_API_BASE = url
    try:
        with peak_memory() as seen, pytest.raises(PlatformUnavailable) as raised:
            TikTokClient().get_profile(access_token="act.x")
    finally:
        done.set()
    assert seen["peak"] < PEAK, f"{seen['peak'] / 2**20:.0f} MiB held to refuse a 4 MiB-capped answer"
    assert raised.value.code == "bad_response" and raised.value.outcome_unknown
    assert refusal in str(raised.value)


@pytest.mark.django_db(transaction=True)
def test_a_managed_provider_answer_that_is_a_compression_bomb_is_refused_and_the_post_retried(owner):
    from tests.accounts.oauth_helpers import connected_account
    from tests.scheduling.publish_helpers import managed_provider, post, run_dispatcher, schedule_now

    requests: list[bytes] = []
    url, done = serve(answering(b"application/json", "gzip", bomb("gzip")), path="/dispatch", requests=requests)
    account = connected_account(owner, "tiktok", "managed.bomb")
    managed_provider(project=owner.project, name="Bomb", endpoint_url=url)
    scheduled = schedule_now(owner, account["id"], mode="managed")
    try:
        with peak_memory() as seen:
            run_dispatcher()
    finally:
        done.set()
    assert seen["peak"] < PEAK, f"{seen['peak'] / 2**20:.0f} MiB held to refuse a 4 MiB-capped answer"
    body = post(owner, scheduled["id"])
    assert body["status"] == "queued" and body["attempts"] == 1, body  # retried later: the provider deduplicates
    assert asked_for_the_answer_as_it_is(requests[0])


# --- Compressed answers within the cap ------------------------------------------------------------------

ENCODINGS = pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "deflate (raw)"])


@ENCODINGS
def test_a_compressed_platform_answer_within_the_cap_is_read(settings, encoding):
    # Layers asks for the answer as it is; some servers compress whatever they are asked.
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    requests: list[bytes] = []
    body = compressed(json.dumps(PROFILE).encode() + b" " * 100_000, encoding)
    url, done = serve(answering(b"application/json", encoding, body), path="", requests=requests)
    settings.LAYERS_TIKTOK_API_BASE = url
    try:
        profile = TikTokClient().get_profile(access_token="act.x")
    finally:
        done.set()
    assert (profile.platform_user_id, profile.username) == ("abc", "zipped")
    assert asked_for_the_answer_as_it_is(requests[0])


@ENCODINGS
def test_a_compressed_avatar_within_the_cap_is_read(settings, encoding):
    settings.LAYERS_PLATFORM_TRANSPORT = "http"
    requests: list[bytes] = []
    url, done = serve(answering(b"image/png", encoding, compressed(PNG, encoding)), requests=requests)
    try:
        with platform_http.platform_http_client(public_only=True) as client:
            fetched = netguard.fetch_limited(url, client=client, max_bytes=len(PNG), allowed_types=("image/png",))
    finally:
        done.set()
    assert fetched == netguard.Fetched(content=PNG, content_type="image/png")
    assert asked_for_the_answer_as_it_is(requests[0])


def fetch_streamed(headers: dict, chunks: list[bytes], *, max_bytes: int) -> netguard.Fetched:
    """fetch_limited of an avatar answered in process (no network) with these headers, its body in `chunks`."""

    def answer(request):
        return httpx.Response(200, headers={"Content-Type": "image/png", **headers}, content=iter(chunks))

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        return netguard.fetch_limited(
            "https://cdn.example.test/a.png", client=client, max_bytes=max_bytes, allowed_types=("image/png",)
        )


def test_a_compressed_answer_arriving_a_byte_at_a_time_is_read_whole():
    body = compressed(PNG, "gzip")
    chunks = [body[i : i + 1] for i in range(len(body))]
    assert fetch_streamed({"Content-Encoding": "gzip"}, chunks, max_bytes=len(PNG)).content == PNG


def test_a_compressed_answer_one_byte_over_the_cap_is_too_large():
    # The cap counts decoded bytes, whatever the wire carried.
    with pytest.raises(netguard.FetchFailed, match="too large"):
        fetch_streamed({"Content-Encoding": "gzip"}, [compressed(PNG, "gzip")], max_bytes=len(PNG) - 1)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_an_answer_in_an_encoding_layers_does_not_decode_is_refused_not_read_as_garbage(encoding):
    with pytest.raises(netguard.FetchFailed, match=f"content encoding {encoding} not accepted"):
        fetch_streamed({"Content-Encoding": encoding}, [b"\x1b\x00??"], max_bytes=1000)
