"""Planning: capacity, pins, balance, failover and low churn."""

from __future__ import annotations

from ticker.streamer.control.placement import Plan, Slot, Wanted, plan_assignments

TOKENS = list(range(1_000_000, 1_000_000 + 600 * 256, 256))


def wanted(tokens, mode="full", pins=None):
    pins = pins or {}
    return [Wanted(t, mode, pins.get(t)) for t in tokens]


def moved(a: Plan, b: Plan) -> set[int]:
    before, after = a.account_of(), b.account_of()
    return {t for t in before.keys() & after.keys() if before[t] != after[t]}


def test_every_token_placed_once_and_spread_over_accounts():
    slots = [Slot("a", 9000), Slot("b", 9000), Slot("c", 9000)]
    plan = plan_assignments(wanted(TOKENS), slots)
    assert plan.placed == len(TOKENS) and not plan.unplaced
    assert sorted(plan.account_of()) == sorted(TOKENS)
    loads = sorted(len(plan.tokens_of(s.account_id)) for s in slots)
    assert loads[0] > 0.25 * len(TOKENS)  # even in expectation: no account starved


def test_same_inputs_give_same_plan_in_any_order():
    slots = [Slot("a", 9000), Slot("b", 9000)]
    one = plan_assignments(wanted(TOKENS), slots)
    two = plan_assignments(wanted(list(reversed(TOKENS))), list(reversed(slots)))
    assert one.account_of() == two.account_of()


def test_capacity_is_never_exceeded_and_overflow_is_reported():
    slots = [Slot("a", 100), Slot("b", 150)]
    plan = plan_assignments(wanted(TOKENS[:300]), slots)
    assert len(plan.tokens_of("a")) == 100 and len(plan.tokens_of("b")) == 150
    assert len(plan.unplaced) == 50


def test_pinned_account_wins_while_healthy_and_has_room():
    pins = {t: "b" for t in TOKENS[:50]}
    plan = plan_assignments(wanted(TOKENS[:200], pins=pins), [Slot("a", 9000), Slot("b", 9000)])
    assert all(plan.account_of()[t] == "b" for t in TOKENS[:50])
    unhealthy = plan_assignments(wanted(TOKENS[:200], pins=pins), [Slot("a", 9000), Slot("b", 9000, False)])
    assert set(unhealthy.account_of().values()) == {"a"}
    full = plan_assignments(wanted(TOKENS[:50], pins=pins), [Slot("a", 9000), Slot("b", 10)])
    assert sum(1 for t in TOKENS[:50] if full.account_of()[t] == "b") == 10


def test_unknown_pin_is_ignored():
    plan = plan_assignments(wanted(TOKENS[:10], pins={TOKENS[0]: "nobody"}), [Slot("a", 10)])
    assert plan.account_of()[TOKENS[0]] == "a"


def test_adding_and_removing_tokens_moves_nothing_else():
    slots = [Slot("a", 9000), Slot("b", 9000), Slot("c", 9000)]
    base = plan_assignments(wanted(TOKENS[:400]), slots)
    grown = plan_assignments(wanted(TOKENS[:500]), slots)
    shrunk = plan_assignments(wanted(TOKENS[100:400]), slots)
    assert not moved(base, grown) and not moved(base, shrunk)


def test_failover_moves_only_the_sick_accounts_tokens_and_they_come_back():
    healthy = [Slot("a", 9000), Slot("b", 9000), Slot("c", 9000)]
    base = plan_assignments(wanted(TOKENS), healthy)
    sick = plan_assignments(wanted(TOKENS), [Slot("a", 9000), Slot("b", 9000, healthy=False), Slot("c", 9000)])
    assert not sick.tokens_of("b") and sick.placed == len(TOKENS)
    assert moved(base, sick) == set(base.tokens_of("b"))
    back = plan_assignments(wanted(TOKENS), healthy)
    assert back.account_of() == base.account_of()


def test_duplicates_keep_the_first_mode_and_no_accounts_leaves_everything_unplaced():
    plan = plan_assignments([Wanted(1025, "ltp"), Wanted(1025, "full")], [Slot("a", 5)])
    assert plan.tokens_of("a") == {1025: "ltp"}
    none = plan_assignments(wanted(TOKENS[:5]), [Slot("a", 5, healthy=False)])
    assert none.unplaced == sorted(TOKENS[:5]) and none.placed == 0
