"""e-conomic's "Fetch new token automatically": a new access ID (agreement grant) in one click.

When the user who connected e-conomic loses access to the books, e-conomic revokes the grant and
updates fail with "a new access ID is needed" (the tenant waits for credentials). The manual's fix:

1. budget123's button opens `installation_url(tenant, user)`: e-conomic's installation page
   (`requestaccess.aspx?appPublicToken=...&redirectUrl=...&locale=da-DK`), whose `redirectUrl` is
   our callback carrying a signed, expiring `state` that names the tenant and the user.
2. The user logs in to e-conomic and approves; e-conomic sends the browser back to
   `redirectUrl&token=<new grant>`.
3. The callback (`CallbackServer`, `b123 regrant serve`) calls `accept_grant(state, token)`: the
   state must be ours (HMAC-SHA256 with a key derived from B123_SECRET_KEY, never the key itself),
   not expired (STATE_LIFETIME) and made for the credentials stored now (so it is used once); the
   new grant must work and belong to the tenant's agreement (e-conomic's `/self`, `agreementNumber`,
   against `agreement_number` in the tenant's connection settings, recorded when first seen). Then
   the grant is stored encrypted, the tenant resumes, and an update is requested as the user's
   "Update accounting figures" button does: a `sync_requests` row, which the `refresh_requests`
   sensor serves (the daemon, `make up`; without one, `b123 sync TENANT`). Anything refused stores
   nothing.

The token is a secret: it is never logged, printed or shown, also not in a refusal. Configuration:
B123_ECONOMIC_APP_PUBLIC_TOKEN (the app's public token) and B123_PUBLIC_URL (where e-conomic sends
the browser back to: this server, behind the public address). No Dagster here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Engine

from b123_pipelines import settings
from b123_pipelines import tables as t
from b123_pipelines.connectors.economic import INSTALLATION_URL, EconomicConnector
from b123_pipelines.connectors.kit.transport import https_or_loopback
from b123_pipelines.db import engine_for
from b123_pipelines.errors import CredentialsRejected, AccessDenied, SyncError
from b123_pipelines.tenants import Tenant, UnknownTenant, get_tenant, request_refresh, store_credentials
from b123_pipelines.vault import Vault, VaultError

SYSTEM = EconomicConnector.system
CALLBACK_PATH = "/economic/callback"
STATE_LIFETIME = 30 * 60  # seconds a link from the button is good for
STATE_VERSION = "v1"
KEY_LABEL = b"b123-pipelines e-conomic regrant state v1"  # HKDF info: this key is for states only
LOCALES = {"da": "da-DK", "en": "en-GB"}
# The user waits in the browser while /self is asked: fewer retries than an update's.
CHECK_HTTP = {"retries": 2, "timeout": 20.0, "deadline": 30.0}


class RegrantSetupError(ValueError):
    """The installation URL cannot be made: configuration or input is missing or wrong."""


# ---------------------------------------------------------------------------------------- outcomes
RESTART = {
    "da": "Start forfra i budget123: Globale indstillinger >> Integrationsindstillinger >> Indhent automatisk ny token.",
    "en": "Start again in budget123: Global settings >> Integration settings >> Fetch new token automatically.",
}
NOTHING = {"da": "Intet er gemt.", "en": "Nothing was stored."}
REFUSALS: dict[str, dict[str, str]] = {
    "forged": {
        "da": "Linket er ikke gyldigt: det er ikke lavet af budget123, eller det er blevet ændret.",
        "en": "This link is not valid: budget123 did not make it, or it was altered."},
    "expired": {
        "da": "Linket er udløbet; det gælder i {minutes} minutter.",
        "en": "This link has expired; it is valid for {minutes} minutes."},
    "unknown_tenant": {
        "da": "Kunden, som linket blev lavet til, findes ikke længere i budget123.",
        "en": "The tenant this link was made for no longer exists in budget123."},
    "not_economic": {
        "da": "{name} henter ikke regnskabstal fra e-conomic.",
        "en": "{name} does not fetch its accounting figures from e-conomic."},
    "used": {
        "da": "Linket er allerede brugt, eller adgangen til e-conomic er ændret, siden det blev lavet.",
        "en": "This link was used already, or the access to e-conomic was changed since it was made."},
    "no_token": {
        "da": "e-conomic sendte ingen ny adgangs-ID tilbage; blev adgangen godkendt i e-conomic?",
        "en": "e-conomic sent no new access ID back; was access approved in e-conomic?"},
    "bad_token": {
        "da": "e-conomic sendte en adgangs-ID, som ikke kan bruges.",
        "en": "e-conomic sent an access ID that cannot be used."},
    "rejected": {
        "da": "e-conomic godkender ikke den nye adgangs-ID.",
        "en": "e-conomic does not accept the new access ID."},
    "unavailable": {
        "da": "e-conomic svarede ikke, da den nye adgangs-ID skulle kontrolleres. Vent et par minutter.",
        "en": "e-conomic did not answer when the new access ID was to be checked. Wait a few minutes."},
    "other_agreement": {
        "da": "Adgangen blev givet til e-conomic-aftale {got}, men {name} henter fra aftale {expected}. "
              "Log ind i e-conomic på aftale {expected}.",
        "en": "Access was granted to e-conomic agreement {got}, but {name} fetches from agreement "
              "{expected}. Log in to e-conomic with agreement {expected}."},
    "internal": {
        "da": "budget123 kunne ikke gemme den nye adgangs-ID på grund af en fejl hos budget123; kontakt "
              "budget123's support.",
        "en": "budget123 could not store the new access ID because of an error at budget123; contact "
              "budget123's support."},
}
# Refusals that starting again from the button can mend (the others: the data team, or nothing).
RESTARTABLE = {"forged", "expired", "used", "no_token", "bad_token", "rejected", "unavailable", "other_agreement"}
STATUS = {"unavailable": 503, "internal": 500}  # else 400


class GrantRefused(Exception):
    """The callback was refused and nothing was stored. `tenant` is None when the state is not ours."""

    def __init__(self, reason: str, tenant: Tenant | None = None, **details: Any):
        self.reason, self.tenant, self.details = reason, tenant, details
        super().__init__(f"{tenant.tenant_id if tenant else 'unknown tenant'}: {self.text('en')}")

    def text(self, locale: str) -> str:
        locale = locale if locale in RESTART else "da"
        words = {"minutes": STATE_LIFETIME // 60, "name": self.tenant.name if self.tenant else "", **self.details}
        parts = [REFUSALS[self.reason][locale].format(**words), NOTHING[locale]]
        if self.reason in RESTARTABLE:
            parts.append(RESTART[locale])
        return " ".join(parts)

    @property
    def status(self) -> int:
        return STATUS.get(self.reason, 400)


@dataclass(frozen=True)
class Accepted:
    tenant: Tenant
    agreement_number: int
    request_id: int | None  # the update requested; None when this grant was stored already
    already: bool = False

    def text(self, locale: str) -> str:
        name = self.tenant.name
        if self.already:
            return {"da": f"Den nye adgangs-ID fra e-conomic er allerede gemt for {name}; der skal ikke gøres mere.",
                    "en": f"The new access ID from e-conomic is already stored for {name}; nothing more needs "
                          "doing."}[locale if locale == "en" else "da"]
        return {"da": f"Den nye adgangs-ID fra e-conomic er gemt for {name}. budget123 henter nu regnskabstallene; "
                      "det kan tage et par minutter.",
                "en": f"The new access ID from e-conomic is stored for {name}. budget123 is now fetching the "
                      "accounting figures; this can take a few minutes."}[locale if locale == "en" else "da"]


# ---------------------------------------------------------------------------------------- state
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def state_key(secret_key: str | None = None) -> bytes:
    """The key that signs states: derived from B123_SECRET_KEY by HKDF-SHA256 with a label of its
    own, so a state's signature says nothing about the key that encrypts credentials."""
    raw = secret_key or os.environ.get("B123_SECRET_KEY")
    if not raw and settings.secret_key_file().exists():
        raw = settings.secret_key_file().read_text().strip()
    if not raw:
        raise RegrantSetupError("No secret key: set B123_SECRET_KEY (it signs the re-grant links as well).")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_LABEL).derive(raw.encode())


def _fingerprint(ciphertext: str | None) -> str:
    """Which stored credentials a state was made for: a link is good until they change (used once)."""
    return hashlib.sha256((ciphertext or "").encode()).hexdigest()[:16]


def make_state(tenant_id: str, user_id: str, credentials: str | None, key: bytes, now: float) -> str:
    claims = {"t": tenant_id, "u": user_id, "x": int(now) + STATE_LIFETIME, "c": _fingerprint(credentials),
              "n": _b64(secrets.token_bytes(12))}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signed = f"{STATE_VERSION}.{body}"
    return f"{signed}.{_b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


def read_state(state: str, key: bytes) -> dict:
    """The claims of a state we signed, or GrantRefused('forged'). Expiry is the caller's to check."""
    try:
        version, body, signature = (state or "").split(".")
        expected = hmac.new(key, f"{version}.{body}".encode(), hashlib.sha256).digest()
        if version != STATE_VERSION or not hmac.compare_digest(_unb64(signature), expected):
            raise ValueError("signature")
        claims = json.loads(_unb64(body))
        if not (isinstance(claims.get("t"), str) and isinstance(claims.get("u"), str)
                and type(claims.get("x")) is int and isinstance(claims.get("c"), str)):
            raise ValueError("claims")
    except (ValueError, TypeError, AttributeError):  # binascii.Error and JSONDecodeError are ValueErrors
        raise GrantRefused("forged") from None
    return claims


# ---------------------------------------------------------------------------------------- the URL
def installation_url(tenant_id: str, user_id: str, engine: Engine | None = None, *,
                     app_public_token: str | None = None, public_url: str | None = None,
                     secret_key: str | None = None, now: float | None = None) -> str:
    """The address budget123's "Fetch new token automatically" opens for `user_id` of `tenant_id`:
    e-conomic's installation page, which sends the browser back to our callback with a new grant."""
    engine = engine or engine_for(settings.database_url())
    tenant = get_tenant(engine, tenant_id)
    if tenant.system != SYSTEM:
        raise RegrantSetupError(f"Tenant '{tenant_id}' fetches from {tenant.system}, not e-conomic: "
                                "a new access ID is an e-conomic matter.")
    app_public_token = app_public_token or os.environ.get("B123_ECONOMIC_APP_PUBLIC_TOKEN")
    if not app_public_token:
        raise RegrantSetupError("Set B123_ECONOMIC_APP_PUBLIC_TOKEN to the budget123 app's public token in "
                                "e-conomic (the developer agreement's app settings).")
    public_url = public_url or os.environ.get("B123_PUBLIC_URL")
    if not public_url:
        raise RegrantSetupError("Set B123_PUBLIC_URL to the address where e-conomic sends the browser back "
                                "to 'b123 regrant serve', e.g. https://sync.budget123.dk.")
    try:
        public_url = https_or_loopback(public_url)
    except ValueError as exc:
        raise RegrantSetupError(f"B123_PUBLIC_URL {public_url!r} {exc}.") from None
    with engine.connect() as conn:
        users_tenant = conn.execute(sa.select(t.users.c.tenant_id).where(t.users.c.user_id == user_id)).scalar()
        plain = conn.execute(sa.select(t.connection_settings.c.settings)
                             .where(t.connection_settings.c.tenant_id == tenant_id)).scalar() or {}
        cipher = conn.execute(sa.select(t.credentials.c.ciphertext)
                              .where(t.credentials.c.tenant_id == tenant_id)).scalar()
    if users_tenant != tenant_id:
        raise RegrantSetupError(f"User '{user_id}' is not a user of tenant '{tenant_id}'.")
    state = make_state(tenant_id, user_id, cipher, state_key(secret_key), time.time() if now is None else now)
    callback = f"{public_url}{CALLBACK_PATH}?{urlencode({'state': state})}"
    page = plain.get("installation_url") or INSTALLATION_URL
    return f"{page}?" + urlencode({"appPublicToken": app_public_token, "redirectUrl": callback,
                                   "locale": LOCALES.get(tenant.locale, "da-DK")})


# ---------------------------------------------------------------------------------------- the callback
def _stored(engine: Engine, tenant_id: str) -> tuple[dict, str | None]:
    with engine.connect() as conn:
        plain = conn.execute(sa.select(t.connection_settings.c.settings)
                             .where(t.connection_settings.c.tenant_id == tenant_id)).scalar()
        cipher = conn.execute(sa.select(t.credentials.c.ciphertext)
                              .where(t.credentials.c.tenant_id == tenant_id)).scalar()
    return dict(plain or {}), cipher


def accept_grant(engine: Engine, vault: Vault, state: str, token: str | None, *, secret_key: str | None = None,
                 now: float | None = None, http: dict | None = None) -> Accepted:
    """Stores the new grant `token` that e-conomic sent back with our `state`, resumes the tenant and
    requests an update; or raises GrantRefused, having stored nothing."""
    claims = read_state(state, state_key(secret_key))
    try:
        tenant = get_tenant(engine, claims["t"])
    except UnknownTenant:
        raise GrantRefused("unknown_tenant") from None
    if (time.time() if now is None else now) > claims["x"]:
        raise GrantRefused("expired", tenant)
    if tenant.system != SYSTEM:
        raise GrantRefused("not_economic", tenant)
    if not token or not token.strip():
        raise GrantRefused("no_token", tenant)
    plain, cipher = _stored(engine, tenant.tenant_id)
    stored = vault.decrypt(cipher) if cipher else {}
    if _fingerprint(cipher) != claims["c"]:
        if stored.get("grant_token") == token:  # the browser came back twice (a reload)
            return Accepted(tenant, plain.get("agreement_number"), None, already=True)
        raise GrantRefused("used", tenant)
    connection = {**plain, **stored, "grant_token": token}
    try:
        new = EconomicConnector.parse_connection(tenant.tenant_id, connection)
    except SyncError:
        raise GrantRefused("bad_token", tenant) from None
    agreement = agreement_of(EconomicConnector(tenant.tenant_id, new, {**(http or http_tuning()), **CHECK_HTTP}),
                             tenant)
    expected = plain.get("agreement_number")
    if expected is not None and expected != agreement:
        raise GrantRefused("other_agreement", tenant, got=agreement, expected=expected)
    if _stored(engine, tenant.tenant_id)[1] != cipher:  # changed while e-conomic was asked
        raise GrantRefused("used", tenant)
    store_credentials(engine, vault, tenant.tenant_id, {**connection, "agreement_number": agreement})
    return Accepted(tenant, agreement, request_refresh(engine, tenant.tenant_id, claims["u"]))


def agreement_of(connector: EconomicConnector, tenant: Tenant) -> int:
    """The agreement the connector's grant is for (e-conomic's /self), or GrantRefused."""
    try:
        number = connector.agreement_number()
    except (CredentialsRejected, AccessDenied):
        raise GrantRefused("rejected", tenant) from None
    except SyncError:
        raise GrantRefused("unavailable", tenant) from None
    finally:
        connector.close()
    if number is None:
        raise GrantRefused("unavailable", tenant)
    return number


def http_tuning() -> dict:
    """The transport's tuning from the environment, as the updates use it (tests shorten it)."""
    return {"backoff": float(os.environ.get("B123_HTTP_BACKOFF", "1.0")),
            "timeout": float(os.environ.get("B123_HTTP_TIMEOUT", "60"))}


# ---------------------------------------------------------------------------------------- the endpoint
def page(text: str, locale: str) -> bytes:
    return (f'<!doctype html>\n<html lang="{locale}"><head><meta charset="utf-8"><title>budget123</title></head>'
            f"<body><h1>budget123 · e-conomic</h1><p>{html.escape(text)}</p></body></html>\n").encode("utf-8")


def answer(engine: Engine, vault: Vault, query: str, log: Callable[[str], None], **accept: Any) -> tuple[int, bytes]:
    """The callback's answer to the query string e-conomic sent back: status and page, in the
    tenant's language (Danish and English when the tenant is not known)."""
    params = parse_qs(query, keep_blank_values=True)
    state, token = (params.get(name, [""])[-1] for name in ("state", "token"))
    try:
        accepted = accept_grant(engine, vault, state, token, **accept)
    except GrantRefused as refused:
        tenant = refused.tenant
        log(f"e-conomic callback for tenant '{tenant.tenant_id if tenant else '?'}': refused ({refused.reason}); "
            "nothing stored")
        if tenant is None:
            return refused.status, page(f"{refused.text('da')}\n\n{refused.text('en')}", "da")
        return refused.status, page(refused.text(tenant.locale), tenant.locale)
    except (VaultError, RegrantSetupError, sa.exc.SQLAlchemyError) as exc:
        # A database error's text quotes its statement's parameters: the type only.
        detail = type(exc).__name__ if isinstance(exc, sa.exc.SQLAlchemyError) else f"{type(exc).__name__}: {exc}"
        log(f"e-conomic callback: could not store the new grant ({detail})")
        refused = GrantRefused("internal")
        return refused.status, page(f"{refused.text('da')}\n\n{refused.text('en')}", "da")
    tenant = accepted.tenant
    log(f"e-conomic callback for tenant '{tenant.tenant_id}': new grant for agreement {accepted.agreement_number} "
        + ("was stored already" if accepted.already else f"stored; update requested ({accepted.request_id})"))
    return 200, page(accepted.text(tenant.locale), tenant.locale)


@dataclass
class CallbackServer:
    """`GET /economic/callback?state=...&token=...` on a stdlib threaded HTTP server. Logs carry the
    path, never the query (the token). Use as a context manager, or `serve_forever()`."""

    engine: Engine
    vault: Vault
    host: str = "127.0.0.1"
    port: int = 0
    out: TextIO = field(default_factory=lambda: sys.stderr)
    accept: dict = field(default_factory=dict)  # passed on to accept_grant (tests: now, http)
    url: str | None = None

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    def log(self, line: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", file=self.out, flush=True)

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def __enter__(self) -> "CallbackServer":
        self._thread = threading.Thread(target=self.serve_forever, name="regrant-callback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _handler(server: CallbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "b123-regrant/1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != CALLBACK_PATH:
                return self._send(404, page("Ikke fundet. / Not found.", "da"))
            status, body = answer(server.engine, server.vault, parts.query, server.log, **server.accept)
            self._send(status, body)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            # The address holds the token: no cache keeps it, no next site sees it as a referrer.
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # The default error page quotes the request line, which would show the token.
            self.close_connection = True
            self._send(code, page(f"HTTP {code}", "da"))

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            # Before a request line is parsed there is no command or path yet.
            server.log(f"{self.client_address[0]} {self.command or '-'} "
                       f"{urlsplit(getattr(self, 'path', '') or '').path or '-'} {code}")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the stdlib's lines quote the request line (the token); log_request says enough

    return Handler
