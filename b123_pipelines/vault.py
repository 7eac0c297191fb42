"""Credentials at rest: Fernet (AES-128-CBC + HMAC) with B123_SECRET_KEY.

Decrypted values live only in a connector's settings as pydantic SecretStr, which prints as
'**********', so they cannot reach a log or an error by accident.
"""

from __future__ import annotations

import json
import os

from cryptography.fernet import Fernet, InvalidToken

from b123_pipelines import settings


class VaultError(Exception):
    pass


class Vault:
    def __init__(self, key: str):
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            raise VaultError(
                "B123_SECRET_KEY is not a valid key (32 url-safe base64-encoded bytes); create one "
                "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None

    @classmethod
    def from_environment(cls, key: str | None = None) -> "Vault":
        key = key or os.environ.get("B123_SECRET_KEY")
        if not key and settings.secret_key_file().exists():
            key = settings.secret_key_file().read_text().strip()
        if not key:
            raise VaultError(
                "No secret key for stored credentials: set B123_SECRET_KEY (production) or run "
                "'b123 demo' / 'b123 tenant add', which create one in B123_HOME for local use."
            )
        return cls(key)

    def encrypt(self, secrets: dict) -> str:
        return self._fernet.encrypt(json.dumps(secrets).encode()).decode()

    def decrypt(self, ciphertext: str) -> dict:
        try:
            return json.loads(self._fernet.decrypt(ciphertext.encode()))
        except InvalidToken:
            raise VaultError(
                "Stored credentials cannot be decrypted with this B123_SECRET_KEY: the key changed "
                "since they were stored. Store the tenant's credentials again."
            ) from None


def ensure_local_key() -> None:
    """For local use only: a key file in B123_HOME unless B123_SECRET_KEY is set."""
    path = settings.secret_key_file()
    if os.environ.get("B123_SECRET_KEY") or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Fernet.generate_key().decode())
    path.chmod(0o600)
