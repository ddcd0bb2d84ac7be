"""The TLS material of the hostile-server suite: one trusted CA and the bad certificates.

Everything is made once per process (keys are the slow part) with trustme, and
with the ``cryptography`` package for what trustme does not make (a self-signed
leaf). The trusted CA's certificate is written to a temporary file, removed at
exit, so the client can use smtpbee's own ``default_ssl_context(cafile=...)``:
the context every case tests is the one smtpbee builds (TLS 1.2 or later, host
names checked), only with this CA as its root.

Server certificates, by ``Cert`` name:

* ``good``: issued by the trusted CA for ``mx.hostile.test``, ``localhost`` and 127.0.0.1;
* ``self-signed``: a leaf that signs itself;
* ``unknown-root``: issued by another CA the client does not trust;
* ``wrong-name``: issued by the trusted CA, for ``other.hostile.test`` only;
* ``expired``: issued by the trusted CA, notAfter a year ago;
* ``tls1.1``: the good certificate, on a server that speaks at most TLS 1.1.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import os
import shutil
import ssl
import tempfile
import warnings
from collections.abc import Callable
from typing import Literal

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SERVER_NAME", "Cert", "Trust", "client_context", "server_context"]

SERVER_NAME = "mx.hostile.test"
"""The name the client checks the certificate against (and sends as SNI)."""

Cert = Literal["good", "self-signed", "unknown-root", "wrong-name", "expired", "tls1.1"]
Trust = Literal["ca", "unverified"]


@functools.cache
def _trusted_ca() -> trustme.CA:
    return trustme.CA(organization_name="smtpbee hostile suite")


@functools.cache
def _cafile() -> str:
    handle, path = tempfile.mkstemp(prefix="smtpbee-hostile-ca-", suffix=".pem")
    os.close(handle)
    _trusted_ca().cert_pem.write_to_path(path)
    atexit.register(os.unlink, path)
    return path


@functools.cache
def _pem_pair(cert: Cert) -> tuple[bytes, bytes]:
    """The certificate chain and private key (PEM) a server presents."""
    now = datetime.datetime.now(datetime.UTC)
    if cert == "self-signed":
        return _self_signed(now)
    if cert == "unknown-root":
        leaf = trustme.CA(organization_name="not trusted").issue_cert(SERVER_NAME, "localhost")
    elif cert == "wrong-name":
        leaf = _trusted_ca().issue_cert("other.hostile.test")
    elif cert == "expired":
        leaf = _trusted_ca().issue_cert(
            SERVER_NAME,
            "localhost",
            not_before=now - datetime.timedelta(days=730),
            not_after=now - datetime.timedelta(days=365),
        )
    else:
        leaf = _trusted_ca().issue_cert(SERVER_NAME, "localhost", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return chain, leaf.private_key_pem.bytes()


def _self_signed(now: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@functools.cache
def _pem_files(cert: Cert) -> tuple[str, str]:
    chain, key = _pem_pair(cert)
    directory = tempfile.mkdtemp(prefix="smtpbee-hostile-")
    paths = (os.path.join(directory, "chain.pem"), os.path.join(directory, "key.pem"))
    for path, data in zip(paths, (chain, key), strict=True):
        with open(path, "wb") as handle:
            handle.write(data)
    atexit.register(shutil.rmtree, directory, True)
    return paths


def server_context(cert: Cert, sni: Callable[[str | None], None] | None = None) -> ssl.SSLContext:
    """A new server-side context presenting ``cert``; ``sni`` is told each name asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert == "tls1.1":
        # What an old server speaks: TLS 1.0 and 1.1 only (with the ciphers they need).
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            # Deprecated is the point: this server must speak only what clients refuse.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    chain, key = _pem_files("good" if cert == "tls1.1" else cert)
    context.load_cert_chain(chain, key)
    if sni is not None:
        record = sni

        def callback(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            record(name)

        context.sni_callback = callback
    return context


def client_context(trust: Trust = "ca") -> ssl.SSLContext:
    """smtpbee's default context, the suite's CA its only root (or one that checks nothing)."""
    from smtpbee.transports.sync import default_ssl_context

    context = default_ssl_context(cafile=_cafile())
    if trust == "unverified":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def permissive_client_context() -> ssl.SSLContext:
    """A context that would speak TLS 1.0 (to show the tls1.1 server does handshake)."""
    context = ssl.create_default_context(cafile=_cafile())
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    return context
