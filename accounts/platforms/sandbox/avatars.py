"""Profile pictures as the platforms serve them: signed CDN URLs that expire (TikTok documents 2 h), so a
client that stores the URL instead of copying the bytes breaks in the sandbox too. The image is a real PNG
made here (zlib + struct), its colours derived from the handle."""

import hashlib
import hmac
import struct
import zlib
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

SIZE = 64


def signed_url(request, *, platform: str, username: str) -> str:
    """An absolute URL on the host the API call came in on, valid for LAYERS_SANDBOX_AVATAR_TTL_SECONDS.
    The query mimics each CDN: TikTok `x-expires` / `x-signature`, Instagram `oe` (hex) / `oh`."""
    expires = int(timezone.now().timestamp()) + int(settings.LAYERS_SANDBOX_AVATAR_TTL_SECONDS)
    signature = _signature(platform, username, expires)
    if platform == "tiktok":
        query = {"x-expires": expires, "x-signature": signature}
    else:
        query = {"oe": f"{expires:08X}", "oh": signature}
    path = reverse("sandbox:avatar", kwargs={"platform": platform, "username": username})
    return request.build_absolute_uri(f"{path}?{urlencode(query)}")


def check(*, platform: str, username: str, query) -> bool:
    """The signature matches and the URL has not expired."""
    try:
        if platform == "tiktok":
            expires, signature = int(query.get("x-expires", "")), query.get("x-signature", "")
        else:
            expires, signature = int(query.get("oe", ""), 16), query.get("oh", "")
    except ValueError:
        return False
    if not hmac.compare_digest(signature, _signature(platform, username, expires)):
        return False
    return timezone.now().timestamp() < expires


def png(username: str) -> bytes:
    """A 64×64 PNG: a disc in the handle's colour on a lighter background."""
    digest = hashlib.sha256(username.encode()).digest()
    fg = bytes(64 + b % 160 for b in digest[:3])
    bg = bytes(255 - (255 - c) // 4 for c in fg)
    centre, radius2 = (SIZE - 1) / 2, (SIZE * 0.38) ** 2
    rows = []
    for y in range(SIZE):
        row = bytearray(b"\x00")  # filter type 0 (None) for each scanline
        for x in range(SIZE):
            row += fg if (x - centre) ** 2 + (y - centre) ** 2 <= radius2 else bg
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _signature(platform: str, username: str, expires: int) -> str:
    message = f"avatar:{platform}:{username}:{expires}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]
