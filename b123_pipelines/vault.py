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

    def can_decrypt(self, ciphertext: str) -> bool:
        try:
            self._fernet.decrypt(ciphertext.encode())
        except InvalidToken:
            return False
        return True

    def decrypt(self, ciphertext: str) -> dict:
        try:
            return json.loads(self._fernet.decrypt(ciphertext.encode()))
        except InvalidToken:
            raise VaultError(
                "Stored credentials cannot be decrypted with this B123_SECRET_KEY: the key changed "
                "since they were stored. Store the tenant's credentials again."
            ) from None


def check_key_setting() -> None:
    """Raises VaultError when B123_SECRET_KEY is set but is not a key (before anything is written)."""
    if os.environ.get("B123_SECRET_KEY"):
        Vault(os.environ["B123_SECRET_KEY"])


def vault_for_storing(stored: dict[str, str], tenant_id: str) -> Vault:
    """The vault to store `tenant_id`'s credentials with; `stored` is every tenant's ciphertext.

    The local key file is made only when no credentials are stored yet: a new key beside stored
    credentials would leave them unreadable. A key that decrypts none of the other tenants'
    credentials is refused as well (the tenant's own may be unreadable: that is why they are stored
    again).
    """
    if not os.environ.get("B123_SECRET_KEY") and not settings.secret_key_file().exists():
        if stored:
            raise VaultError(
                f"The database holds {len(stored)} tenants' stored credentials, but no key to decrypt them is "
                f"given: B123_SECRET_KEY is not set and {settings.secret_key_file()} does not exist. Set "
                "B123_SECRET_KEY to the key they were stored with (a new key would leave them unreadable).")
        ensure_local_key()
    vault = Vault.from_environment()
    others = [cipher for tenant, cipher in stored.items() if tenant != tenant_id]
    if others and not any(vault.can_decrypt(c) for c in others):
        where = "B123_SECRET_KEY" if os.environ.get("B123_SECRET_KEY") else f"the key in {settings.secret_key_file()}"
        raise VaultError(
            f"{where} decrypts none of the {len(others)} tenants' credentials stored in the database: it is "
            "not the key they were stored with. Set B123_SECRET_KEY to that key.")
    return vault


def ensure_local_key() -> None:
    """For local use only: a key file in B123_HOME unless B123_SECRET_KEY is set."""
    path = settings.secret_key_file()
    if os.environ.get("B123_SECRET_KEY") or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Fernet.generate_key().decode())
    path.chmod(0o600)
