"""The box's secret key: encrypts stored passwords and keys Digest nonces.

The key is 32 random bytes in ``<data_dir>/secret.key`` (mode 0600), created on first
start. A database copied without it reveals no password. Passwords are sealed with
AES-256-GCM, the username bound in as associated data so rows cannot be swapped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class SecretKeyError(RuntimeError):
    pass


def load_or_create_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    if len(data) != 32:
        raise SecretKeyError(f"{path} must hold exactly 32 bytes")
    return data


class Sealer:
    """Encrypts and decrypts short secrets with the box key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(hmac.new(key, b"onvif-nvr password seal", hashlib.sha256).digest())
        self._nonce_key = hmac.new(key, b"onvif-nvr digest nonce", hashlib.sha256).digest()

    @property
    def nonce_key(self) -> bytes:
        """A separate key for HMAC-signing Digest nonces."""
        return self._nonce_key

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}:" + base64.b64encode(nonce + ct).decode()

    def open(self, sealed: str, context: str) -> str:
        version, _, payload = sealed.partition(":")
        if version != _VERSION:
            raise SecretKeyError("sealed value has an unknown version")
        raw = base64.b64decode(payload)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise SecretKeyError("sealed value does not match the secret key") from None
