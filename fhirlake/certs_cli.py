"""``fhirlake certs …``: the local CA, the server certificate and client certificates."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    certs = sub.add_parser("certs", help="TLS certificates: local CA, server and client certificates")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    init = certs_sub.add_parser("init", help="create the local CA and server certificate under <data-dir>/tls")
    init.add_argument(
        "--hostname",
        action="append",
        dest="hostnames",
        metavar="H",
        help="DNS name or IP of the server certificate (repeatable; default localhost and 127.0.0.1)",
    )
    init.set_defaults(func=cmd_init)
    issue = certs_sub.add_parser("issue-client", help="issue a client certificate signed by the local CA")
    issue.add_argument("--name", required=True, help="the certificate's common name (CN), e.g. the client system")
    issue.add_argument("--out", required=True, type=Path, help="directory for <name>.pem and <name>.key (0600)")
    issue.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    issue.set_defaults(func=cmd_issue_client)
    for parser in (init, issue):
        add_data_dir(parser)


def cmd_init(args: argparse.Namespace) -> int:
    from fhirlake.tls_serve import tls_dir
    from security.certs import init_ca_and_server, load_certificate, subject_of

    paths = init_ca_and_server(tls_dir(args.settings_of(args)), args.hostnames)
    server = load_certificate(paths.server_cert)
    args.print(
        {
            "ca": str(paths.ca_cert),
            "ca_key": str(paths.ca_key),
            "server_cert": str(paths.server_cert),
            "server_key": str(paths.server_key),
            "ca_subject": subject_of(load_certificate(paths.ca_cert)),
            "server_not_after": server.not_valid_after_utc.isoformat(),
        }
    )
    return 0


def cmd_issue_client(args: argparse.Namespace) -> int:
    from fhirlake.tls_serve import tls_dir
    from security.certs import issue_client, load_certificate, subject_of

    cert_path, key_path = issue_client(tls_dir(args.settings_of(args)), args.name, args.out, args.days)
    cert = load_certificate(cert_path)
    args.print(
        {
            "cert": str(cert_path.resolve()),
            "key": str(key_path.resolve()),
            "subject": subject_of(cert),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
    )
    return 0
