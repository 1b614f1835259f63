"""Secrets backends behind AccountStore: Fernet columns (with key rotation) and AWS Secrets Manager (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import asyncpg
import boto3
import pytest
from moto import mock_aws
from pydantic import SecretStr

from ticker.infra.runtime.settings import Settings
from ticker.infra.stores.accounts import AccountStore, KiteAccount, account_store
from ticker.infra.stores.crypto import SecretBox, new_key
from ticker.infra.stores.secrets import AwsBackend, FernetBackend, SecretsError, secrets_backend

REGION = "ap-south-1"
PREFIX = "ticker-test/"


def _account(account_id: str = "acct-1", **secrets: str) -> KiteAccount:
    values = {"api_secret": "s3cret-api", "user_id": "AB1234", "password": "pa55word-x",
              "totp_secret": "JBSWY3DPEHPK3PXP", **secrets}
    return KiteAccount(account_id=account_id, api_key="key-" + account_id, auto_login=True,
                       **{k: SecretStr(v) for k, v in values.items()})


@pytest.fixture(autouse=True)
async def _no_accounts(private_db: asyncpg.Pool) -> None:
    await private_db.execute("TRUNCATE kite_accounts")


@pytest.fixture
def aws() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


async def test_fernet_columns_hold_ciphertext_only(private_db: asyncpg.Pool) -> None:
    store = AccountStore(private_db, SecretBox(new_key()))
    await store.upsert(_account())
    row = await private_db.fetchrow("SELECT * FROM kite_accounts WHERE account_id = 'acct-1'")
    raw = b"".join(bytes(row[c]) for c in ("api_secret_enc", "password_enc", "totp_secret_enc", "user_id_enc"))
    for plain in (b"s3cret-api", b"pa55word-x", b"JBSWY3DPEHPK3PXP", b"AB1234"):
        assert plain not in raw
    got = await store.get("acct-1")
    assert got is not None and got.secret("password") == "pa55word-x" and got.secret("access_token") is None

    await store.set_token("acct-1", "tok-123456")
    got = await store.get("acct-1")
    assert got.secret("access_token") == "tok-123456" and got.token_state == "valid"
    assert got.secret("api_secret") == "s3cret-api"


async def test_fernet_keys_rotate_and_a_wrong_key_fails_clearly(private_db: asyncpg.Pool) -> None:
    old, new = new_key(), new_key()
    await AccountStore(private_db, SecretBox(old)).upsert(_account())
    rotated = AccountStore(private_db, SecretBox(f"{new},{old}"))
    assert (await rotated.get("acct-1")).secret("totp_secret") == "JBSWY3DPEHPK3PXP"

    stranger = AccountStore(private_db, SecretBox(new_key()))
    with pytest.raises(SecretsError, match="cannot decrypt the secrets of account 'acct-1'") as info:
        await stranger.get("acct-1")
    assert "gAAAA" not in str(info.value)


async def test_without_a_key_the_store_says_what_to_set(private_db: asyncpg.Pool) -> None:
    store = AccountStore(private_db, None)
    assert not store.configured
    with pytest.raises(SecretsError, match="ACCOUNT_ENCRYPTION_KEY"):
        await store.upsert(_account())


async def test_aws_backend_keeps_secrets_out_of_postgres(private_db: asyncpg.Pool, aws) -> None:
    store = AccountStore(private_db, None, AwsBackend(PREFIX, REGION))
    assert store.configured
    await store.upsert(_account())
    row = await private_db.fetchrow("SELECT * FROM kite_accounts WHERE account_id = 'acct-1'")
    assert all(row[c] is None for c in ("api_secret_enc", "access_token_enc", "password_enc", "totp_secret_enc"))
    stored = json.loads(aws.get_secret_value(SecretId=PREFIX + "acct-1")["SecretString"])
    assert stored["password"] == "pa55word-x" and "access_token" not in stored

    got = await store.get("acct-1")
    assert got.secret("user_id") == "AB1234" and got.auto_login


async def test_aws_token_update_merges_and_other_processes_see_it(private_db: asyncpg.Pool, aws) -> None:
    writer = AccountStore(private_db, None, AwsBackend(PREFIX, REGION))
    reader = AccountStore(private_db, None, AwsBackend(PREFIX, REGION))  # another process's cache
    await writer.upsert(_account())
    assert (await reader.get("acct-1")).secret("access_token") is None

    await writer.set_token("acct-1", "fresh-token-1")
    seen = await reader.get("acct-1")
    assert seen.secret("access_token") == "fresh-token-1"
    assert seen.secret("api_secret") == "s3cret-api"  # merged, not replaced
    stamp = await private_db.fetchval("SELECT token_updated_at FROM kite_accounts WHERE account_id = 'acct-1'")
    assert stamp is not None


async def test_aws_remove_deletes_the_secret_and_the_id_can_return(private_db: asyncpg.Pool, aws) -> None:
    store = AccountStore(private_db, None, AwsBackend(PREFIX, REGION))
    await store.upsert(_account())
    assert await store.remove("acct-1")
    with pytest.raises(aws.exceptions.ResourceNotFoundException):
        aws.get_secret_value(SecretId=PREFIX + "acct-1")
    await store.upsert(_account(password="an0ther-pass"))
    assert (await store.get("acct-1")).secret("password") == "an0ther-pass"


async def test_aws_rejects_ids_that_cannot_name_a_secret(private_db: asyncpg.Pool, aws) -> None:
    store = AccountStore(private_db, None, AwsBackend(PREFIX, REGION))
    with pytest.raises(SecretsError, match="cannot name an AWS secret"):
        await store.upsert(_account("bad id!"))


async def test_settings_select_the_backend(settings: Settings, private_db: asyncpg.Pool, aws) -> None:
    assert isinstance(secrets_backend(settings), FernetBackend)
    aws_settings = settings.model_copy(update={"secrets_backend": "aws", "aws_secrets_prefix": PREFIX,
                                               "aws_region": REGION})
    store = account_store(private_db, aws_settings)
    assert isinstance(store.backend, AwsBackend)
    await store.upsert(_account("acct-9"))
    assert json.loads(aws.get_secret_value(SecretId=PREFIX + "acct-9")["SecretString"])["user_id"] == "AB1234"
