"""`ticker accounts add|list|remove|set-token`: manage Kite accounts from a shell.

Secrets are never taken as arguments (they would land in shell history and `ps`): each comes from
its environment variable or, on a terminal, from a prompt that does not echo. They are stored
through the configured secrets backend (Fernet columns or AWS Secrets Manager) and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import sys
from typing import TextIO

import orjson
import pyotp
from pydantic import SecretStr

from ticker.core.contracts import ControlMessage
from ticker.infra.cli.oneshot import CliContext, CliFailure, cli_context, reach_postgres
from ticker.infra.runtime.logs import register_secret
from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount, account_store

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV = {
    "api_secret": "KITE_ACCOUNT_API_SECRET",
    "access_token": "KITE_ACCOUNT_ACCESS_TOKEN",
    "user_id": "KITE_ACCOUNT_USER_ID",
    "password": "KITE_ACCOUNT_PASSWORD",
    "totp_secret": "KITE_ACCOUNT_TOTP_SECRET",
}
LOGIN_SECRETS = ("user_id", "password", "totp_secret")


class CliError(CliFailure):
    """Shown to the user as `ticker accounts: <message>`, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=2)


def account_id_arg(value: str) -> str:
    if not ACCOUNT_ID.match(value):
        raise argparse.ArgumentTypeError("account id: letters, digits, '_', '.', '-' (at most 64, "
                                         "starting with a letter or digit)")
    return value


def parser() -> argparse.ArgumentParser:
    env_help = ", ".join(f"{v} ({k})" for k, v in ENV.items())
    p = argparse.ArgumentParser(
        prog="ticker accounts", description="Manage Kite accounts. Secrets are read from the environment "
        f"({env_help}) or prompted for without echo; never pass them as arguments.")
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add an account, or update one (secrets not given are kept)")
    add.add_argument("account_id", type=account_id_arg)
    add.add_argument("--api-key", required=True)
    add.add_argument("--auto-login", action="store_true",
                     help="renew the access token daily with the user id, password and TOTP secret")
    add.add_argument("--inactive", action="store_true", help="store it but do not use it")
    lst = sub.add_parser("list", help="list accounts (no secrets, only whether each is set)")
    lst.add_argument("--json", action="store_true")
    rm = sub.add_parser("remove", help="remove an account and its secrets")
    rm.add_argument("account_id", type=account_id_arg)
    st = sub.add_parser("set-token", help="store a new access token for an account")
    st.add_argument("account_id", type=account_id_arg)
    return p


# --- reading secrets -------------------------------------------------------------------------------
def read_secret(name: str, *, required: bool, interactive: bool) -> str | None:
    value = os.environ.get(ENV[name])
    if value is None and interactive:
        value = getpass.getpass(f"{name.replace('_', ' ')}{'' if required else ' (empty to skip)'}: ")
    value = (value or "").strip() or None
    if value is None and required:
        raise CliError(f"{name} is required: set {ENV[name]} or run on a terminal to be prompted")
    register_secret(value)
    return value


def check_totp(secret: str | None) -> None:
    if secret is None:
        return
    try:
        pyotp.TOTP(secret).now()
    except Exception:
        raise CliError("totp_secret is not a base32 TOTP secret (the key shown when enabling "
                       "external 2FA)") from None


# --- commands ----------------------------------------------------------------------------------------
async def add(store: AccountStore, settings: Settings, args: argparse.Namespace, interactive: bool) -> str:
    existing = await store.get(args.account_id)
    secrets = {"api_secret": read_secret("api_secret", required=existing is None or
                                         existing.api_secret is None, interactive=interactive),
               "access_token": read_secret("access_token", required=False, interactive=interactive)}
    for name in LOGIN_SECRETS:
        have = existing is not None and getattr(existing, name) is not None
        secrets[name] = read_secret(name, required=args.auto_login and not have,
                                    interactive=interactive and args.auto_login)
    check_totp(secrets["totp_secret"])
    account = KiteAccount(
        account_id=args.account_id, api_key=args.api_key, auto_login=args.auto_login,
        is_active=not args.inactive, **{k: SecretStr(v) for k, v in secrets.items() if v is not None})
    await store.upsert(account)
    await _announce(settings, args.account_id, "account saved from the command line")  # e.g. the same token again
    return f"{'updated' if existing else 'added'} account {args.account_id}"


async def list_accounts(store: AccountStore, args: argparse.Namespace, out: TextIO) -> None:
    accounts = [{**a.public(), "login_error": a.login_error} for a in await store.list(active_only=False)]
    if args.json:
        out.write(orjson.dumps(accounts, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if not accounts:
        out.write("no accounts stored\n")
        return
    cols = ("account_id", "api_key", "token_state", "auto_login", "is_active", "has_access_token")
    rows = [[str(a[c]) for c in cols] for a in accounts]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    for line in [list(cols), *rows]:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
    for a in accounts:
        if a["login_error"]:
            out.write(f"\n{a['account_id']}: automated login refused by Kite ({a['login_error']}); store the right "
                      f"credentials with `ticker accounts add {a['account_id']} --api-key {a['api_key']} --auto-login`\n")


async def set_token(store: AccountStore, settings: Settings, args: argparse.Namespace, interactive: bool) -> str:
    if await store.get(args.account_id) is None:
        raise CliError(f"no account {args.account_id!r}; add it first with `ticker accounts add`")
    token = read_secret("access_token", required=True, interactive=interactive)
    assert token is not None  # required=True raised otherwise
    await store.set_token(args.account_id, token, state="unknown")
    told = await _announce(settings, args.account_id, "token set from the command line")
    return f"token stored for {args.account_id}" + ("; the streamer was told" if told else "")


async def _announce(settings: Settings, account_id: str, reason: str) -> bool:
    """Tell a running streamer to reconnect the account (best effort: the token is stored either way)."""
    if not settings.redis_url:
        return False
    from ticker.infra.queue.control import publish_control
    from ticker.infra.queue.enqueue import names_for
    from ticker.infra.stores.redis import connect

    redis = connect(settings.redis_url)
    try:
        await publish_control(redis, names_for(settings), ControlMessage(
            kind="tokens", account_id=account_id, reason=reason))
        return True
    except Exception:
        return False
    finally:
        await redis.aclose()


async def run(settings: Settings, args: argparse.Namespace, out: TextIO, interactive: bool,
              ctx: CliContext | None = None) -> int:
    """One command; `ctx` (from `main`) also says which settings came from .ticker/dev.json."""
    pool = await reach_postgres(ctx or CliContext(settings))
    try:
        store = account_store(pool, settings)
        if not store.configured:
            raise CliError("set ACCOUNT_ENCRYPTION_KEY (or SECRETS_BACKEND=aws) to store Kite secrets")
        if args.command == "add":
            out.write(await add(store, settings, args, interactive) + "\n")
        elif args.command == "list":
            await list_accounts(store, args, out)
        elif args.command == "remove":
            if not await store.remove(args.account_id):
                raise CliError(f"no account {args.account_id!r}")
            await _announce(settings, args.account_id, "account removed from the command line")
            out.write(f"removed account {args.account_id}\n")
        else:
            out.write(await set_token(store, settings, args, interactive) + "\n")
    finally:
        await pool.close()
    return 0


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    from ticker.infra.stores.secrets import SecretsError

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        ctx = cli_context()  # in dev, .ticker/dev.json supplies the database and the encryption key
        return asyncio.run(run(ctx.settings, args, out or sys.stdout, sys.stdin.isatty(), ctx))
    except CliFailure as exc:
        print(f"ticker accounts: {exc}", file=sys.stderr)
        return exc.code
    except SecretsError as exc:
        print(f"ticker accounts: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        print("ticker accounts: cancelled", file=sys.stderr)
        return 130
