"""Catch the OAuth redirect on a loopback https callback (``https://127.0.0.1:8182``).

Schwab only redirects to https callbacks, so this serves one with a throwaway self-signed
certificate (the browser warns once: proceed). It needs the ``cryptography`` package to make
the certificate; without it, or when the port is taken, the helper asks for the pasted URL.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import logging
import queue
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def is_loopback_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and parts.hostname in LOOPBACK


def self_signed(directory: Path, host: str) -> tuple[Path, Path] | None:
    """A certificate and key for ``host`` valid for a day, or None without ``cryptography``."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tickpipe oauth callback")])
    now = dt.datetime.now(dt.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


ACCEPTED = b"tickpipe received the Schwab login; you can close this tab.\n"
REFUSED = b"Schwab did not grant the login; the terminal says why. You can close this tab.\n"
FOREIGN = (
    b"This answer belongs to another Schwab login attempt (an older link, or another run of "
    b"the helper), so tickpipe ignored it. Go back to the terminal and open the link it "
    b"shows again, or run the helper again.\n"
)


class CallbackCatcher:
    """Serves the callback URL and hands over the full URL of the first redirect that
    answers this login: one with ``state`` (when given) and a ``code`` or an ``error``.
    A redirect with another state (an older consent tab, another run of the helper) is
    answered as such in the browser, ``say()`` tells the terminal, and the wait goes on;
    anything else (the browser's favicon request) is a 404."""

    def __init__(
        self,
        callback_url: str,
        found: queue.Queue[str],
        *,
        state: str | None = None,
        say: Callable[[], None] = lambda: None,
    ) -> None:
        parts = urlsplit(callback_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 443
        self._found = found
        self._state = state
        self._say = say
        self._server: http.server.HTTPServer | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tickpipe-oauth-")

    def start(self) -> bool:
        """Listen; False when it cannot (no ``cryptography``, port taken)."""
        pair = self_signed(Path(self._tmp.name), self.host)
        if pair is None:
            log.info("the cryptography package is missing: paste the redirected URL instead")
            return False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*pair)
        found, origin = self._found, f"https://{self.host}:{self.port}"
        expected, say = self._state, self._say

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if "code" not in query and "error" not in query:
                    self._answer(404, b"Not the Schwab login redirect.\n")
                elif expected is not None and query.get("state", [""])[0] != expected:
                    self._answer(400, FOREIGN)
                    say()
                else:
                    self._answer(200, REFUSED if "error" in query else ACCEPTED)
                    found.put(origin + self.path)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # the URL carries the code: keep it out of the terminal

        class Server(http.server.HTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                return  # a browser refusing the self-signed certificate the first time

        try:
            server = Server((self.host, self.port), Handler)
        except OSError as exc:
            log.info(
                "cannot listen on %s:%d (%s): paste the URL instead", self.host, self.port, exc
            )
            return False
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="oauth-callback", daemon=True).start()
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._tmp.cleanup()
