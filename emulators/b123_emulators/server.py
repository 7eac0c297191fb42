"""A threaded HTTP/1.1 server on loopback for emulators of accounting systems' APIs.

A subclass of `EmulatorServer` supplies `route(request) -> Response` (raising `HttpError` for an
error answer) and `error_response(error) -> Response` (the system's error body); the base does the
rest: keep-alive connections served by threads, request recording (`requests`, `clear_requests`),
start/stop/context manager, the transport faults of `self.faults`, and, with `tls=True`, HTTPS with a
self-signed certificate made at start for 127.0.0.1 and localhost, whose PEM is at `ca_file` so a
client can trust it the standard way (`REQUESTS_CA_BUNDLE=emu.ca_file`); nothing here turns a
client's certificate checks off.

    class Hello(EmulatorServer):
        def route(self, request):
            self.gate()  # the faults' refusals (401/403/429/5xx)
            if request.path == "/hello":
                return json_response({"hello": "world"})
            raise HttpError(404, "Not found.")

    with Hello(tls=True) as emu:
        requests.get(emu.url + "/hello", verify=emu.ca_file)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from decimal import Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from json.encoder import encode_basestring
from typing import Any, Iterable, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from b123_emulators.faults import Faults


def dumps(value: Any) -> str:
    """JSON text with Decimals written as exact number literals (json.dumps cannot do that)."""
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode_basestring(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__}")


class HttpError(Exception):
    """An error answer: status, message and hint for the body, headers to send, extra body fields.
    The body's shape is the emulator's (`EmulatorServer.error_response`)."""

    def __init__(self, status: int, message: str, hint: str = "", headers: dict | None = None,
                 **extra: Any):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint
        self.headers, self.extra = headers or {}, extra


class RequestRecord(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    status: int
    started: float = 0.0  # time.monotonic() when it arrived and when its answer was made: requests
    ended: float = 0.0  # served side by side overlap


class Request(NamedTuple):
    method: str
    target: str  # as sent: path and query, e.g. "/accounts?pagesize=5"
    path: str  # the target's path, still percent-encoded
    params: list[tuple[str, str]]  # the query decoded, in order, blank values kept
    headers: Message
    body: bytes


class Response(NamedTuple):
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] | None = None  # sent after the server's own
    length: int | None = None  # required when body is an iterable of pieces
    content_type: str | None = None  # default: the server's content_type


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, dumps(value).encode("utf-8"), headers)


class EmulatorServer:
    """The base of every HTTP emulator. Override `route`, and `error_response` for the system's
    error body; optionally `response_headers` (headers on every answer) and `refusals` (the wording
    of the faults' refusals)."""

    server_version = "Emulator/1.0"
    thread_name = "emulator"
    content_type = "application/json; charset=utf-8"
    # kind -> (message, hint) of the error answers Faults.check() asks for.
    refusals: dict[str, tuple[str, str]] = {
        "revoked": ("The credentials are not valid or access has been revoked.",
                    "Check the credentials."),
        "forbidden": ("The credentials do not give access to this resource.",
                      "Ask an administrator for access."),
        "rate_limited": ("Rate limit exceeded", "Slow down and retry later."),
        "server_error": ("An internal error occurred.", "Try again later."),
    }

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, tls: bool = False,
                 faults: Faults | None = None):
        self.host, self.port, self.tls = host, port, tls
        self.faults = faults if faults is not None else Faults()
        self.url: str | None = None
        self.ca_file: str | None = None  # with tls, the PEM of the server's certificate
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tls_dir: str | None = None
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []

    # ------------------------------------------------------------------ to override
    def route(self, request: Request) -> Response:
        raise HttpError(404, "Not found.")

    def error_response(self, error: HttpError) -> Response:
        """The answer to an error; error.headers are added by the caller."""
        return json_response({"error": {"code": error.status, "message": error.message,
                                        "hint": error.hint, **error.extra}}, error.status)

    def response_headers(self, response: Response) -> dict[str, str]:
        """Headers every answer carries, after Content-Type and Content-Length."""
        return {}

    # ------------------------------------------------------------------ for subclasses
    def gate(self) -> None:
        """Raises the error answer the switched-on faults give this request, if any."""
        refusal = self.faults.check()
        if refusal is not None:
            message, hint = self.refusals[refusal.kind]
            raise HttpError(refusal.status, message, hint, refusal.headers)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        self._server = _Server((self.host, self.port), self)
        if self.tls:
            self._tls_dir = tempfile.mkdtemp(prefix="b123-emulator-tls-")
            self.ca_file, key_file = _self_signed_certificate(self._tls_dir, self.host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_file, key_file)
            self._server.ssl_context = context
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://{self.host}:{self._server.server_address[1]}"
        # A short poll interval keeps stop() quick: tests start and stop many emulators.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()  # or keep-alive clients would still be answered
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None
        if self._tls_dir:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = self.ca_file = None

    def serve_until_interrupted(self) -> None:
        """Serves until Ctrl-C, then stops: the end of an emulator's `python -m` entry point."""
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # ------------------------------------------------------------------ serving
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""  # drained: the connection stays usable
        request = Request(handler.command, handler.path, split.path, params, handler.headers, body)
        started = time.monotonic()
        if self.faults.latency:
            time.sleep(self.faults.latency)
        try:
            response = self.route(request)
        except Exception as exc:  # an emulator bug answers 500 instead of dropping the connection
            error = exc if isinstance(exc, HttpError) else HttpError(
                500, "An internal error occurred.", f"{type(exc).__name__}: {exc}")
            response = self.error_response(error)
            response = response._replace(headers={**(response.headers or {}), **error.headers})
        with self._log_lock:
            self._log.append(RequestRecord(request.method, split.path, dict(params), response.status,
                                           started, time.monotonic()))
        self._send(handler, response)

    def _send(self, handler: BaseHTTPRequestHandler, response: Response) -> None:
        body = response.body
        if isinstance(body, (bytes, bytearray)):
            pieces, length = [body], len(body)
        else:
            pieces, length = body, response.length
        truncate, rate = self.faults.truncate_body, self.faults.drip_bytes_per_second
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type or self.content_type)
        handler.send_header("Content-Length", str(max(length, 1) if truncate else length))
        for name, value in {**self.response_headers(response), **(response.headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        if truncate:  # half of what Content-Length promises, then the connection is closed
            pieces, handler.close_connection = _first_bytes(pieces, length // 2), True
        try:
            if rate:
                _drip(handler.wfile, pieces, rate)
            else:
                for piece in pieces:
                    handler.wfile.write(piece)
        except OSError:
            handler.close_connection = True  # the client went away, or stop() closed it


def _first_bytes(pieces: Iterable[bytes], n: int) -> Iterable[bytes]:
    for piece in pieces:
        if n <= 0:
            return
        yield piece[:n]
        n -= len(piece)


def _drip(out: Any, pieces: Iterable[bytes], rate: float) -> None:
    """Writes one byte at a time, `rate` bytes a second on average."""
    start, sent = time.monotonic(), 0
    for piece in pieces:
        for i in range(len(piece)):
            wait = start + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            out.write(piece[i:i + 1])
            sent += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a requests.Session reuses the connection
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't let them wait
    timeout = 60  # an idle keep-alive connection is dropped after this

    def version_string(self) -> str:
        return f"{self.server.emulator.server_version} {self.sys_version}"

    def _handle(self) -> None:
        self.server.emulator._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence the per-request stderr line


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    handshake_timeout = 10

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer):
        super().__init__(address, _Handler)
        self.emulator = emulator
        self.ssl_context: ssl.SSLContext | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens in the connection's own thread, not in the accepting one.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(self.handshake_timeout)
                    request.do_handshake()
                except OSError:  # e.g. a client that does not trust the certificate
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the client


def _self_signed_certificate(folder: str, host: str) -> tuple[str, str]:
    """A fresh key and a self-signed certificate for 127.0.0.1, localhost and `host`, valid for two
    days; returns the paths of the certificate's PEM and the key's PEM (owner-only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "b123 emulator")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        address = ipaddress.ip_address(host)
        extra = None if str(address) == "127.0.0.1" else x509.IPAddress(address)
    except ValueError:
        extra = None if host == "localhost" else x509.DNSName(host)
    if extra is not None:
        names.append(extra)
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Its own trust anchor: a client trusts it by listing it as a CA (REQUESTS_CA_BUNDLE).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = os.path.join(folder, "emulator-ca.pem"), os.path.join(folder, "key.pem")
    with open(cert_file, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_file, key_file
