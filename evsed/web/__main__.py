"""`python -m evsed.web hash-password`: make a [web] password_hash without echoing the password."""

from __future__ import annotations

import argparse
import getpass
import sys

from evsed.web.settings import hash_password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evsed.web")
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="print a password_hash line for [web]")
    hp.add_argument("--method", choices=("scrypt", "pbkdf2"), default="scrypt")
    hp.add_argument("--stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(f'password_hash = "{hash_password(password, args.method)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
