#!/usr/bin/env python3
"""Throwaway TLS material for trying TLS / mutual TLS locally: a CA, a server and a client certificate.

Usage: .venv/bin/python scripts/make_test_certs.py OUT_DIR [HOST ...]   (default hosts: localhost 127.0.0.1)
Writes ca.pem, server.pem + server.key (valid for the hosts), client.pem + client.key, valid 30 days.
Not for production: the CA key is thrown away and the keys are not encrypted. Needs `cryptography`.

    splitinfer serve --tls-cert OUT/server.pem --tls-key OUT/server.key [--tls-client-ca OUT/ca.pem]
    splitinfer device --tls-ca OUT/ca.pem [--tls-cert OUT/client.pem --tls-key OUT/client.key] ...
"""

import sys

from splitinfer.common.transport.security import make_test_pki


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    hosts = tuple(argv[1:]) or ("localhost", "127.0.0.1")
    for what, path in make_test_pki(argv[0], hosts=hosts, days=30).items():
        print(f"{what:12s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
