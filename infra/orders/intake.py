"""The one order intake: validate -> audit -> enqueue, for orders, baskets, GTTs, margin previews and
dead-letter replays. The web's routes call it; so does anything else that submits order work.

1. validate (`validate.Validator`): the account resolved, the request taken in as Kite would take it
   (an order Kite would refuse is an OrderValidationError naming the field, and nothing is written);
2. audit (`audit_trail`): the job's queued row, before its job exists, so its record outlives arq's
   result expiry; the web group-commits these rows (`audit_batch.AuditBatcher`);
3. enqueue (`enqueue.Enqueuer`): the job on its queue, in one round trip.

The `Idempotency-Key` fixes the job id: a repeat answers with the same job (`duplicate`), the same key
with a different request is an IdempotencyConflict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from pydantic import BaseModel

from ticker.core.contracts import (
    JOB_CANCEL_ORDER,
    JOB_DELETE_GTT,
    JOB_MODIFY_GTT,
    JOB_MODIFY_ORDER,
    JOB_ORDER_MARGINS,
    JOB_PLACE_GTT,
    JOB_PLACE_ORDER,
)
from ticker.core.gtt import GttJobPlan, GttRequest, plan_delete_gtt, plan_modify_gtt, plan_place_gtt
from ticker.core.margins import MarginsPayload, MarginsRequest, margins_job_id
from ticker.core.mutual_funds import (
    MF_JOB_NAMES,
    MfJobPlan,
    MfOrderRequest,
    MfSipModify,
    MfSipRequest,
    plan_mf,
    sip_amount_issues,
    validate_mf_order,
    validate_sip,
)
from ticker.core.orders import (
    BasketRequest,
    CancelRequest,
    ModifyRequest,
    OrderJobPlan,
    OrderRequest,
    kite_tag,
    plan_basket,
    plan_cancel,
    plan_modify,
    plan_place,
    raise_issues,
)
from ticker.infra.orders import audit_trail as audit
from ticker.infra.orders.enqueuer import Enqueuer
from ticker.infra.orders.mf_rules import MfFacts
from ticker.infra.orders.validate import Validator
from ticker.infra.stores.deadletters import DeadLetterNotFound, get_dead_letter, mark_replayed, replay_payload

# (requested account or None, the field that named it) -> the account; raises when unknown
ResolveAccount = Callable[[str | None, str], Awaitable[str]]
JobPlan = OrderJobPlan | GttJobPlan | MfJobPlan
# (plan, account) -> True when the queued row is new
RecordQueued = Callable[[JobPlan, str], Awaitable[bool]]
# account -> what the MF checks know of it (its MF snapshots)
MfLookup = Callable[[str], Awaitable[MfFacts]]

_AUDITED_KINDS = {JOB_PLACE_ORDER: "place", JOB_MODIFY_ORDER: "modify", JOB_CANCEL_ORDER: "cancel",
                  JOB_PLACE_GTT: "gtt_place", JOB_MODIFY_GTT: "gtt_modify", JOB_DELETE_GTT: "gtt_delete",
                  **{name: kind for kind, name in MF_JOB_NAMES.items()}}


class IdempotencyConflict(ValueError):
    """The idempotency key was already used for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used for a different request (job {job_id})")
        self.job_id = job_id


class Submitted(BaseModel):
    job_id: str
    account_id: str
    duplicate: bool  # True: this job was accepted before; the existing job stands


class LegSubmitted(BaseModel):
    leg: int | None
    job_id: str
    duplicate: bool


class BasketSubmitted(BaseModel):
    basket_id: str
    account_id: str
    duplicate: bool
    legs: list[LegSubmitted]


class Replayed(BaseModel):
    dead_letter_id: int
    original_job_id: str
    job_id: str
    job_name: str
    enqueued: bool  # False: this replay was already enqueued (the same request repeated)


class OrderIntake:
    def __init__(self, db: asyncpg.Pool, validator: Validator, record_queued: RecordQueued, enqueue: Enqueuer,
                 resolve_account: ResolveAccount, mf_facts: MfLookup | None = None) -> None:
        self.db = db
        self.validate = validator
        self.record_queued = record_queued
        self.enqueue = enqueue
        self.resolve_account = resolve_account
        self.mf_facts = mf_facts

    # --- the audit and enqueue stages --------------------------------------------------------------
    async def accept(self, plan: JobPlan, account_id: str) -> bool:
        """Audit row first, then the job; True when a new job was queued. A repeat of an accepted
        request must be the same request; one that already ran is not queued again (arq may have
        forgotten it, the audit has not)."""
        if not await self.record_queued(plan, account_id):
            existing = await audit.get_order(self.db, plan.job_id)
            if existing is not None and existing.payload != plan.payload:
                raise IdempotencyConflict(plan.job_id)
            if existing is not None and existing.status != "queued":
                return False
        return await self.enqueue(plan.job_name, plan.payload, plan.job_id)

    async def _submit(self, plan: JobPlan, account_id: str) -> Submitted:
        new = await self.accept(plan, account_id)
        return Submitted(job_id=plan.job_id, account_id=account_id, duplicate=not new)

    # --- orders -------------------------------------------------------------------------------------
    async def place(self, order: OrderRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(order.account_id, "account_id")
        order = order.model_copy(update={"account_id": account})  # the job id and payload name the account
        order = await self.validate.order(order)
        return await self._submit(plan_place(order, key), account)

    async def modify(self, req: ModifyRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        req = await self.validate.modify(req.model_copy(update={"account_id": account}))
        return await self._submit(plan_modify(req, key), account)

    async def cancel(self, req: CancelRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        return await self._submit(plan_cancel(req.model_copy(update={"account_id": account}), key), account)

    async def basket(self, basket: BasketRequest, key: str | None) -> BasketSubmitted:
        """Every leg is checked before anything is written or enqueued; then one job per leg."""
        account = await self.resolve_account(basket.account_id, "account_id")
        legs = []
        for i, leg in enumerate(basket.legs):
            leg_account = await self.resolve_account(leg.account_id or account, f"legs.{i}.account_id")
            legs.append(await self.validate.order(leg.model_copy(update={"account_id": leg_account}), f"legs.{i}."))
        plan = plan_basket(basket.model_copy(update={"account_id": account, "legs": legs}), key)
        new_basket = await audit.record_basket(self.db, plan, key)
        done = []
        for leg_plan in plan.legs:
            new = await self.accept(leg_plan, leg_plan.account_id or account)
            done.append(LegSubmitted(leg=leg_plan.payload.get("leg"), job_id=leg_plan.job_id, duplicate=not new))
        return BasketSubmitted(basket_id=plan.basket_id, account_id=account, duplicate=not new_basket, legs=done)

    # --- GTTs ---------------------------------------------------------------------------------------
    async def _gtt(self, req: GttRequest) -> GttRequest:
        account = await self.resolve_account(req.account_id, "account_id")
        return await self.validate.gtt(req.model_copy(update={"account_id": account}))

    async def place_gtt(self, req: GttRequest, key: str | None) -> Submitted:
        req = await self._gtt(req)
        return await self._submit(plan_place_gtt(req, key), req.account_id or "")

    async def modify_gtt(self, trigger_id: int, req: GttRequest, key: str | None) -> Submitted:
        req = await self._gtt(req)
        return await self._submit(plan_modify_gtt(trigger_id, req, key), req.account_id or "")

    async def delete_gtt(self, trigger_id: int, account_id: str | None, key: str | None) -> Submitted:
        account = await self.resolve_account(account_id, "account_id")
        return await self._submit(plan_delete_gtt(trigger_id, account, key), account)

    # --- mutual funds: checked against the account's MF snapshots when there are some -------------
    async def _facts(self, account: str) -> MfFacts:
        if self.mf_facts is None:
            return MfFacts(funds=None, holdings=None, sips=None)
        return await self.mf_facts(account)

    async def mf_order(self, req: MfOrderRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        facts = await self._facts(account)
        raise_issues(validate_mf_order(req, facts.funds, facts.held(req.tradingsymbol)))
        order = req.model_copy(update={"account_id": account})
        return await self._submit(plan_mf("mf_place", account, key, order=order), account)

    async def cancel_mf_order(self, order_id: str, account_id: str | None, key: str | None) -> Submitted:
        account = await self.resolve_account(account_id, "account_id")
        return await self._submit(plan_mf("mf_cancel", account, key, order_id=order_id), account)

    async def mf_sip(self, req: MfSipRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        facts = await self._facts(account)
        raise_issues(validate_sip(req, facts.funds, facts.held(req.tradingsymbol)))
        sip = req.model_copy(update={"account_id": account})
        return await self._submit(plan_mf("sip_place", account, key, sip=sip), account)

    async def modify_mf_sip(self, sip_id: str, req: MfSipModify, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        fund = (await self._facts(account)).fund_of_sip(sip_id)
        if fund is not None and req.amount is not None:
            raise_issues(sip_amount_issues(fund, req.amount))
        change = req.model_copy(update={"account_id": account})
        return await self._submit(plan_mf("sip_modify", account, key, sip_id=sip_id, modify=change), account)

    async def cancel_mf_sip(self, sip_id: str, account_id: str | None, key: str | None) -> Submitted:
        account = await self.resolve_account(account_id, "account_id")
        return await self._submit(plan_mf("sip_cancel", account, key, sip_id=sip_id), account)

    # --- margin previews (a read at Kite: validated and enqueued, nothing to audit) -----------------
    async def margins(self, req: MarginsRequest, key: str | None) -> Submitted:
        account = await self.resolve_account(req.account_id, "account_id")
        legs = await self.validate.legs(req.orders, account, "orders.")
        req = req.model_copy(update={"account_id": account,
                                     "orders": [leg.model_copy(update={"account_id": None}) for leg in legs]})
        job_id = margins_job_id(key, account)
        new = await self.enqueue(JOB_ORDER_MARGINS, MarginsPayload(request=req).model_dump(mode="json"), job_id)
        return Submitted(job_id=job_id, account_id=account, duplicate=not new)

    # --- dead-letter replays ------------------------------------------------------------------------
    async def replay(self, ref: int | str, replay_number: int | None = None) -> Replayed:
        """The dead letter's job again under a new id (its audit row first, for order jobs).
        `replay_number` (default: next) makes a repeated replay request idempotent: the same number
        gives the same job."""
        letter = await get_dead_letter(self.db, ref)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {ref}")
        number = replay_number if replay_number is not None else letter.replay_count + 1
        job_id, payload = replay_payload(letter, number)
        kind = _AUDITED_KINDS.get(letter.job_name)
        if kind is not None and letter.account_id:
            await audit.ensure(self.db, _replay_row(kind, job_id, letter.account_id, payload))
        enqueued = await self.enqueue(letter.job_name, payload, job_id)
        await mark_replayed(self.db, letter.id, job_id, number)
        return Replayed(dead_letter_id=letter.id, original_job_id=letter.job_id, job_id=job_id,
                        job_name=letter.job_name, enqueued=enqueued)


def _replay_row(kind: str, job_id: str, account_id: str, payload: dict[str, Any]) -> audit.RequestRow:
    return audit.RequestRow(job_id=job_id, kind=kind, account_id=account_id, payload=payload,
                            tag=kite_tag(job_id) if kind == "place" else None,
                            idempotency_key=payload.get("idempotency_key"))
