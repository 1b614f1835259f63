"""A managed-Redis look-alike: Debian's redis-server listening only on TLS, with a self-signed
certificate made here, a password for the default user and an ACL user of its own.

Clients reach it as a PaaS add-on is reached: `rediss://user:pw@127.0.0.1:port/2?ssl_cert_reqs=none`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, USER_PASSWORD, DEFAULT_PASSWORD = "ticker-app", "user-secret", "default-secret"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "redis.crt", folder / "redis.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TlsRedis:
    port: int
    cert: Path

    def url(self, db: int = 2, user: str = USER, password: str = USER_PASSWORD, query: str = "ssl_cert_reqs=none"
            ) -> str:
        userinfo = f"{user}:{password}@" if user else f":{password}@"
        return f"rediss://{userinfo}127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")


def _handshakes(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(b"PING\r\n")
        return tls.recv(64).startswith(b"-NOAUTH")
    return False


@contextlib.contextmanager
def tls_redis(folder: Path, timeout: float = 30.0) -> Iterator[TlsRedis]:
    """Start it (no plain-text port at all) and stop it when done."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(folder)
    port = _free_port()
    conf = folder / "redis.conf"  # a file: the ACL line is several words, which flags cannot carry
    conf.write_text("\n".join([
        "port 0", f"tls-port {port}", "bind 127.0.0.1", f"tls-cert-file {cert}", f"tls-key-file {key}",
        f"tls-ca-cert-file {cert}", "tls-auth-clients no", f"requirepass {DEFAULT_PASSWORD}",
        f"user {USER} on >{USER_PASSWORD} ~* &* +@all", 'save ""', "appendonly no", f"dir {folder}",
        f"logfile {folder / 'redis.log'}", ""]))
    proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _handshakes(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (folder / "redis.log").read_text() if (folder / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server with TLS did not start on port {port}: {log[-2000:]}")
            time.sleep(0.01)
        yield TlsRedis(port, cert)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
