"""Where Kite account secrets live, selected by SECRETS_BACKEND.

- `fernet`: ciphertext in the `kite_accounts` *_enc columns (MultiFernet, so keys rotate).
- `aws`: one AWS Secrets Manager secret per account (`AWS_SECRETS_PREFIX` + account id) holding a
  JSON object of the account's secrets; the *_enc columns stay empty.

`AccountStore` talks to a backend only through `seal` (store some secrets, get the column values
to write) and `open` (the secrets of a stored row), so the table layout is the same for both.
Errors never carry secret values.
"""

from __future__ import annotations

import asyncio
import json
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.crypto import SecretBox

SECRET_NAMES = ("api_secret", "access_token", "user_id", "password", "totp_secret")
COLUMN_OF = {name: f"{name}_enc" for name in SECRET_NAMES}
_AWS_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")


class SecretsError(RuntimeError):
    """A secret could not be stored or read; the message names the account, never a value."""


class SecretsBackend(ABC):
    name: str

    @abstractmethod
    async def seal(self, account_id: str, secrets: Mapping[str, str | None]) -> dict[str, bytes | None]:
        """Store the non-None `secrets` (others are left as they are); returns {column: value}."""

    @abstractmethod
    async def open(self, row: Mapping[str, Any]) -> dict[str, str]:
        """The secrets of one `kite_accounts` row, by name; absent ones are left out."""

    @abstractmethod
    async def forget(self, account_id: str) -> None:
        """Drop whatever the backend holds outside the row."""


class FernetBackend(SecretsBackend):
    name = "fernet"

    def __init__(self, box: SecretBox | None) -> None:
        self.box = box

    def _box(self) -> SecretBox:
        if self.box is None:
            raise SecretsError("ACCOUNT_ENCRYPTION_KEY is not set: cannot store or read Kite secrets")
        return self.box

    async def seal(self, account_id: str, secrets: Mapping[str, str | None]) -> dict[str, bytes | None]:
        box = self._box() if any(v is not None for v in secrets.values()) else None
        return {COLUMN_OF[k]: (box.encrypt(v) if box and v is not None else None) for k, v in secrets.items()}

    async def open(self, row: Mapping[str, Any]) -> dict[str, str]:
        present = {name: row[COLUMN_OF[name]] for name in SECRET_NAMES if row[COLUMN_OF[name]] is not None}
        if not present:
            return {}
        box = self._box()
        try:
            return {name: box.decrypt(value) or "" for name, value in present.items()}
        except Exception as exc:  # a wrong key must not leak the ciphertext through the message
            raise SecretsError(f"cannot decrypt the secrets of account {row['account_id']!r}: "
                               f"{exc.__class__.__name__}") from None

    async def forget(self, account_id: str) -> None:
        return None  # the secrets went with the row


class AwsBackend(SecretsBackend):
    """AWS Secrets Manager. boto3 blocks, so calls run in a thread.

    Reads are cached per (account, row updated_at): every write bumps the row's updated_at, so any
    process sees a change at its next read without polling AWS on every account lookup.
    """

    name = "aws"
    CACHE_MAX = 1024

    def __init__(self, prefix: str, region: str, client: Any = None) -> None:
        self.prefix = prefix
        self.region = region
        self._client = client
        self._cache: OrderedDict[tuple[str, Any], dict[str, str]] = OrderedDict()
        self._lock = asyncio.Lock()

    def secret_name(self, account_id: str) -> str:
        name = f"{self.prefix}{account_id}"
        if not _AWS_NAME.match(name):
            raise SecretsError(f"account id {account_id!r} cannot name an AWS secret "
                               "(letters, digits and /_+=.@- only)")
        return name

    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("secretsmanager", region_name=self.region)
        return self._client

    async def seal(self, account_id: str, secrets: Mapping[str, str | None]) -> dict[str, bytes | None]:
        updates = {k: v for k, v in secrets.items() if v is not None}
        if updates:
            async with self._lock:  # read-merge-write within this process
                current = await asyncio.to_thread(self._read, account_id)
                await asyncio.to_thread(self._write, account_id, {**(current or {}), **updates}, current is None)
                self._drop(account_id)
        return {COLUMN_OF[k]: None for k in secrets}

    async def open(self, row: Mapping[str, Any]) -> dict[str, str]:
        account_id = row["account_id"]
        key = (account_id, row.get("updated_at"))
        if key in self._cache:
            self._cache.move_to_end(key)
            return dict(self._cache[key])
        value = await asyncio.to_thread(self._read, account_id) or {}
        self._drop(account_id)
        self._cache[key] = value
        while len(self._cache) > self.CACHE_MAX:
            self._cache.popitem(last=False)
        return dict(value)

    async def forget(self, account_id: str) -> None:
        await asyncio.to_thread(self._delete, account_id)
        self._drop(account_id)

    def _drop(self, account_id: str) -> None:
        for key in [k for k in self._cache if k[0] == account_id]:
            del self._cache[key]

    # --- blocking boto3 calls ----------------------------------------------------------------
    def _read(self, account_id: str) -> dict[str, str] | None:
        client, name = self.client(), self.secret_name(account_id)
        try:
            raw = client.get_secret_value(SecretId=name)["SecretString"]
        except client.exceptions.ResourceNotFoundException:
            return None
        except Exception as exc:
            raise _aws_error("read", account_id, exc) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise SecretsError(f"AWS secret of account {account_id!r} is not a JSON object") from None
        if not isinstance(data, dict):
            raise SecretsError(f"AWS secret of account {account_id!r} is not a JSON object")
        return {k: str(v) for k, v in data.items() if k in SECRET_NAMES and v is not None}

    def _write(self, account_id: str, value: dict[str, str], create: bool) -> None:
        client, name, body = self.client(), self.secret_name(account_id), json.dumps(value)
        try:
            if create:
                client.create_secret(Name=name, SecretString=body,
                                     Description="Kite Connect credentials of one ticker account")
            else:
                client.put_secret_value(SecretId=name, SecretString=body)
        except Exception as exc:
            raise _aws_error("store", account_id, exc) from None

    def _delete(self, account_id: str) -> None:
        client, name = self.client(), self.secret_name(account_id)
        try:
            # No recovery window: the id may be re-added at once, which a pending deletion forbids.
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except client.exceptions.ResourceNotFoundException:
            return
        except Exception as exc:
            raise _aws_error("delete", account_id, exc) from None


def _aws_error(action: str, account_id: str, exc: Exception) -> SecretsError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") or exc.__class__.__name__
    return SecretsError(f"cannot {action} the AWS secret of account {account_id!r}: {code}")


def secrets_backend(settings: Settings, *, aws_client: Any = None) -> SecretsBackend:
    """The backend SECRETS_BACKEND selects."""
    if settings.secrets_backend == "aws":
        return AwsBackend(settings.aws_secrets_prefix, settings.aws_region, aws_client)
    key = settings.account_encryption_key
    return FernetBackend(SecretBox(key.get_secret_value()) if key is not None else None)
