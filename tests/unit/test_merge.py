"""The merge of overlapping imports: worked examples and hypothesis properties."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aisd.kontomatik._models import Account, CreditCard, ImportResult, MoneyTransaction
from aisd.merge import (
    NOTHING_COVERED,
    MergePlan,
    apply_plan,
    coverage_start,
    match_key,
    normalise_title,
    owner_mismatch,
    plan_merge,
    rebuild,
)
from aisd.merge import coverages as merge_coverages

D0 = date(2023, 5, 10)

Stored = list[tuple[int, MoneyTransaction]]


def tx(
    day: int,
    amount: str,
    title: str,
    *,
    status: str | None = "DONE",
    booked: int | None = 0,
    balance: str | None = None,
    labels: tuple[str, ...] = (),
    party_iban: str | None = None,
) -> MoneyTransaction:
    on = D0 + timedelta(days=day)
    return MoneyTransaction(
        transaction_on=on,
        booked_on=None if booked is None else on + timedelta(days=booked),
        amount=Decimal(amount),
        balance=None if balance is None else Decimal(balance),
        title=title,
        party_iban=party_iban,
        status=status,
        labels=labels,
    )


def apply(stored: Stored, plan: MergePlan) -> Stored:
    """What a store does with a plan: the same effect, on a list."""
    removed = set(plan.removed)
    updates = dict(plan.modified)
    out = [(i, updates.get(i, t)) for i, t in stored if i not in removed]
    next_id = max((i for i, _ in stored), default=0) + 1
    out.extend((next_id + n, t) for n, t in enumerate(plan.added))
    return out


def contents(rows: Stored, *, since: date | None = None) -> Counter[MoneyTransaction]:
    return Counter(t for _, t in rows if since is None or t.transaction_on >= since)


def numbered(txs: Sequence[MoneyTransaction]) -> Stored:
    return [(i + 1, t) for i, t in enumerate(txs)]


# -- worked examples ---------------------------------------------------------------------------


def test_title_normalisation_folds_case_space_and_unicode_forms() -> None:
    assert normalise_title("  BILETOMAT  Bilet\tZTM ") == "biletomat bilet ztm"
    assert normalise_title("Wpłata") == normalise_title("WPŁATA")
    assert normalise_title("ﬁ") == "fi"  # NFKC ligature


def test_match_key_ignores_booking_facts_and_party_iban() -> None:
    pending = tx(0, "-5.00", "Kawa", status="PENDING", booked=None)
    booked = tx(0, "-5.00", "KAWA ", balance="10.00", labels=("food",), party_iban="PL1")
    assert match_key(pending) == match_key(booked)
    assert match_key(tx(0, "-5.00", "Kawa")) != match_key(tx(1, "-5.00", "Kawa"))
    assert match_key(tx(0, "-5.00", "Kawa")) != match_key(tx(0, "-5.01", "Kawa"))


def test_first_import_adds_everything() -> None:
    incoming = [tx(0, "1.00", "a"), tx(0, "1.00", "a"), tx(1, "2.00", "b")]
    plan = plan_merge([], incoming, D0)
    assert plan == MergePlan(added=incoming, modified=[], removed=[], unchanged=0)


def test_pending_that_booked_is_modified_not_duplicated() -> None:
    pending = tx(3, "-20.00", "Zwrot", status="PENDING", booked=None)
    booked = replace(pending, status="DONE", booked_on=pending.transaction_on, balance=Decimal(5))
    plan = plan_merge([(7, pending)], [booked], D0)
    assert plan == MergePlan(added=[], modified=[(7, booked)], removed=[], unchanged=0)


def test_vanished_inside_window_is_removed_but_older_rows_stay() -> None:
    old = tx(-5, "3.00", "old")
    gone = tx(2, "4.00", "gone")
    kept = tx(3, "5.00", "kept")
    plan = plan_merge([(1, old), (2, gone), (3, kept)], [kept], D0)
    assert plan == MergePlan(added=[], modified=[], removed=[2], unchanged=1)


def test_identical_pair_is_kept_twice_and_repeat_changes_nothing() -> None:
    pair = [tx(1, "-2.40", "BILET"), tx(1, "-2.40", "BILET")]
    first = plan_merge([], pair, D0)
    assert len(first.added) == 2
    stored = apply([], first)
    again = plan_merge(stored, pair, D0)
    assert again == MergePlan(unchanged=2)


def test_third_identical_row_is_added_and_a_dropped_one_removed() -> None:
    one = tx(1, "-2.40", "BILET")
    stored = numbered([one, one])
    assert plan_merge(stored, [one, one, one], D0) == MergePlan(added=[one], unchanged=2)
    assert plan_merge(stored, [one], D0) == MergePlan(removed=[2], unchanged=1)


def test_incoming_before_coverage_matches_instead_of_duplicating() -> None:
    early_pending = tx(-2, "9.99", "shop", status="PENDING", booked=None)
    early_booked = replace(early_pending, status="DONE", booked_on=D0)
    plan = plan_merge([(4, early_pending)], [early_booked], D0)
    assert plan == MergePlan(modified=[(4, early_booked)])
    assert plan_merge([(4, early_booked)], [early_booked], D0) == MergePlan(unchanged=1)


def test_same_day_reorder_of_distinct_rows_is_not_a_change() -> None:
    a = tx(0, "-1.00", "x", party_iban="PL1")
    b = tx(0, "-1.00", "x", party_iban="PL2")
    plan = plan_merge(numbered([a, b]), [b, a], D0)
    assert plan == MergePlan(unchanged=2)


def test_ordinal_pairs_remaining_rows_in_stable_order() -> None:
    a = tx(0, "-1.00", "x", status="PENDING", booked=None)
    b = tx(0, "-1.00", "x", status="PENDING", booked=None, labels=("l",))
    a2 = replace(a, status="DONE")
    b2 = replace(b, status="DONE")
    plan = plan_merge([(1, a), (2, b)], [a2, b2], D0)
    assert plan.modified == [(1, a2), (2, b2)]
    assert plan.changes == 2


# -- properties --------------------------------------------------------------------------------

transactions = st.builds(
    tx,
    day=st.integers(-3, 3),
    amount=st.sampled_from(["-1.00", "2.50", "-2.5"]),
    title=st.sampled_from(["Kawa", "KAWA ", "Czynsz"]),
    status=st.sampled_from(["DONE", "PENDING", None]),
    booked=st.sampled_from([None, 0, 1]),
    balance=st.sampled_from([None, "10.00"]),
    labels=st.sampled_from([(), ("a",), ("a", "b")]),
    party_iban=st.sampled_from([None, "PL1"]),
)
imports = st.lists(transactions, max_size=12)
coverages = st.integers(-4, 4).map(lambda d: D0 + timedelta(days=d))


@given(imports, imports, coverages)
def test_merge_is_idempotent(
    first: list[MoneyTransaction], second: list[MoneyTransaction], cov: date
) -> None:
    stored = apply(apply([], plan_merge([], first, D0)), plan_merge([], second, cov))
    after = apply(stored, plan_merge(stored, second, cov))
    again = plan_merge(after, second, cov)
    assert again == MergePlan(unchanged=len(second))


@given(imports, imports, coverages)
def test_each_stored_row_survives_exactly_once(
    first: list[MoneyTransaction], second: list[MoneyTransaction], cov: date
) -> None:
    stored = numbered(first)
    plan = plan_merge(stored, second, cov)
    ids = {i for i, _ in stored}
    touched = [i for i, _ in plan.modified] + plan.removed
    assert len(touched) == len(set(touched))
    assert set(touched) <= ids
    assert len(second) == len(plan.added) + len(plan.modified) + plan.unchanged
    assert all(t.transaction_on >= cov for i, t in stored if i in set(plan.removed))
    after = apply(stored, plan)
    after_ids = [i for i, _ in after]
    assert len(after_ids) == len(set(after_ids))
    assert set(after_ids) >= ids - set(plan.removed)
    # Each stored row is unchanged, modified, removed, or untouched before the window.
    untouched_old = len(stored) - plan.unchanged - len(plan.modified) - len(plan.removed)
    assert 0 <= untouched_old <= sum(1 for _, t in stored if t.transaction_on < cov)


@given(imports, imports, coverages)
def test_newest_import_is_the_truth_inside_its_window(
    first: list[MoneyTransaction], second: list[MoneyTransaction], cov: date
) -> None:
    before = apply([], plan_merge([], first, D0 - timedelta(days=10)))
    after = apply(before, plan_merge(before, second, cov))
    assert contents(after, since=cov) == Counter(t for t in second if t.transaction_on >= cov)
    # Everything the import says is present, and nothing old outside the window was lost.
    assert contents(after) >= Counter(second)
    old_ids = {i for i, t in before if t.transaction_on < cov}
    after_old = {i: t for i, t in after if i in old_ids}
    assert set(after_old) == old_ids
    assert all(t.transaction_on < cov for t in after_old.values())


def _result(txs: Sequence[MoneyTransaction]) -> ImportResult:
    return ImportResult(accounts=(Account("PL1", "A", "PLN", None, None, transactions=tuple(txs)),))


@given(st.lists(st.tuples(imports, coverages), min_size=1, max_size=4))
def test_rebuild_equals_the_incremental_merge(
    replies: list[tuple[list[MoneyTransaction], date]],
) -> None:
    # What the store holds after merging each import in turn, over the dates the pipeline
    # takes it to cover (ids from its own counter)...
    stored: list[tuple[int, MoneyTransaction]] = []
    ids = itertools.count(1000)
    for txs, since in replies:
        cov = merge_coverages(_result(txs), since)[("account", "PL1")]
        stored = apply_plan(stored, plan_merge(stored, txs, cov), ids)
    # ...is what the pure rebuild yields, so a final merge over all dates changes nothing.
    view = rebuild((_result(txs), cov) for txs, cov in replies)
    [account] = view.accounts
    assert Counter(account.transactions) == Counter(tx for _, tx in stored)
    final = plan_merge(stored, account.transactions, date.min)
    assert final == MergePlan(unchanged=len(stored))


# -- what an import covers ---------------------------------------------------------------------


@given(st.dates(), st.none() | st.dates(), st.none() | st.dates(), st.booleans())
def test_coverage_never_reaches_before_the_day_after_since_nor_what_was_not_returned(
    since: date, own: date | None, reply: date | None, partial: bool
) -> None:
    start = coverage_start(since, partial=partial, own_oldest=own, reply_oldest=reply)
    oldest = own if partial else reply
    if oldest is None:
        assert start == NOTHING_COVERED
    else:
        assert start > since
        assert start >= oldest
        assert start in (since + timedelta(days=1), oldest)


def _tx(day: date, amount: str, title: str) -> MoneyTransaction:
    return MoneyTransaction(day, None, Decimal(amount), None, title)


def test_a_partial_account_removes_nothing_older_than_what_it_returned() -> None:
    full = [_tx(D0 + timedelta(days=d), "1.00", f"t{d}") for d in range(10)]
    stored = apply([], plan_merge([], full, D0))
    # Cut short: only the last three days came back, and one of them lost a row.
    short = [t for t in full if t.transaction_on >= D0 + timedelta(days=7)][:-1]
    result = ImportResult(
        accounts=(
            Account("PL1", None, "PLN", None, None, partial_due_to_timeout=True,
                    transactions=tuple(short)),
        )
    )  # fmt: skip
    cov = merge_coverages(result, D0)[("account", "PL1")]
    assert cov == D0 + timedelta(days=7)
    plan = plan_merge(stored, short, cov)
    removed = {t for i, t in stored if i in set(plan.removed)}
    assert removed == {full[-1]}


def test_the_boundary_day_of_a_refresh_is_never_removed() -> None:
    since = D0 + timedelta(days=3)
    stored = apply([], plan_merge([], [_tx(since, "5.00", "edge"), _tx(D0, "1.00", "old")], D0))
    # Upstream's window was one day short: the reply starts the day after since.
    reply = [_tx(since + timedelta(days=1), "2.00", "new")]
    result = ImportResult(accounts=(Account("PL1", None, "PLN", None, None,
                                            transactions=tuple(reply)),))  # fmt: skip
    plan = plan_merge(stored, reply, merge_coverages(result, since)[("account", "PL1")])
    assert plan.removed == []
    assert [t.title for t in plan.added] == ["new"]


def test_rebuild_merges_cards_by_card_id_beside_accounts() -> None:
    def card(*txs: MoneyTransaction, number: str = "5100 **** 1234") -> CreditCard:
        return CreditCard("C1", "Visa", number, transactions=txs)

    first = ImportResult(credit_cards=(card(_tx(D0, "-1.00", "a"), _tx(D0, "-2.00", "b")),))
    # The number is masked differently later, the card id stays: the same card.
    second = ImportResult(
        credit_cards=(card(_tx(D0 + timedelta(days=1), "-3.00", "c"), number="**** 1234"),)
    )
    view = rebuild([(first, D0), (second, D0 - timedelta(days=1))])
    assert view.accounts == ()
    (merged,) = view.credit_cards
    assert merged.number == "**** 1234"
    assert sorted(t.title for t in merged.transactions) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("echo", "token_echo", "refused"),
    [
        (None, None, False),  # nothing echoed: nothing to check
        ("alice", None, False),
        ("alice", "kontomatik-1", False),
        ("eve", None, True),  # the widget was given someone else's id
        ("eve", "eve", True),
        ("kontomatik-1", None, False),  # the widget was given none
        ("kontomatik-1", "kontomatik-1", False),
        ("kontomatik-2", "kontomatik-1", True),  # the same token now echoes another owner
    ],
)
def test_owner_mismatch(echo: str | None, token_echo: str | None, refused: bool) -> None:
    assert owner_mismatch("alice", echo, token_echo) is refused


@given(st.lists(st.tuples(imports, imports, st.booleans(), coverages), min_size=1, max_size=4))
def test_rebuild_of_accounts_and_cards_equals_the_pipelines_merges(
    replies: list[tuple[list[MoneyTransaction], list[MoneyTransaction], bool, date]],
) -> None:
    """Partial or not, an account and a card merged reply by reply over the dates each reply
    covers end up as the rebuilt view; and no row dated before a partial reply's own oldest
    date is ever removed by it."""
    stored: dict[tuple[str, str], list[tuple[int, MoneyTransaction]]] = {}
    ids = itertools.count(1000)
    results = []
    for on_account, on_card, partial, since in replies:
        result = ImportResult(
            accounts=(Account("PL1", None, "PLN", None, None, partial_due_to_timeout=partial,
                              transactions=tuple(on_account)),),
            credit_cards=(CreditCard("C1", None, None, partial_due_to_timeout=partial,
                                     transactions=tuple(on_card)),),
        )  # fmt: skip
        results.append((result, since))
        covered = merge_coverages(result, since)
        for item, key in ((on_account, ("account", "PL1")), (on_card, ("card", "C1"))):
            rows = stored.get(key, [])
            plan = plan_merge(rows, item, covered[key])
            if partial:
                oldest = min((t.transaction_on for t in item), default=None)
                gone = [t for i, t in rows if i in set(plan.removed)]
                assert oldest is not None or not gone
                assert all(oldest is not None and t.transaction_on >= oldest for t in gone)
            stored[key] = apply_plan(rows, plan, ids)
    view = rebuild(results)
    [account] = view.accounts
    [card] = view.credit_cards
    assert Counter(account.transactions) == Counter(t for _, t in stored[("account", "PL1")])
    assert Counter(card.transactions) == Counter(t for _, t in stored[("card", "C1")])
