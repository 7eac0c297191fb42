"""Small, exact pieces: status messages, exact money on SQLite, credentials at rest."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from b123_pipelines import tables as t
from b123_pipelines.status import status_message
from b123_pipelines.vault import Vault, VaultError


def test_status_messages_in_each_locale():
    assert status_message("da", 1234, 3.21) == "Hentede 1.234 transaktioner på 3,2 sekunder"
    assert status_message("en", 1234, 3.21) == "Fetched 1,234 transactions in 3.2 seconds"
    assert status_message("en", 1, 0.5, accounts_changed=2) == "Fetched 1 transaction in 0.5 seconds; 2 accounts changed"
    assert status_message("da", 0, 0.44, accounts_changed=1) == "Hentede 0 transaktioner på 0,4 sekunder; 1 konto ændret"


def test_money_stays_exact_where_floats_would_drift(engine):
    amounts = [Decimal("0.10")] * 10 + [Decimal("1234567890.99"), Decimal("-0.01")]
    with engine.begin() as conn:
        conn.execute(t.budget_actuals.insert(), [
            dict(tenant_id="x", account_number=str(i), period=dt.date(2025, 1, 1),
                 dimension_1="", dimension_2="", dimension_3="", amount=a, entry_count=1)
            for i, a in enumerate(amounts)])
        total = conn.execute(sa.select(sa.func.sum(t.budget_actuals.c.amount))).scalar()
        back = conn.execute(sa.select(t.budget_actuals.c.amount).where(t.budget_actuals.c.account_number == "10")).scalar()
    assert total == Decimal("1234567891.98") and isinstance(total, Decimal)
    assert back == Decimal("1234567890.99")


def test_credentials_are_encrypted_and_a_wrong_key_is_explained():
    from cryptography.fernet import Fernet

    vault = Vault(Fernet.generate_key().decode())
    cipher = vault.encrypt({"grant_token": "very-secret"})
    assert "very-secret" not in cipher and vault.decrypt(cipher) == {"grant_token": "very-secret"}
    with pytest.raises(VaultError, match="key changed"):
        Vault(Fernet.generate_key().decode()).decrypt(cipher)
    with pytest.raises(VaultError, match="not a valid key"):
        Vault("nope")
