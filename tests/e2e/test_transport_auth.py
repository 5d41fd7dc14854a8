"""TLS, mutual TLS and token auth between agents/clients and the collector, over real gRPC."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_transport_util import cpb, exporter, gpb, make_record

from agent.outputs.grpc_channel import ClientSecurity, make_channel, metadata
from collector.server import CollectorConfig, serve

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

pytestmark = pytest.mark.e2e


def _cert(name, issuer_key=None, issuer_name=None, ca=False, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _write(tmp, name, key, cert):
    (tmp / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(tmp / f"{name}.crt"), str(tmp / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("nodewarden-test-ca", ca=True)
    out = {"ca": _write(tmp, "ca", ca_key, ca)[0]}
    out["server"] = _write(tmp, "server", *_cert("localhost", ca_key, ca.subject, server=True))
    out["client"] = _write(tmp, "client", *_cert("agent-1", ca_key, ca.subject))
    other_key, other = _cert("rogue-ca", ca=True)
    out["rogue"] = _write(tmp, "rogue", *_cert("agent-x", other_key, other.subject))
    return out


def _query_code(address, sec: ClientSecurity):
    ch = make_channel(address, sec)
    try:
        list(gpb.CollectorStub(ch).Query(cpb.QueryRequest(limit=1), metadata=metadata(sec), timeout=10))
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()
    finally:
        ch.close()


def test_token_auth(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "ev.db"), token_file=str(token_file)))
    try:
        code, detail = _query_code(handle.address, ClientSecurity())
        assert code == grpc.StatusCode.UNAUTHENTICATED and "token" in detail
        assert _query_code(handle.address, ClientSecurity(token="wrong"))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert _query_code(handle.address, ClientSecurity(token_file=str(token_file)))[0] == grpc.StatusCode.OK
        # An agent without the token is refused and delivers nothing; with it, everything.
        bad = exporter(handle.address, tmp_path / "spool-bad")
        bad.submit(make_record(0))
        assert not bad.stop(timeout=1.5)
        assert handle.metrics()["stored"] == 0
        good = exporter(handle.address, tmp_path / "spool-good", security=ClientSecurity(token="s3cret-token"))
        for i in range(50):
            good.submit(make_record(i))
        assert good.stop(timeout=10)
        assert handle.metrics()["stored"] == 50
        # Health stays open for probes.
        ch = grpc.insecure_channel(handle.address)
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="nodewarden.v1.Collector"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        handle.stop(0.5)


def test_tls(tmp_path, pki):
    crt, key = pki["server"]
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "ev.db"), tls_cert=crt, tls_key=key))
    try:
        # Plaintext to a TLS port, and TLS that cannot verify the server: both fail.
        assert _query_code(handle.address, ClientSecurity())[0] == grpc.StatusCode.UNAVAILABLE
        rogue_ca = pki["rogue"][0]  # a cert, not the CA that signed the server: verification fails
        assert _query_code(handle.address, ClientSecurity(tls_ca=rogue_ca))[0] == grpc.StatusCode.UNAVAILABLE
        assert _query_code(handle.address, ClientSecurity(tls_ca=pki["ca"]))[0] == grpc.StatusCode.OK
    finally:
        handle.stop(0.5)


def test_mutual_tls_and_token(tmp_path, pki):
    crt, key = pki["server"]
    handle = serve(CollectorConfig(listen=["127.0.0.1:0"], db=str(tmp_path / "ev.db"), tls_cert=crt, tls_key=key,
                                   tls_client_ca=pki["ca"], token="t0k"))
    try:
        no_cert = ClientSecurity(tls_ca=pki["ca"], token="t0k")
        assert _query_code(handle.address, no_cert)[0] == grpc.StatusCode.UNAVAILABLE
        ccrt, ckey = pki["rogue"]
        wrong_ca = ClientSecurity(tls_ca=pki["ca"], tls_cert=ccrt, tls_key=ckey, token="t0k")
        assert _query_code(handle.address, wrong_ca)[0] == grpc.StatusCode.UNAVAILABLE
        ccrt, ckey = pki["client"]
        no_token = ClientSecurity(tls_ca=pki["ca"], tls_cert=ccrt, tls_key=ckey)
        assert _query_code(handle.address, no_token)[0] == grpc.StatusCode.UNAUTHENTICATED
        good = ClientSecurity(tls_ca=pki["ca"], tls_cert=ccrt, tls_key=ckey, token="t0k")
        assert _query_code(handle.address, good)[0] == grpc.StatusCode.OK
        exp = exporter(handle.address, tmp_path / "spool", security=good)
        for i in range(100):
            exp.submit(make_record(i))
        assert exp.stop(timeout=10)
        assert handle.metrics()["stored"] == 100
    finally:
        handle.stop(0.5)
