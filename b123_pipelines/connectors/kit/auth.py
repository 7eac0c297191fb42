"""How a request is signed, one `requests.auth.AuthBase` per scheme.

Secrets stay pydantic `SecretStr` until the moment a request is signed, so they cannot reach a log
or an error by being printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from typing import Protocol
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr
from requests.auth import AuthBase, HTTPBasicAuth


class HeaderAuth(AuthBase):
    """Fixed secret headers on every request (e-conomic's app secret and agreement grant tokens)."""

    def __init__(self, headers: dict[str, SecretStr]):
        self._headers = headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        for name, value in self._headers.items():
            request.headers[name] = value.get_secret_value()
        return request


class BasicAuth(HTTPBasicAuth):
    """HTTP Basic (Navision Online's web service access key, Uniconta's user)."""

    def __init__(self, username: str, password: SecretStr):
        super().__init__(username, password.get_secret_value())


class TokenStore(Protocol):
    """Where a tenant's OAuth token cache is kept between runs (encrypted at rest)."""

    def load(self) -> str | None: ...

    def save(self, serialized: str) -> None: ...


class MemoryTokenStore:
    def __init__(self) -> None:
        self.value: str | None = None

    def load(self) -> str | None:
        return self.value

    def save(self, serialized: str) -> None:
        self.value = serialized


class TokenRefused(Exception):
    """The identity provider refused to issue a token; `error` and `description` say why."""

    def __init__(self, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.error, self.description = error, description


def _discovery_refused(exc: ValueError) -> TokenRefused:
    """MSAL's ValueError for an authority it could not read, as the provider's own error where it
    gave one (Entra: `{"error": "invalid_tenant", "error_description": "AADSTS90002: ..."}`)."""
    text = str(exc.__context__ or exc)
    _, _, body = text.partition("Error: ")
    try:
        answer = json.loads(body)
        return TokenRefused(str(answer["error"]), str(answer.get("error_description", "")))
    except (ValueError, KeyError, TypeError):
        return TokenRefused("authority_unreadable", text[:500])


class OAuth2ClientCredentials(AuthBase):
    """OAuth 2.0 client credentials through MSAL, Microsoft's own client for Entra ID.

    MSAL keeps the token in its cache and asks for a new one shortly before it expires; the cache
    is loaded from and saved to `store`, so a tenant's runs share one token. A 401 mid-sync (a
    token revoked or expired early) renews the token once and sends the request again.
    """

    def __init__(self, authority: str, client_id: str, client_secret: SecretStr, scope: str,
                 store: TokenStore | None = None, timeout: float | None = 60.0):
        import msal

        self._store = store or MemoryTokenStore()
        self._cache = msal.SerializableTokenCache()
        saved = self._store.load()
        if saved:
            self._cache.deserialize(saved)
        self._scope = [scope]
        self._lock = threading.Lock()
        self._authority, self._client_id, self._secret = authority, client_id, client_secret
        self._timeout = timeout  # MSAL's own default is none: a silent identity provider would hang a run
        self._app = None  # made at the first token: MSAL reads the authority's configuration then

    def _application(self):
        """MSAL's app, made once. Making it fetches the authority's OpenID configuration, so it is
        done when a request is signed: a network failure is retried like the request's own, and an
        authority that does not know the tenant is a TokenRefused the connector can explain."""
        if self._app is None:
            import msal
            from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

            try:
                self._app = msal.ConfidentialClientApplication(
                    self._client_id, client_credential=self._secret.get_secret_value(),
                    authority=self._authority, token_cache=self._cache, timeout=self._timeout,
                    # Instance discovery asks login.microsoftonline.com about the authority: only for
                    # Microsoft's own hosts, never for a test identity provider.
                    instance_discovery=urlsplit(self._authority).hostname in WELL_KNOWN_AUTHORITY_HOSTS,
                )
            except ValueError as exc:  # MSAL: the authority answered its discovery with a 4xx
                raise _discovery_refused(exc) from None
        return self._app

    def token(self, refused: str | None = None) -> str:
        """The token to send; `refused`: one the API refused, to be replaced. Requests side by side
        refused with the same token renew it once: the first replaces it, the others get the new one."""
        with self._lock:
            result = self._application().acquire_token_for_client(scopes=self._scope)
            if refused is not None and result.get("access_token") == refused:
                # A list first: search() is a generator over the dict that remove_at() changes.
                for access_token in list(self._cache.search(self._cache.CredentialType.ACCESS_TOKEN)):
                    self._cache.remove_at(access_token)
                result = self._application().acquire_token_for_client(scopes=self._scope)
            if self._cache.has_state_changed:
                self._store.save(self._cache.serialize())
                self._cache.has_state_changed = False
        if "access_token" not in result:
            raise TokenRefused(result.get("error", "unknown_error"), result.get("error_description", ""))
        return result["access_token"]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._renew_once_on_401)
        return request

    def _renew_once_on_401(self, response: requests.Response, **kwargs) -> requests.Response:
        if response.status_code != 401 or getattr(response.request, "_b123_renewed", False):
            return response
        response.content  # release the connection  # noqa: B018
        response.close()
        again = response.request.copy()
        refused = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        again.headers["Authorization"] = f"Bearer {self.token(refused=refused)}"
        again._b123_renewed = True  # type: ignore[attr-defined]
        retried = response.connection.send(again, **kwargs)
        retried.history.append(response)
        retried.request = again
        return retried


SIGNATURE_HEADERS = ("X-B123-Timestamp", "X-B123-Nonce", "X-B123-Signature")


def signature(key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """HMAC-SHA256 over what identifies one request; the agent computes the same and compares."""
    message = "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])
    return base64.b64encode(hmac.new(key, message.encode(), hashlib.sha256).digest()).decode()


class SignedRequestAuth(AuthBase):
    """Requests signed with a shared key, a timestamp and a one-time nonce (the on-premise agent).

    The agent refuses a timestamp outside its window (why its clock must be right) and a nonce it
    has seen (a replay). The key itself never travels.
    """

    def __init__(self, shared_key: SecretStr):
        self._key = shared_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(request.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        request.headers.update(zip(SIGNATURE_HEADERS, (
            timestamp, nonce,
            signature(self._key.get_secret_value().encode(), request.method or "GET", path, timestamp, nonce, body),
        )))
        return request
