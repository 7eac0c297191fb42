"""e-conomic's "Fetch new token automatically", end to end over real HTTP: the installation URL, the
emulator's approval and 302, our callback server, the stored grant, the update that follows.
On SQLite and PostgreSQL (the `env` fixture)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from dagster import DagsterInstance

from b123_pipelines import tables as t
from b123_pipelines.cli import main
from b123_pipelines.definitions import build_definitions
from b123_pipelines.regrant import (
    CALLBACK_PATH,
    STATE_LIFETIME,
    CallbackServer,
    RegrantSetupError,
    installation_url,
)
from b123_pipelines.runner import run_sync
from b123_pipelines.tenants import (
    add_role,
    add_tenant,
    add_user,
    get_tenant,
    mark_awaiting_credentials,
    remove_tenant,
)
from b123_pipelines_tests.conftest import economic_connection
from b123_pipelines_tests.helpers import entry_ids, last_run, nonzero, warehouse_sums
from b123_pipelines_tests.test_sensors import started, tick

APP_SECRET = "app-secret-SENTINEL-1"


@pytest.fixture
def acme(env, engine, vault, emulator, monkeypatch):
    """acme (Danish) and london (English) on the emulator's agreement, each with a user who may
    fetch figures; the app's public token configured."""
    monkeypatch.setenv("B123_ECONOMIC_APP_PUBLIC_TOKEN", emulator.app_public_token)
    connection = {**economic_connection(emulator), "installation_url": emulator.installation_url}
    add_tenant(engine, vault, "acme", "economic", "Acme ApS", connection)
    add_tenant(engine, vault, "london", "economic", "London Ltd", connection, timezone="Europe/London", locale="en")
    add_role(engine, "controller", True)
    add_user(engine, "anna", "acme", "controller", False)
    add_user(engine, "liz", "london", "controller", False)
    return engine


@pytest.fixture
def callback(engine, vault, monkeypatch):
    """Our callback server, in this process; B123_PUBLIC_URL leads to it."""
    with CallbackServer(engine, vault, out=io.StringIO()) as server:
        monkeypatch.setenv("B123_PUBLIC_URL", server.url)
        yield server


def _plain(engine, tenant_id="acme") -> dict:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.connection_settings.c.settings)
                            .where(t.connection_settings.c.tenant_id == tenant_id)).scalar()


def _ciphertext(engine, tenant_id="acme") -> str:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.credentials.c.ciphertext)
                            .where(t.credentials.c.tenant_id == tenant_id)).scalar()


def _requests(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(t.sync_requests).order_by(t.sync_requests.c.request_id)).all()


def _every_row(engine) -> str:
    with engine.connect() as conn:
        return "\n".join(str(tuple(row)) for table in t.all_tables() for row in conn.execute(sa.select(table)))


def _dagster_logs(run_ids) -> str:
    instance = DagsterInstance.get()
    return "\n".join(f"{record.user_message} {record.dagster_event.event_specific_data if record.dagster_event else ''}"
                     for run_id in run_ids for record in instance.all_logs(run_id))


def _follow(url: str) -> requests.Response:
    """What the user's browser does: open the installation page, come back to our callback."""
    return requests.get(url, timeout=60)


def _works(emulator, grant: str) -> int:
    return requests.get(emulator.url + "/accounts", timeout=10, headers={
        "X-AppSecretToken": APP_SECRET, "X-AgreementGrantToken": grant}).status_code


def test_a_revoked_grant_is_replaced_in_one_click_and_the_update_resumes(env, engine, vault, emulator, acme,
                                                                       callback, capsys):
    first = run_sync("acme", echo=None)
    assert first.ok
    assert _plain(engine)["agreement_number"] == emulator.agreement_number  # recorded by the first good update
    emulator.book_entries(4)
    emulator.revoke_grant()  # the user who connected budget123 lost access to the books
    revoked = run_sync("acme", echo=None)
    assert not revoked.ok and "Fetch new token automatically" in revoked.message
    assert get_tenant(engine, "acme").awaiting_credentials
    before = _ciphertext(engine)
    spare = installation_url("acme", "anna")  # a second link, made before the first is used

    url = installation_url("acme", "anna")
    answer = _follow(url)

    asked = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(asked.query).items()}
    assert f"{asked.scheme}://{asked.netloc}{asked.path}" == emulator.installation_url
    assert query["appPublicToken"] == emulator.app_public_token and query["locale"] == "da-DK"
    assert query["redirectUrl"].startswith(f"{callback.url}{CALLBACK_PATH}?state=")
    assert [r.status_code for r in answer.history] == [302]
    assert answer.history[0].headers["Location"].startswith(query["redirectUrl"] + "&token=")
    assert answer.status_code == 200, answer.text
    assert "Den nye adgangs-ID fra e-conomic er gemt for Acme ApS" in answer.text
    assert answer.headers["Cache-Control"] == "no-store" and answer.headers["Referrer-Policy"] == "no-referrer"
    (token,) = emulator.grants_issued
    assert _ciphertext(engine) != before
    assert vault.decrypt(_ciphertext(engine)) == {"app_secret_token": APP_SECRET, "grant_token": token}
    assert _plain(engine)["agreement_number"] == emulator.agreement_number
    assert not get_tenant(engine, "acme").awaiting_credentials
    (request,) = _requests(engine)
    assert (request.tenant_id, request.user_id, request.state) == ("acme", "anna", "new")
    assert (_works(emulator, token), _works(emulator, "grant-token-SENTINEL-2")) == (200, 401)

    # The browser reloads the page: nothing more is stored, nothing more requested.
    stored = _ciphertext(engine)
    again = requests.get(answer.url, timeout=30)
    assert again.status_code == 200 and "allerede gemt" in again.text
    # The spare link was made for the credentials replaced since: refused, though e-conomic approved.
    spared = _follow(spare)
    assert spared.status_code == 400 and "allerede brugt" in spared.text
    assert len(emulator.grants_issued) == 2 and _ciphertext(engine) == stored and len(_requests(engine)) == 1

    # The refresh sensor serves the request; the update it launches resumes from the cursor.
    with DagsterInstance.ephemeral() as instance:
        assert started(tick(build_definitions(), "refresh_requests", instance, env)) == [
            ("acme", "refresh_request", "anna")]
    resumed = run_sync("acme", trigger="refresh_request", user_id="anna", echo=None)

    assert resumed.ok, resumed.message
    assert last_run(engine, "acme")["transactions_fetched"] == 4
    assert entry_ids(engine, "acme") == [int(e["entryNumber"]) for e in emulator.posted_entries()]
    assert nonzero(warehouse_sums(engine, "acme", t.budget_actuals)) == nonzero(emulator.sums_by_account_month())
    assert _requests(engine)[0].state == "done"
    seen = "\n".join([_every_row(engine), answer.text, again.text, spared.text, callback.out.getvalue(),
                      _dagster_logs([first.run_id, revoked.run_id, resumed.run_id]), *capsys.readouterr()])
    for grant in emulator.grants_issued:
        assert grant not in seen
    assert "GET /economic/callback 200" in callback.out.getvalue()


def _tamper(url: str, change) -> str:
    """The installation URL with the state in its redirectUrl changed by `change(state)`."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    back = urlsplit(query["redirectUrl"])
    state = parse_qs(back.query)["state"][0]
    query["redirectUrl"] = back._replace(query=urlencode({"state": change(state)})).geturl()
    return parts._replace(query=urlencode(query)).geturl()


def _other_tenant(state: str) -> str:
    version, body, signature = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["t"], claims["u"] = "london", "liz"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{body}.{signature}"


def _flip_last(state: str) -> str:
    return state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]


CASES = {
    # case: (how the link is made or what the user does, status, words on the page)
    "forged signature": (lambda emu: _tamper(installation_url("acme", "anna"), _flip_last), 400,
                         "Linket er ikke gyldigt"),
    "signed with another key": (lambda emu: installation_url("acme", "anna", secret_key=Fernet.generate_key().decode()),
                                400, "Linket er ikke gyldigt"),
    "state moved to another tenant": (lambda emu: _tamper(installation_url("acme", "anna"), _other_tenant), 400,
                                      "This link is not valid"),
    "expired": (lambda emu: installation_url("acme", "anna", now=time.time() - STATE_LIFETIME - 1), 400,
                "Linket er udløbet; det gælder i 30 minutter"),
    "expired, English tenant": (lambda emu: installation_url("london", "liz", now=time.time() - STATE_LIFETIME - 1),
                                400, "This link has expired; it is valid for 30 minutes"),
    "token for another agreement": (lambda emu: installation_url("acme", "anna"), 400,
                                    "Adgangen blev givet til e-conomic-aftale 999001, men Acme ApS henter fra aftale 100007"),
    "declined in e-conomic": (lambda emu: installation_url("acme", "anna"), 400,
                              "e-conomic sendte ingen ny adgangs-ID tilbage"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_forged_or_expired_link_or_a_grant_for_another_agreement_stores_nothing(
        env, engine, vault, emulator, acme, callback, case):
    assert run_sync("acme", echo=None).ok  # a good update records the agreement the grant is for
    assert _plain(engine, "acme")["agreement_number"] == emulator.agreement_number == 100007
    emulator.revoke_grant()
    for tenant in ("acme", "london"):
        mark_awaiting_credentials(engine, tenant)
    before = {tenant: (_ciphertext(engine, tenant), _plain(engine, tenant)) for tenant in ("acme", "london")}
    make_link, status, words = CASES[case]
    emulator.consent.agreement = 999001 if case == "token for another agreement" else None
    emulator.consent.approve = case != "declined in e-conomic"

    answer = _follow(make_link(emulator))

    assert [r.status_code for r in answer.history] == [302]
    assert answer.status_code == status and words in answer.text, answer.text
    assert {tenant: (_ciphertext(engine, tenant), _plain(engine, tenant)) for tenant in ("acme", "london")} == before
    assert get_tenant(engine, "acme").awaiting_credentials and get_tenant(engine, "london").awaiting_credentials
    assert _requests(engine) == []
    seen = "\n".join([_every_row(engine), answer.text, callback.out.getvalue()])
    for grant in emulator.grants_issued:
        assert grant not in seen
    assert "nothing stored" in callback.out.getvalue()


def test_a_link_for_a_tenant_removed_since_is_refused(env, engine, emulator, acme, callback):
    url = installation_url("london", "liz")
    remove_tenant(engine, "london")

    answer = _follow(url)

    assert answer.status_code == 400
    assert "Kunden, som linket blev lavet til, findes ikke længere" in answer.text
    assert "The tenant this link was made for no longer exists" in answer.text
    assert _plain(engine, "london") is None and _ciphertext(engine, "london") is None and _requests(engine) == []


def test_the_emulators_installation_page(emulator):
    page = emulator.installation_url
    back = "http://127.0.0.1:9/economic/callback?state=s1"
    ask = lambda **query: requests.get(page, params=query, allow_redirects=False, timeout=10)

    approved = ask(appPublicToken=emulator.app_public_token, redirectUrl=back, locale="da-DK")
    emulator.consent.agreement = 999001
    other = ask(appPublicToken=emulator.app_public_token, redirectUrl=back)
    emulator.consent.approve = False
    declined = ask(appPublicToken=emulator.app_public_token, redirectUrl=back)

    mine, theirs = emulator.grants_issued
    assert approved.status_code == 302 and approved.headers["Location"] == f"{back}&{urlencode({'token': mine})}"
    assert other.headers["Location"] == f"{back}&{urlencode({'token': theirs})}"
    assert declined.status_code == 302 and declined.headers["Location"] == back
    assert ask(appPublicToken="not-ours", redirectUrl=back).status_code == 400
    self_of = lambda grant: requests.get(emulator.url + "/self", timeout=10, headers={
        "X-AppSecretToken": APP_SECRET, "X-AgreementGrantToken": grant})
    assert self_of(mine).json()["agreementNumber"] == emulator.agreement_number == 100007
    assert self_of(theirs).json()["agreementNumber"] == 999001
    assert _works(emulator, theirs) == 403  # another agreement's books are not emulated
    emulator.revoke_grant()
    assert (_works(emulator, mine), _works(emulator, "grant-token-SENTINEL-2"), self_of(mine).status_code) == (401, 401, 401)


def test_the_first_grant_seen_sets_the_agreement(env, engine, vault, emulator, acme, callback):
    """A tenant never updated has no agreement recorded: the new grant's is accepted and recorded."""
    assert "agreement_number" not in _plain(engine) or _plain(engine)["agreement_number"] is None
    emulator.revoke_grant()
    mark_awaiting_credentials(engine, "acme")

    answer = _follow(installation_url("acme", "anna"))

    assert answer.status_code == 200 and not get_tenant(engine, "acme").awaiting_credentials
    assert _plain(engine)["agreement_number"] == emulator.agreement_number
    assert run_sync("acme", echo=None).ok


def test_the_link_needs_configuration_and_a_user_of_the_tenant(env, engine, acme, monkeypatch):
    monkeypatch.setenv("B123_PUBLIC_URL", "http://sync.example.com")
    with pytest.raises(RegrantSetupError, match="B123_PUBLIC_URL .* must be an https:// address"):
        installation_url("acme", "anna")
    monkeypatch.setenv("B123_PUBLIC_URL", "https://sync.example.com")
    with pytest.raises(RegrantSetupError, match="User 'liz' is not a user of tenant 'acme'"):
        installation_url("acme", "liz")
    monkeypatch.delenv("B123_ECONOMIC_APP_PUBLIC_TOKEN")
    with pytest.raises(RegrantSetupError, match="B123_ECONOMIC_APP_PUBLIC_TOKEN"):
        installation_url("acme", "anna")


def test_the_cli_prints_the_link_and_serves_the_callback(env, engine, vault, emulator, acme, monkeypatch, capsys):
    emulator.revoke_grant()
    mark_awaiting_credentials(engine, "acme")
    server = subprocess.Popen([sys.executable, "-m", "b123_pipelines.cli", "regrant", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        banner = server.stdout.readline()
        assert "Answering e-conomic's callbacks at http://127.0.0.1:" in banner, server.stderr.read()
        monkeypatch.setenv("B123_PUBLIC_URL", banner.split(" at ")[1].split(CALLBACK_PATH)[0])
        assert main(["regrant", "url", "acme", "--user", "anna"]) == 0
        url = capsys.readouterr().out.strip()

        answer = _follow(url)
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)

    assert answer.status_code == 200 and "er gemt for Acme ApS" in answer.text
    assert not get_tenant(engine, "acme").awaiting_credentials
    (token,) = emulator.grants_issued
    assert vault.decrypt(_ciphertext(engine))["grant_token"] == token
    assert "GET /economic/callback 200" in err and "stored; update requested" in err
    assert token not in out + err + url
    assert main(["regrant", "url", "nobody", "--user", "anna"]) == 2
    assert "Tenant 'nobody' is not known" in capsys.readouterr().err
