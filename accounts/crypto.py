"""Platform tokens are encrypted at rest with MultiFernet: the first key of LAYERS_TOKEN_KEYS encrypts,
every listed key decrypts, so keys rotate by prepending a new one and re-encrypting
(`manage.py rotate_token_keys`) before the old one is removed.

Development and tests without LAYERS_TOKEN_KEYS derive a key from SECRET_KEY so that a fresh clone runs
with no configuration; production settings refuse to start without explicit keys."""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])


def _keys() -> tuple[str, ...]:
    keys = tuple(k for k in settings.LAYERS_TOKEN_KEYS if k)
    if keys:
        return keys
    derived = base64.urlsafe_b64encode(hashlib.sha256(b"layers-token-key:" + settings.SECRET_KEY.encode()).digest())
    return (derived.decode(),)


def encrypt(plaintext: str | None) -> str:
    if not plaintext:
        return ""
    return _fernet(_keys()).encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str | None) -> str | None:
    if not ciphertext:
        return None
    try:
        return _fernet(_keys()).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        # A key was removed before its tokens were re-encrypted: treat the token as lost (→ reauth),
        # never crash a request over it.
        return None


def rotate(ciphertext: str | None) -> str:
    """Re-encrypt under the current first key (for key rotation)."""
    if not ciphertext:
        return ""
    return _fernet(_keys()).rotate(ciphertext.encode()).decode()


def reencrypt(ciphertext: str | None) -> str:
    """`ciphertext` under the current first key, for a secret moving to another row (a pool account's token
    onto its leased account and back). A copy of the stored form would keep the key it was written with and
    could land in a column a running `rotate_token_keys` has already passed: removing the old key afterwards
    would lose it. A value no configured key decrypts is copied as it is (it is lost either way, and the
    command counts it)."""
    try:
        return rotate(ciphertext)
    except InvalidToken:
        return ciphertext or ""


def is_current(ciphertext: str) -> bool:
    """Whether the first key alone decrypts `ciphertext`: nothing to rotate, and it survives the removal of
    every other key."""
    try:
        Fernet(_keys()[0].encode()).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def looks_encrypted(value: str) -> bool:
    """A Fernet token (version byte 0x80, base64url: "gAAAAA…"). Base32 TOTP secrets and hex seeds, which
    allauth stored in clear before our MFA adapter encrypted them, never start like this."""
    return value.startswith("gAAAAA")


def key_count() -> int:
    return len(_keys())
