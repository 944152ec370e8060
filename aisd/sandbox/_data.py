"""The sandbox's bank data: pure and deterministic from the seed, the IBAN and the clock.

Every account is a function of ``(seed, iban)`` and its transactions a function of
``(seed, iban, day)``: nothing is stored, so any two imports agree on the past and new
transactions appear as the clock advances. Entries of the last days are pending and book
later; a few pending ones (``ghost`` entries) vanish instead of booking. Some days hold two
identical-looking entries (same day, amount and title) to exercise de-duplication.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache

from aisd.kontomatik._models import Account, CreditCard, MoneyTransaction, Owner

DONE = "DONE"
PENDING = "PENDING"

# Accounts are opened between these dates: early enough for a year of history in any
# plausible run, late enough to keep the first balance computation cheap.
_EPOCH = date(2022, 1, 1)
_EPOCH_SPREAD_DAYS = 365

# Entries a bank has not yet booked are listed this many days at most (booking lag 1-2 days).
_MAX_BOOKING_LAG = 2

_BANK_SORT_CODES = ("1020", "1140", "1050", "1240", "2490", "1090", "1160")
_EUR_MARK = "9"  # first digit of the 16-digit account number of EUR accounts

_FIRST_NAMES_F = ("Maria", "Anna", "Katarzyna", "Małgorzata", "Agnieszka", "Zofia", "Żaneta")
_FIRST_NAMES_M = ("Tadeusz", "Piotr", "Krzysztof", "Łukasz", "Paweł", "Michał", "Józef")
_SURNAMES = (
    ("Sochacka", "Sochacki"),
    ("Krajowa", "Krajowy"),
    ("Wiśniewska", "Wiśniewski"),
    ("Zielińska", "Zieliński"),
    ("Dąbrowska", "Dąbrowski"),
    ("Kaczmarek", "Kaczmarek"),
    ("Woźniak", "Woźniak"),
)
_STREETS = ("Stolarska", "Długa", "Źródlana", "Ogrodowa", "Kościuszki", "Żeromskiego")
_CITIES = (
    ("33-543", "Jaworzno"),
    ("00-950", "Warszawa"),
    ("30-001", "Kraków"),
    ("80-001", "Gdańsk"),
    ("50-001", "Wrocław"),
    ("90-001", "Łódź"),
)


@dataclass(frozen=True, slots=True)
class _Template:
    title: str
    kind: str
    labels: tuple[str, ...]
    low_cents: int  # signed: negative for debits
    high_cents: int
    party: str | None = None
    party_iban: str | None = None


_SALARY = _Template(
    "Wynagrodzenie za pracę",
    "PRZELEW PRZYCHODZĄCY",
    ("salary", "regular wage"),
    650_000,
    920_000,
    "Kontomatik Sp. z o.o. ul. Prosta 51, 00-838 Warszawa",
    "PL61109010140000071219812874",
)
_RENT = _Template(
    "Przelew za czynsz",
    "PRZELEW ZEWNĘTRZNY",
    ("monthly", "housing"),
    -210_000,
    -210_000,
    "Spółdzielnia Mieszkaniowa Zacisze",
    "PL27114020040000300201355387",
)
_ZUS = _Template(
    "Składka ZUS, deklaracja nr.: 203721",
    "PRZELEW ZUS",
    ("zus", "tax"),
    -155_000,
    -155_000,
    "Zakład Ubezpieczeń Społecznych",
    "PL83101010230000261395100000",
)
_CARD_FEE = _Template("Opłata za kartę", "OPŁATA", ("fee",), -600, -600)

_DAILY: tuple[tuple[_Template, int], ...] = (
    (_Template("Zakupy w Żabce", "ZAKUP PRZY UŻYCIU KARTY", ("grocery",), -4_999, -899), 9),
    (
        _Template(
            "JMP S.A. BIEDRONKA /BIALYSTOK",
            "TRANSAKCJA KARTĄ PŁATNICZĄ",
            ("grocery",),
            -25_000,
            -1_500,
        ),
        7,
    ),
    (
        _Template(
            "Płatność kartą", "ZAPŁATA KARTĄ", ("apparel",), -39_999, -4_999, "LPP CROPP GORNI PL"
        ),
        3,
    ),
    (
        _Template(
            "BILETOMAT BILET ZTM Warszawa",
            "MDS - płatność kartą - kraj",
            ("public transport",),
            -680,
            -340,
            "MENNICA AUTOMAT",
        ),
        5,
    ),
    (
        _Template(
            "WPŁATA DLA SERWISU DOTPAY PIZZAPORTAL.PL",
            "PRZELEW MTRANSFER WYCHODZACY",
            ("food with delivery",),
            -12_000,
            -3_500,
        ),
        3,
    ),
    (
        _Template("WPLATA", "Wpłata gotówkowa w kasie", ("cash deposit",), 5_000, 80_000),
        1,
    ),
    (
        _Template(
            "BLIK WYPŁATA ATM KRAJOWY", "WYPŁATA Z BANKOMATU", ("cash withdrawal",), -50_000, -5_000
        ),
        2,
    ),
    (
        _Template(
            "PUB REST/KRAKÓW DATA TRANSAKCJI", "ZAPŁATA KARTĄ", ("nightlife",), -18_000, -2_500
        ),
        2,
    ),
    (
        _Template(
            "Usługi medyczne", "PRZELEW ZEWNĘTRZNY", ("healthcare",), -35_000, -9_000, "LUX MED"
        ),
        1,
    ),
    (_Template("SWIAT PRASY GDYNIA", "TRANSAKCJA KARTĄ PŁATNICZĄ", ("press",), -3_500, -600), 2),
    (
        _Template(
            "Zwrot za Sylwestra",
            "PRZELEW PRZYCHODZĄCY",
            ("compensation",),
            2_000,
            15_000,
            "Jan Kowalski Dunikowskiego 23B, 01-200 Warszawa",
            "PL83130000002076700146310001",
        ),
        1,
    ),
)
_DAILY_TEMPLATES = tuple(t for t, _ in _DAILY)
_DAILY_WEIGHTS = tuple(w for _, w in _DAILY)


@dataclass(frozen=True, slots=True)
class Entry:
    """One transaction as the bank knows it, before the clock decides what is visible."""

    day: date
    minute: int  # minute of the day at which it appears
    lag_days: int  # booked this many days after ``day``
    ghost: bool  # never books: visible only while pending
    amount: Decimal
    template: _Template

    def visible_at(self, now: datetime) -> bool:
        """Whether the bank shows this entry at ``now``."""
        if datetime.combine(self.day, time(), now.tzinfo) + timedelta(minutes=self.minute) > now:
            return False
        return not (self.ghost and self.booked_on <= now.date())

    @property
    def booked_on(self) -> date:
        """The day the entry books (or would book, for a ghost)."""
        return self.day + timedelta(days=self.lag_days)


@dataclass(frozen=True, slots=True)
class AccountProfile:
    """The fixed facts of one account, a function of ``(seed, iban)``."""

    iban: str
    currency: str
    name: str
    friendly_name: str
    opened_on: date
    opening_cents: int
    direct_debit: bool


def _rng(*parts: object) -> random.Random:
    # A string seed is hashed by SHA-512 inside Random: stable across runs and processes.
    return random.Random(":".join(str(p) for p in parts))


def iban_check_digits(bban: str) -> str:
    """The two ISO 13616 check digits of a Polish IBAN with the given 24-digit BBAN."""
    # P=25, L=21, then "00" while computing.
    remainder = int(bban + "252100") % 97
    return f"{98 - remainder:02d}"


def is_valid_pl_iban(iban: str) -> bool:
    """Whether ``iban`` is a Polish IBAN with correct check digits."""
    if len(iban) != 28 or not iban.startswith("PL") or not iban[2:].isdigit():
        return False
    return int(iban[4:] + "2521" + iban[2:4]) % 97 == 1


def _sort_code(rng: random.Random) -> str:
    # Polish sort codes end with a check digit weighted 3,9,7,1,3,9,7.
    head = rng.choice(_BANK_SORT_CODES) + f"{rng.randrange(1000):03d}"
    weights = (3, 9, 7, 1, 3, 9, 7)
    total = sum(int(d) * w for d, w in zip(head, weights, strict=True))
    return head + str((10 - total % 10) % 10)


def make_iban(seed: int, owner_external_id: str, index: int) -> str:
    """A valid-looking Polish IBAN for the owner's ``index``-th account.

    Odd indexes are EUR accounts, the others PLN.
    """
    rng = _rng("iban", seed, owner_external_id, index)
    number = f"{rng.randrange(10**15):015d}"
    first = _EUR_MARK if index % 2 == 1 else str(rng.randrange(9))
    bban = _sort_code(rng) + first + number
    return "PL" + iban_check_digits(bban) + bban


def currency_of(iban: str) -> str:
    """The currency of an account: EUR when its account number starts with 9, else PLN."""
    return "EUR" if iban[12:13] == _EUR_MARK else "PLN"


@lru_cache(maxsize=4096)
def account_profile(seed: int, iban: str) -> AccountProfile:
    """The fixed facts of the account ``iban``."""
    rng = _rng("account", seed, iban)
    currency = currency_of(iban)
    opened_on = _EPOCH + timedelta(days=rng.randrange(_EPOCH_SPREAD_DAYS))
    if currency == "EUR":
        name, friendly, opening = "Konto walutowe EUR", "Konto EUR", rng.randrange(50_000, 900_000)
    else:
        name, friendly, opening = "Konto osobiste", "Konto", rng.randrange(200_000, 3_000_000)
    return AccountProfile(
        iban=iban,
        currency=currency,
        name=name,
        friendly_name=friendly,
        opened_on=opened_on,
        opening_cents=opening,
        direct_debit=rng.random() < 0.7,
    )


def owners_of(
    seed: int, owner_external_id: str, *, co_owner_rate: float = 0.3, personal: bool = False
) -> tuple[Owner, ...]:
    """The people behind an ``ownerExternalId``: one owner, sometimes with a co-owner, and
    with ``personal`` the personal fields some banks add."""
    rng = _rng("owner", seed, owner_external_id)
    people: list[Owner] = []
    for kind in ("OWNER", "CO_OWNER"):
        female = rng.random() < 0.5
        first = rng.choice(_FIRST_NAMES_F if female else _FIRST_NAMES_M)
        surname = rng.choice(_SURNAMES)[0 if female else 1]
        street, (postcode, city) = rng.choice(_STREETS), rng.choice(_CITIES)
        address = f"{street} {rng.randrange(1, 120)}/{rng.randrange(1, 40)} {postcode} {city}"
        extra = _personal_fields(seed, owner_external_id, kind, first) if personal else ()
        people.append(Owner(name=f"{first} {surname}", kind=kind, address=address, extra=extra))
        if rng.random() < 1 - co_owner_rate:
            break
    return tuple(people)


def _personal_fields(
    seed: int, owner_external_id: str, kind: str, first: str
) -> tuple[tuple[str, str], ...]:
    # A separate stream: turning the fields on must not change who the owners are.
    rng = _rng("person", seed, owner_external_id, kind)
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(50 * 365))
    month = born.month + (20 if born.year >= 2000 else 0)
    pesel = f"{born.year % 100:02d}{month:02d}{born.day:02d}{rng.randrange(10**5):05d}"
    return (
        ("polishPesel", pesel),
        (
            "phone",
            f"+48 {rng.randrange(500, 800)} {rng.randrange(1000):03d} {rng.randrange(1000):03d}",
        ),
        ("email", f"{first.lower()}.{rng.randrange(100, 999)}@example.pl"),
        ("birthDate", born.isoformat()),
        ("citizenship", "PL"),
    )


def _scaled(cents: int, currency: str) -> int:
    # EUR accounts see the same life at roughly a quarter of the PLN amounts.
    return cents // 4 if currency == "EUR" else cents


def _entry(
    rng: random.Random, day: date, template: _Template, currency: str, *, ghostable: bool
) -> Entry:
    cents = _scaled(rng.randint(template.low_cents, template.high_cents), currency)
    return Entry(
        day=day,
        minute=rng.randrange(24 * 60),
        lag_days=1 if rng.random() < 0.7 else _MAX_BOOKING_LAG,
        ghost=ghostable and rng.random() < 0.04,
        amount=Decimal(cents).scaleb(-2),
        template=template,
    )


@lru_cache(maxsize=65536)
def day_entries(seed: int, iban: str, day: date) -> tuple[Entry, ...]:
    """Every entry of ``day`` on the account, oldest first (before ``opened_on``: none)."""
    profile = account_profile(seed, iban)
    if day < profile.opened_on:
        return ()
    rng = _rng("day", seed, iban, day.isoformat())
    currency = profile.currency
    entries: list[Entry] = []
    monthly = {1: _CARD_FEE, 5: _RENT, 10: _SALARY, 15: _ZUS}
    template = monthly.get(day.day)
    if template is not None and (currency == "PLN" or template in (_SALARY, _CARD_FEE)):
        entries.append(_entry(rng, day, template, currency, ghostable=False))
    count = rng.choices((0, 1, 2, 3), weights=(35, 35, 20, 10))[0]
    for template in rng.choices(_DAILY_TEMPLATES, weights=_DAILY_WEIGHTS, k=count):
        entries.append(_entry(rng, day, template, currency, ghostable=True))
    if count and rng.random() < 0.05:
        twin = entries[-1]
        entries.append(
            Entry(
                day,
                rng.randrange(twin.minute, 24 * 60),
                twin.lag_days,
                False,
                twin.amount,
                twin.template,
            )
        )
    entries.sort(key=lambda e: e.minute)
    return tuple(entries)


@lru_cache(maxsize=65536)
def _booked_cents(seed: int, iban: str, day: date) -> int:
    return sum(int(e.amount.scaleb(2)) for e in day_entries(seed, iban, day) if not e.ghost)


@lru_cache(maxsize=65536)
def _month_cents(seed: int, iban: str, year: int, month: int) -> int:
    day = date(year, month, 1)
    total = 0
    while day.month == month:
        total += _booked_cents(seed, iban, day)
        day += timedelta(days=1)
    return total


@lru_cache(maxsize=4096)
def _month_starts(seed: int, iban: str) -> list[int]:
    """The account's balance at the start of each month from its opening month on, extended
    by :func:`_balance_cents_before` as far as it is asked (each import would otherwise add
    up every month since the opening again)."""
    return [account_profile(seed, iban).opening_cents]


def _balance_cents_before(seed: int, iban: str, day: date) -> int:
    """Balance at the start of ``day``, counting every non-ghost entry before it.

    Valid only for days whose earlier entries are all past their booking window, where
    non-ghost entries are exactly the visible ones.
    """
    opened = account_profile(seed, iban).opened_on
    first = opened.year * 12 + opened.month - 1
    starts = _month_starts(seed, iban)
    wanted = day.year * 12 + day.month - 1 - first
    while len(starts) <= wanted:
        year, month = divmod(first + len(starts) - 1, 12)
        starts.append(starts[-1] + _month_cents(seed, iban, year, month + 1))
    total = starts[max(0, wanted)]
    cursor = date(day.year, day.month, 1)
    while cursor < day:
        total += _booked_cents(seed, iban, cursor)
        cursor += timedelta(days=1)
    return total


def _transaction(entry: Entry, balance_cents: int, now: datetime) -> MoneyTransaction:
    template = entry.template
    booked = entry.booked_on <= now.date()
    return MoneyTransaction(
        transaction_on=entry.day,
        booked_on=entry.booked_on if booked else None,
        amount=entry.amount,
        balance=Decimal(balance_cents).scaleb(-2),
        title=template.title,
        party=template.party,
        party_iban=template.party_iban,
        kind=template.kind,
        status=DONE if booked else PENDING,
        labels=template.labels,
    )


def account_view(
    seed: int, iban: str, owners: Sequence[Owner], *, now: datetime, since: date
) -> Account:
    """The account as an import at ``now`` sees it, with transactions on or after ``since``.

    Transactions are newest first; each ``currencyBalance`` is the balance after it, and the
    account's balance is that of the newest entry (pending ones included).
    """
    profile = account_profile(seed, iban)
    today = now.date()
    # Before this day every entry is booked or gone, so balances come from cached sums.
    settled = today - timedelta(days=_MAX_BOOKING_LAG)
    start = min(max(since, profile.opened_on), settled)
    balance = _balance_cents_before(seed, iban, start)
    listed: list[MoneyTransaction] = []
    day = start
    while day <= today:
        for entry in day_entries(seed, iban, day):
            if entry.visible_at(now):
                balance += int(entry.amount.scaleb(2))
                if day >= since:
                    listed.append(_transaction(entry, balance, now))
        day += timedelta(days=1)
    listed.reverse()
    amount = Decimal(balance).scaleb(-2)
    return Account(
        iban=iban,
        name=profile.name,
        currency_name=profile.currency,
        balance=amount,
        funds_available=amount,
        friendly_name=profile.friendly_name,
        active_since_at_least=profile.opened_on,
        direct_debit=profile.direct_debit,
        owners=tuple(owners),
        transactions=tuple(listed),
    )


_CARD_KIND = "TRANSAKCJA KARTĄ KREDYTOWĄ"
_CARD_SHOPS = (
    _Template("Allegro.pl", _CARD_KIND, ("online shopping",), -45_000, -1_999, "Allegro.pl"),
    _Template("ORLEN STACJA NR 4112", _CARD_KIND, ("fuel",), -35_000, -8_000),
    _Template("RESTAURACJA POD WAWELEM", _CARD_KIND, ("restaurants",), -25_000, -3_000),
    _Template("BOOKING.COM", _CARD_KIND, ("travel",), -180_000, -30_000),
)
_REPAYMENT = _Template("SPŁATA KARTY", "SPŁATA", ("repayment",), 0, 0)
_REPAY_DAY = 20
_CARD_LIMIT_CENTS = 1_000_000


def card_view(
    seed: int,
    owner_external_id: str,
    index: int,
    owners: Sequence[Owner],
    *,
    now: datetime,
    since: date,
) -> CreditCard:
    """The owner's ``index``-th credit card as an import at ``now`` sees it: purchases on or
    after ``since``, newest first, each ``currencyBalance`` the debt after it; the debt is
    repaid in full on the 20th of every month."""
    rng = _rng("card", seed, owner_external_id, index)
    card_id = f"{rng.randrange(10**9, 10**10)}"
    number = f"5100 **** **** {rng.randrange(10_000):04d}"
    today = now.date()
    # The debt is a function of the days since the last repayment only, so every import
    # agrees on each row's balance: a cycle runs from one 20th (repaid first, then that day's
    # purchases) to the next. Start with no debt at the repayment before ``since``'s, so that
    # one (on or before ``since``) is listed.
    last = since.replace(day=_REPAY_DAY)
    if since.day < _REPAY_DAY:
        last = _month_back(last)
    day = _month_back(last)
    debt = 0
    listed: list[MoneyTransaction] = []
    while day <= today:
        if day.day == _REPAY_DAY and debt:
            repaid = Decimal(debt).scaleb(-2)
            listed.append(_card_row(day, repaid, Decimal(0), _REPAYMENT, today))
            debt = 0
        day_rng = _rng("card-day", seed, owner_external_id, index, day.isoformat())
        if day_rng.random() < 0.35:
            shop = day_rng.choice(_CARD_SHOPS)
            cents = _scaled(day_rng.randint(shop.low_cents, shop.high_cents), "PLN")
            debt -= cents
            balance = Decimal(-debt).scaleb(-2)
            listed.append(_card_row(day, Decimal(cents).scaleb(-2), balance, shop, today))
        day += timedelta(days=1)
    visible = [t for t in listed if t.transaction_on >= since]
    visible.reverse()
    balance = Decimal(-debt).scaleb(-2)
    due = (today.replace(day=1) + timedelta(days=32)).replace(day=_REPAY_DAY)
    return CreditCard(
        card_id=card_id,
        name="Karta kredytowa Mastercard",
        number=number,
        currency_name="PLN",
        balance=balance,
        funds_available=Decimal(_CARD_LIMIT_CENTS - debt).scaleb(-2),
        limit=Decimal(_CARD_LIMIT_CENTS).scaleb(-2),
        interest=Decimal("18.50"),
        due_date=due,
        owners=tuple(owners[:1]),
        transactions=tuple(visible),
    )


def _month_back(day: date) -> date:
    """The same day of the previous month (``day`` is at most the 28th)."""
    return (day.replace(day=1) - timedelta(days=1)).replace(day=day.day)


def _card_row(
    day: date, amount: Decimal, balance: Decimal, template: _Template, today: date
) -> MoneyTransaction:
    # Card rows book the next day; until then they are pending, with no booking date.
    booked_on = day + timedelta(days=1)
    done = booked_on <= today
    return MoneyTransaction(
        transaction_on=day,
        booked_on=booked_on if done else None,
        amount=amount,
        balance=balance,
        title=template.title,
        party=template.party,
        kind=template.kind,
        status=DONE if done else PENDING,
        labels=template.labels,
    )


def owner_score(seed: int, owner_external_id: str) -> tuple[float, float, str]:
    """A stable (score, percentile, tier) for the owner-scores reply."""
    rng = _rng("score", seed, owner_external_id)
    score = rng.random()
    percentile = rng.random()
    tier = "ABCDE"[min(4, int((1 - score) * 5))]
    return score, percentile, tier
