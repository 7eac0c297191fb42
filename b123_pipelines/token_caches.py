"""A tenant's OAuth token cache between runs: `token_caches`, encrypted with the vault.

Business Central is reached with Entra ID access tokens that live about an hour. MSAL keeps them in
a cache it can serialize; `VaultTokenStore` is the connector kit's `TokenStore` for one tenant, so a
tenant's runs reuse its token while it is good, and no other tenant ever sees it - even one on the
same Entra app. The cache holds bearer tokens, so at rest it is Fernet ciphertext like the stored
credentials, and it goes with the tenant (`b123 tenant remove` deletes every table's rows of a
tenant) or with its credentials (new credentials start without a token).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from b123_pipelines import tables as t
from b123_pipelines.db import now, upsert
from b123_pipelines.vault import Vault, VaultError


class VaultTokenStore:
    """One tenant's MSAL token cache in `token_caches`, encrypted with `vault`.

    A cache that cannot be decrypted (the key changed) counts as empty: a new token is asked for,
    which is no error. A save for a tenant removed meanwhile writes nothing, so no row outlives it.
    """

    def __init__(self, engine: Engine, vault: Vault, tenant_id: str):
        self.engine, self.vault, self.tenant_id = engine, vault, tenant_id

    def load(self) -> str | None:
        with self.engine.connect() as conn:
            ciphertext = conn.execute(sa.select(t.token_caches.c.ciphertext).where(
                t.token_caches.c.tenant_id == self.tenant_id)).scalar()
        if ciphertext is None:
            return None
        try:
            return self.vault.decrypt(ciphertext).get("msal")
        except VaultError:
            return None

    def save(self, serialized: str) -> None:
        row = dict(tenant_id=self.tenant_id, ciphertext=self.vault.encrypt({"msal": serialized}), updated_at=now())
        with self.engine.begin() as conn:
            if conn.execute(sa.select(t.tenants.c.tenant_id).where(t.tenants.c.tenant_id == self.tenant_id)).first():
                upsert(conn, t.token_caches, [row], keys=("tenant_id",))


def forget_tokens(conn, tenant_id: str) -> None:
    """Drops a tenant's cached tokens (its credentials change: the next run asks for a new token)."""
    conn.execute(t.token_caches.delete().where(t.token_caches.c.tenant_id == tenant_id))
