"""A strict git server over HTTPS on 127.0.0.1, for fetching without a git executable: dulwich's own smart-HTTP
WSGI application (the protocol Azure Repos and GitHub speak) behind TLS with a throw-away CA, and a wrapper
that demands the job token as `Authorization: bearer` (when given one), records every request, and can
redirect to another host. No tests here."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA, and a certificate it signed for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orchestrator test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class GitHttpsServer:
    """Serves the bare repositories given as {"/org/name.git": path} over https://127.0.0.1:<port>."""

    def __init__(self, repositories: dict[str, Path], certs: tuple[Path, Path, Path], *, token: str | None = None) -> None:
        from dulwich.repo import Repo
        from dulwich.server import DictBackend
        from dulwich.web import make_wsgi_chain

        self.token = token
        self.redirect_to: str | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        git_app = make_wsgi_chain(DictBackend({name: Repo(str(path)) for name, path in repositories.items()}))

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            auth = environ.get("HTTP_AUTHORIZATION")
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], auth))
            if self.redirect_to:
                start_response("302 Found", [("Location", self.redirect_to + environ["PATH_INFO"])])
                return [b""]
            if self.token is not None and auth != f"bearer {self.token}":
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="test"')])
                return [b"no"]
            return git_app(environ, start_response)  # type: ignore[no-any-return]

        self._httpd: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certs[1]), str(certs[2]))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="git-https-server", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> GitHttpsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="session")
def test_certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_ca_and_cert(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def no_git(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PATH holds only this Python's folder: no git executable can be found, as on the Functions image."""
    import shutil
    import sys

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert shutil.which("git") is None
    yield
