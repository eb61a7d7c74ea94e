"""Channel security of the two processes: TLS / mutual TLS credentials and an optional bearer token.

Why here and not in each process: the server (`serve --tls-cert --tls-key [--tls-client-ca] [--token]`) and
the UE (`device --tls-ca [--tls-cert --tls-key] [--token]`) must agree on file formats, on the metadata
key of the token and on what is refused, and both give the same one-line errors for unreadable files.

- TLS: PEM files read once at start; a missing or non-PEM file is a `UserError` naming it.
- Mutual TLS: with `--tls-client-ca` the server requires a client certificate signed by that CA
  (gRPC/BoringSSL checks it during the handshake; a client without one never reaches a handler).
- Bearer token: the client sends `authorization: Bearer <token>` on every call; the server's interceptor
  compares it in constant time and answers UNAUTHENTICATED otherwise. The gRPC health service is exempt,
  so orchestrators can probe without the secret (it reveals nothing but SERVING). A token over a channel
  without TLS travels in clear: both sides warn.

`make_test_pki` writes a throwaway CA, server and client certificates (tests, local trials). It needs the
`cryptography` package, imported only there.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from splitinfer.common.core.errors import UserError

TOKEN_ENV = "SPLITINFER_TOKEN"
AUTH_KEY = "authorization"
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def read_pem(path, what: str) -> bytes:
    """The bytes of a PEM file, or a UserError naming `what` and the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise UserError(f"{what} {p}: cannot read ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise UserError(f"{what} {p}: not a PEM file (expected '-----BEGIN ...')")
    return data


def server_credentials(cert, key, client_ca=None):
    """gRPC server credentials: TLS with `cert`/`key`; with `client_ca`, clients must present a certificate
    signed by it (mutual TLS)."""
    import grpc

    if bool(cert) != bool(key):
        raise UserError("--tls-cert and --tls-key go together")
    if not cert:
        if client_ca:
            raise UserError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    chain, private = read_pem(cert, "TLS certificate"), read_pem(key, "TLS key")
    ca = read_pem(client_ca, "TLS client CA") if client_ca else None
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(ca=None, cert=None, key=None):
    """gRPC channel credentials: TLS trusting `ca` (None: no TLS); `cert`+`key` add a client certificate."""
    import grpc

    if bool(cert) != bool(key):
        raise UserError("--tls-cert and --tls-key go together")
    if not ca:
        if cert:
            raise UserError("a client certificate (--tls-cert) needs --tls-ca (the server's CA)")
        return None
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca, "TLS CA"),
                                        private_key=read_pem(key, "TLS key") if key else None,
                                        certificate_chain=read_pem(cert, "TLS certificate") if cert else None)


def resolve_token(value: str | None) -> str | None:
    """The token from `--token`, else from $SPLITINFER_TOKEN; None when neither is set."""
    token = value if value else os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None
    token = token.strip()
    if not token:
        return None
    if not token.isascii() or not token.isprintable() or " " in token:
        raise UserError("the token must be printable ASCII without spaces (it travels as gRPC metadata)")
    return token


def auth_metadata(token: str | None) -> tuple:
    """Call metadata carrying the token (empty without one)."""
    return ((AUTH_KEY, f"Bearer {token}"),) if token else ()


def _abort_handler(handler, code, details: str):
    """A handler of the same kind as `handler` that only refuses the call."""
    import grpc

    def refuse(_request, context):
        context.abort(code, details)

    def refuse_stream(_request, context):
        context.abort(code, details)
        yield  # pragma: no cover - abort raises

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)


def token_interceptor(token: str, exempt=EXEMPT_PREFIXES, on_refuse=None):
    """A server interceptor that refuses (UNAUTHENTICATED) calls without `authorization: Bearer <token>`."""
    import grpc

    expected = f"Bearer {token}".encode()

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            handler = continuation(details)
            if details.method.startswith(tuple(exempt)):
                return handler
            got = ""
            for k, v in details.invocation_metadata or ():
                if k == AUTH_KEY:
                    got = v if isinstance(v, str) else v.decode("latin-1")
                    break
            if hmac.compare_digest(got.encode("utf-8", "replace"), expected):
                return handler
            if on_refuse is not None:
                on_refuse()
            why = "missing bearer token" if not got else "wrong bearer token"
            return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED,
                                  f"{why} (send 'authorization: Bearer <token>'; splitinfer device --token "
                                  f"or ${TOKEN_ENV})")

    return TokenInterceptor()


# ----------------------------------------------------------------------------------------------
# throwaway certificates


def make_test_pki(out_dir, hosts=("localhost", "127.0.0.1"), days: int = 2, name: str = "splitinfer test") -> dict:
    """Write ca.pem, server.pem/server.key (for `hosts`), client.pem/client.key into `out_dir`; paths by name.

    For tests and local trials only: the CA key is thrown away, keys are unencrypted.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca = _TestCA(name, days)
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    server, server_key = ca.leaf(hosts[0] if hosts else "server", ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client, client_key = ca.leaf(f"{name} client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {"ca": ("ca.pem", _pem_cert(ca.cert)), "server_cert": ("server.pem", _pem_cert(server)),
             "server_key": ("server.key", _pem_key(server_key)), "client_cert": ("client.pem", _pem_cert(client)),
             "client_key": ("client.key", _pem_key(client_key))}
    paths = {}
    for what, (fname, data) in files.items():
        p = out / fname
        p.write_bytes(data)
        if fname.endswith(".key"):
            p.chmod(0o600)
        paths[what] = p
    return paths


class _TestCA:
    """A throwaway certificate authority (EC P-256, valid for `days`) that signs leaf certificates."""

    def __init__(self, name: str, days: int):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.days = days
        self.key = self._new_key()
        self.name = self._subject(f"{name} CA")
        self.cert = (self._builder(self.name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @staticmethod
    def _new_key():
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def _subject(cn: str):
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def _builder(self, subj, pub):
        import datetime

        from cryptography import x509

        return (x509.CertificateBuilder().subject_name(subj).issuer_name(self.name).public_key(pub)
                .serial_number(x509.random_serial_number())
                .not_valid_before(self.now - datetime.timedelta(minutes=5))
                .not_valid_after(self.now + datetime.timedelta(days=self.days)))

    def leaf(self, cn: str, usage, sans: list):
        """(certificate, key) for `cn` with the extended key usage `usage` and subject alternative names."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        k = self._new_key()
        b = (self._builder(self._subject(cn), k.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(self.key, hashes.SHA256()), k


def _pem_cert(c) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return c.public_bytes(serialization.Encoding.PEM)


def _pem_key(k) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())
