"""Encryption at rest for Kite secrets: MultiFernet so keys can rotate (newest key first)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBoxError(RuntimeError):
    pass


class SecretBox:
    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise SecretBoxError("no encryption key configured (ACCOUNT_ENCRYPTION_KEY)")
        self._fernet = MultiFernet([Fernet(k) for k in parts])

    def encrypt(self, plain: str | None) -> bytes | None:
        return None if plain is None else self._fernet.encrypt(plain.encode())

    def decrypt(self, token: bytes | None) -> str | None:
        if token is None:
            return None
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken as exc:
            raise SecretBoxError("ciphertext does not match any configured key") from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt under the newest key."""
        return self._fernet.rotate(bytes(token))


def new_key() -> str:
    return Fernet.generate_key().decode()
