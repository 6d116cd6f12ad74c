"""An aiosmtpd server that requires STARTTLS and a login, for mlci-notify's tests.

aiosmtpd's command line cannot configure authentication, hence this script.

    python3 smtp_auth_server.py HOST PORT MAILDIR CERT KEY USER [--mechanism PLAIN|LOGIN]

The expected password is read from the environment variable
MLCI_TEST_SMTP_PASSWORD (not argv, which `ps` shows). Messages go to the
MAILDIR like `-c aiosmtpd.handlers.Mailbox`; each login attempt is printed to
stdout as `AUTH <mechanism> ok|refused user=<user>`. SIGTERM or SIGKILL stops it.
"""

import argparse
import asyncio
import os
import signal
import ssl

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("host", "port", "maildir", "cert", "key", "user"):
        parser.add_argument(name)
    parser.add_argument("--mechanism", choices=("PLAIN", "LOGIN"))
    args = parser.parse_args()
    user = args.user.encode()
    password = os.environ["MLCI_TEST_SMTP_PASSWORD"].encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else "?"
        print(f"AUTH {mechanism} {'ok' if ok else 'refused'} user={login}", flush=True)
        # handled=False: aiosmtpd then answers 535 itself.
        return AuthResult(success=ok, handled=False)

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    exclude = [m for m in ("PLAIN", "LOGIN") if args.mechanism and m != args.mechanism]

    def factory() -> SMTP:
        return SMTP(
            Mailbox(args.maildir),
            hostname="mlci-test",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_exclude_mechanism=exclude,
            authenticator=authenticator,
        )

    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(factory, host=args.host, port=int(args.port)))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    print(f"listening on {args.host}:{args.port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
