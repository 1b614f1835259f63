"""A real HTTP proxy whose outgoing connections leave from 127.0.0.2 (loaded from tests/conftest.py).

`egress_proxy` runs Debian's `tinyproxy` (`apt-get install tinyproxy`; `.ci/run` installs it) on a
free port of 127.0.0.1 with `Bind 127.0.0.2` and basic auth: it stands for a PaaS's static-IP proxy,
and the stand-in, listening on 127.0.0.1, sees every request it forwards come from 127.0.0.2 (all
of 127/8 is this machine on Linux). Without tinyproxy the tests using it are skipped, unless
TICKER_TEST_REQUIRE_PROXY=1 (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BOUND = "127.0.0.2"
USER, PASSWORD = "ticker", "proxy-pass-7f3a"
START_SECONDS = 20.0


@dataclass
class EgressProxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def egress_proxy(tmp_path: Path) -> Iterator[EgressProxy]:
    binary = shutil.which("tinyproxy") or next((p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy")
                                                if os.path.exists(p)), None)
    if binary is None:
        message = "tinyproxy is not installed (apt-get install tinyproxy)"
        if os.environ.get("TICKER_TEST_REQUIRE_PROXY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    proxy = EgressProxy(_free_port(), tmp_path / "tinyproxy.log")
    config = tmp_path / "tinyproxy.conf"
    config.write_text("\n".join([
        f"Port {proxy.port}", "Listen 127.0.0.1", f"Bind {BOUND}", "Timeout 30", "MaxClients 100",
        "Allow 127.0.0.1", f"BasicAuth {USER} {PASSWORD}", f"LogFile \"{proxy.log}\"", "LogLevel Connect",
        "DisableViaHeader Yes", "",
    ]))
    with open(tmp_path / "tinyproxy.out", "wb") as out:
        proc = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(proxy.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tinyproxy did not start: {(tmp_path / 'tinyproxy.out').read_text()[-2000:]}")
            time.sleep(0.05)
        yield proxy
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tls_pair(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for a self-signed certificate of 127.0.0.1, so a stand-in can
    be served over https as Kite is (and calls to it through a proxy go as CONNECT tunnels)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "sim-cert.pem", folder / "sim-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client
