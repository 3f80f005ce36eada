"""Scenario generator: a realistic, seeded month of contract-to-cash activity, made through the APIs.

`seed_scenario(env, ScenarioOptions(days=30, invoices=300, seed=42))` drives the three stand-ins the
way real users and systems would — NetSuite customers over OAuth 1.0a, Salesforce accounts and
opportunities through simple-salesforce, Stripe customers, subscriptions, invoices, payments,
refunds, disputes and payouts through the stripe SDK — so every object, event and webhook the
pipeline later reads was produced by the stand-ins' own logic.

It works in two stages:
1. `build_plan(options)` is pure: from the seed alone it decides every customer, document, amount
   and the instant each step happens. Same seed, same plan.
2. `seed_scenario` executes the plan in time order, freezing the Stripe stand-in's clock at each
   step's instant (so `created` timestamps spread realistically over the window), then returns the
   clock to real time and reports a `ScenarioSummary` built from what the APIs answered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import random
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    import stripe
    from simple_salesforce import Salesforce

STRIPE_API_VERSION = "2026-10-28.endive"
SALESFORCE_API_VERSION = "59.0"
SALESFORCE_BATCH = 200  # records per sObject Collections request (the API's maximum)

# Minor-unit exponent of each currency the scenario bills in.
CURRENCY_EXPONENT = {"usd": 2, "eur": 2, "jpy": 0, "kwd": 3, "gbp": 2}
# Most customers pay in USD; the other three exercise the currency edge cases.
CURRENCY_WEIGHTS = {"usd": 0.6, "eur": 0.2, "jpy": 0.1, "kwd": 0.1}
# Smallest step a generated amount moves in, in minor units: whole dollars/euros, 100 yen, and
# 0.1 KWD — Stripe requires the third KWD decimal to be 0, and coarser steps keep percentage
# discounts of KWD amounts on that grid too.
AMOUNT_STEP = {"usd": 100, "eur": 100, "jpy": 100, "kwd": 100, "gbp": 100}
# Rough units of each currency per US dollar, to give every currency comparable amounts.
UNITS_PER_USD = {
    "usd": Decimal(1),
    "eur": Decimal("0.92"),
    "jpy": Decimal(150),
    "kwd": Decimal("0.31"),
    "gbp": Decimal("0.79"),
}

# The NetSuite sandbox account's reference data (see SANDBOX_COMMON: subsidiary per base currency).
NETSUITE_CURRENCY_ID = {"usd": "1", "eur": "2", "jpy": "3", "kwd": "4"}
# The Stripe account is one legal entity, the US parent (subsidiary 1): the customers already in the books that
# Stripe customers link to belong to it, whatever their currency (subsidiary 1 allows all four).
NETSUITE_SUBSIDIARY_ID = {"usd": "1", "eur": "1", "jpy": "1", "kwd": "1"}
COUNTRY = {"usd": "United States", "eur": "Germany", "jpy": "Japan", "kwd": "Kuwait"}

# The Salesforce fields that say a deal is already billed in Stripe (the pipeline's write-back targets).
ACCOUNT_STRIPE_CUSTOMER_FIELD = "Stripe_Customer_Id__c"
OPPORTUNITY_STRIPE_SUBSCRIPTION_FIELD = "Stripe_Subscription_Id__c"


@dataclass(frozen=True)
class CatalogItem:
    code: str
    name: str
    netsuite_item_id: str
    recurring: bool
    # Unit price per currency, in minor units.
    unit_amounts: Mapping[str, int]


CATALOG: dict[str, CatalogItem] = {
    "pro": CatalogItem("PRO", "Pro plan", "101", True, {"usd": 4_900, "eur": 4_500, "jpy": 7_000, "kwd": 15_000}),
    "enterprise": CatalogItem(
        "ENT", "Enterprise plan", "102", True, {"usd": 49_900, "eur": 45_900, "jpy": 75_000, "kwd": 155_000}
    ),
    "onboarding": CatalogItem(
        "ONB", "Onboarding", "103", False, {"usd": 150_000, "eur": 140_000, "jpy": 220_000, "kwd": 465_000}
    ),
}
# A product launched without telling finance (`planted_problems`): the example field_mapping.yaml maps the
# catalog's products (prod_<code>) and holds back lines of any other product.
PLANTED_PRODUCTS: dict[str, CatalogItem] = {
    "seats": CatalogItem("SEATS", "Extra seats", "104", False, {"usd": 1_200, "eur": 1_100, "jpy": 1_700, "kwd": 400}),
}
# Percent-off coupons apply in every currency; amount-off ones are per currency.
COUPONS = {"welcome10": ("Welcome 10% off", 10), "annual20": ("Loyalty 20% off", 20)}
# Exclusive tax rates by customer currency (Kuwait levies no VAT, so KWD invoices carry none).
TAX_RATES = {
    "usd": ("Sales tax", "US", Decimal("8.25")),
    "eur": ("VAT", "DE", Decimal("19")),
    "jpy": ("JCT", "JP", Decimal("10")),
}

FIRST_NAMES = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Gringotts",
    "Aperture",
    "Oscorp",
    "Nakatomi",
    "Monarch",
    "Blue Sun",
    "Pied Piper",
    "Dunder",
    "Sterling",
    "Prestige",
    "Bluth",
    "Massive",
    "Zorg",
)
LAST_NAMES = (
    "Analytics",
    "Logistics",
    "Robotics",
    "Foods",
    "Media",
    "Labs",
    "Systems",
    "Health",
    "Energy",
    "Studios",
    "Holdings",
    "Partners",
    "Networks",
    "Retail",
    "Capital",
)
CONTACT_NAMES = (
    ("Ada", "Lovelace"),
    ("Grace", "Hopper"),
    ("Alan", "Turing"),
    ("Kenji", "Sato"),
    ("Fatima", "Al-Sabah"),
    ("Lena", "Fischer"),
    ("Omar", "Haddad"),
    ("Yuki", "Tanaka"),
    ("Maria", "Garcia"),
    ("John", "Smith"),
    ("Chen", "Wei"),
    ("Sofia", "Rossi"),
)
SALESFORCE_PLURALS = {
    "Product2": "products",
    "Account": "accounts",
    "Contact": "contacts",
    "Opportunity": "opportunities",
    "OpportunityLineItem": "opportunity_line_items",
}
OPEN_STAGES = ("Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review")

DAY = 86_400
HOUR = 3_600


# ---------------------------------------------------------------------------------------------
# Options, plan and summary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioOptions:
    days: int = 30
    invoices: int = 300  # approximate: the plan lands within a few percent
    seed: int = 42
    end_date: dt.date | None = None  # last day of the window (UTC); default yesterday
    # Client threads. Steps that fall on the same clock instant and belong to different customers
    # run concurrently. With 1 thread everything runs in plan order, so the stand-ins' seeded ids
    # come out the same every time; with more, amounts and times stay the same but ids may not.
    threads: int = 1
    # Add the receivables cases (credit notes before and after payment, voided credit notes, customer
    # balances, negative invoices, out-of-band, partial and uncollectible-then-paid payments, backdated
    # invoices, a currency-less customer billed in two currencies, KWD coupons with tax): see `_receivables`.
    receivables_cases: bool = False
    # Add the cash cases (daily automatic payouts per currency instead of every few days, and on dedicated customers:
    # a refund and a lost and a won dispute landing in payouts, a payout failed after it was paid and paid again, a
    # balance adjustment, an account fee, a EUR invoice settling in USD): see `_CashPlanner`.
    cash_cases: bool = True
    # Plant the problems a first sync meets (the demo's): a customer billed in GBP, a currency the example
    # field_mapping.yaml does not map yet, and a customer without an email, which the demo's NetSuite customer form
    # makes mandatory. Each lands in sync_exceptions with its fix (`ScenarioSummary.problems`).
    planted_problems: bool = False
    # Step instants are rounded to this many seconds; coarser rounding puts more steps on one
    # instant, which is what lets threads overlap. 0 = automatic (1 s single-threaded, else 600 s).
    resolution_seconds: int = 0

    def window(self) -> tuple[int, int]:
        """First and last second (unix, UTC) of the scenario window, both inclusive."""
        end_date = self.end_date or (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1))
        start_date = end_date - dt.timedelta(days=self.days - 1)
        start = int(dt.datetime.combine(start_date, dt.time(), dt.UTC).timestamp())
        end = int(dt.datetime.combine(end_date, dt.time(23, 59, 59), dt.UTC).timestamp())
        return start, end

    def effective_resolution(self) -> int:
        if self.resolution_seconds > 0:
            return self.resolution_seconds
        return 1 if self.threads <= 1 else 600


@dataclass(frozen=True)
class Step:
    """One thing that happens at one instant; steps of one actor run in order, never concurrently."""

    at: int
    order: int
    actor: str
    kind: str
    ref: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CustomerPlan:
    ref: str
    name: str
    email: str
    currency: str
    created_at: int
    netsuite_external_id: str | None = None
    salesforce_account_ref: str | None = None


@dataclass
class SalesforcePlan:
    accounts: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    opportunities: list[dict[str, Any]] = field(default_factory=list)
    line_items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Plan:
    options: ScenarioOptions
    window: tuple[int, int]
    customers: list[CustomerPlan]
    steps: list[Step]
    salesforce: SalesforcePlan

    def invoice_count(self) -> int:
        return sum(
            1
            for s in self.steps
            if s.kind in ("subscribe", "upgrade", "renew", "invoice", "case_invoice", "cash_invoice")
        )


def add_months(instant: int, months: int) -> int:
    """The same day and time `months` later (clamped to the month's end), as Stripe's billing cycle moves."""
    moment = dt.datetime.fromtimestamp(instant, dt.UTC)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    last_day = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return int(moment.replace(year=year, month=month, day=min(moment.day, last_day)).timestamp())


def minor_to_decimal(amount: int, currency: str) -> Decimal:
    """Minor units as a Decimal with the currency's exponent (JPY 7000, KWD 15.000, USD 49.00)."""
    exponent = CURRENCY_EXPONENT[currency]
    return Decimal(amount).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


@dataclass
class ScenarioSummary:
    """What the seeding made: counts per object type and currency, and money totals per currency."""

    window: tuple[str, str]
    seed: int
    counts: dict[str, dict[str, int]]  # object type -> currency ("all" when it has none) -> count
    totals: dict[str, dict[str, Decimal]]  # measure -> currency -> amount
    ids_digest: str  # hash of every id the stand-ins returned, by plan reference
    # Receivables case -> one entry per occurrence: what it made, by role ("invoice", "credit_note",
    # "refund", ...) -> Stripe id. Empty unless `receivables_cases` was on.
    receivables: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # Cash case -> the same, for `cash_cases` (see CASH_CASES for each case's roles). Every role holding a balance
    # transaction id has a `<role>_payout` beside it when a payout in the window paid that transaction out.
    cash: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # Planted problem -> the same, for `planted_problems` (see PROBLEM_CASES).
    problems: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        result = {
            "window": list(self.window),
            "seed": self.seed,
            "counts": self.counts,
            "totals": {m: {c: str(v) for c, v in per.items()} for m, per in self.totals.items()},
            "ids_digest": self.ids_digest,
        }
        if self.receivables:
            result["receivables"] = self.receivables
        if self.cash:
            result["cash"] = self.cash
        if self.problems:
            result["problems"] = self.problems
        return result

    def to_text(self) -> str:
        currencies = sorted({c for per in self.counts.values() for c in per} - {"all"}) + ["all"]
        width = max(len(k) for k in [*self.counts, *self.totals, "object"]) + 2
        lines = [
            f"Sandbox scenario {self.window[0]} .. {self.window[1]} (seed {self.seed})",
            "object".ljust(width) + "".join(c.upper().rjust(9) for c in currencies),
        ]
        for name, per in sorted(self.counts.items()):
            lines.append(name.ljust(width) + "".join(str(per.get(c, "")).rjust(9) for c in currencies))
        lines.append("")
        lines.append("totals".ljust(width) + "".join(c.upper().rjust(16) for c in currencies[:-1]))
        for name, per in sorted(self.totals.items()):
            lines.append(name.ljust(width) + "".join(str(per.get(c, "")).rjust(16) for c in currencies[:-1]))
        if self.receivables:
            lines.append("")
            lines.extend(f"receivables {case}: {len(entries)}" for case, entries in sorted(self.receivables.items()))
        if self.cash:
            lines.append("")
            lines.extend(f"cash {case}: {len(entries)}" for case, entries in sorted(self.cash.items()))
        if self.problems:
            lines.append("")
            lines.extend(f"planted problem {case}: {len(entries)}" for case, entries in sorted(self.problems.items()))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Stage 1: the plan (pure)
# ---------------------------------------------------------------------------------------------


class _Planner:
    """Turns options into a `Plan`; every random choice comes from one seeded generator, in order."""

    def __init__(self, options: ScenarioOptions) -> None:
        if options.days < 1 or options.invoices < 1:
            raise ValueError("days and invoices must be at least 1")
        self.options = options
        self.rng = random.Random(options.seed)
        self.start, self.end = options.window()
        self.resolution = options.effective_resolution()
        self.steps: list[Step] = []
        self.salesforce = SalesforcePlan()
        self._order = itertools.count()

    # -- helpers --------------------------------------------------------------------------------
    def at(self, when: float) -> int:
        """An instant inside the window, rounded to the plan's resolution."""
        clamped = min(max(int(when), self.start + HOUR), self.end - HOUR)
        return clamped - (clamped - self.start) % self.resolution

    def add(self, when: float, actor: str, kind: str, ref: str, **args: Any) -> int:
        at = self.at(when)
        self.steps.append(Step(at, next(self._order), actor, kind, ref, args))
        return at

    def amount(self, currency: str, low_usd: int, high_usd: int) -> int:
        """A random amount between two dollar figures, converted and put on the currency's grid."""
        usd = self.rng.randint(low_usd, high_usd)
        minor = int(usd * UNITS_PER_USD[currency] * 10 ** CURRENCY_EXPONENT[currency])
        step = AMOUNT_STEP[currency]
        return max(step, minor - minor % step)

    @staticmethod
    def take(pool: list[str], share: float, of: int) -> list[str]:
        """Take round(share * of) refs (at least one, while any are left) off the front of `pool`."""
        count = min(len(pool), max(1, round(share * of)))
        taken, pool[:] = pool[:count], pool[count:]
        return taken

    # -- the plan -------------------------------------------------------------------------------
    def build(self) -> Plan:
        customers = self._customers()
        self.add(self.start, "catalog", "catalog", "catalog")
        # Every document that ends up paid: its ref -> (actor, the instant it is paid).
        paid: dict[str, tuple[str, int]] = {}
        subscription_invoices = self._subscriptions(customers, paid)
        # The receivables cases draw from a generator of their own, so turning them on leaves every other
        # choice of the seed as it was; their invoices come out of the one-off budget.
        # Their customers are their own: no other activity bills them or uses their balances.
        case_customers: list[CustomerPlan] = []
        case_invoices = _ReceivablesPlanner(self, case_customers).plan() if self.options.receivables_cases else 0
        # The cash cases likewise: a generator and customers of their own. Their five invoices come on top of the
        # budget, so turning them on leaves every choice of the seed as it was.
        cash_customers: list[CustomerPlan] = []
        if self.options.cash_cases:
            _CashPlanner(self, cash_customers).plan()
        if self.options.planted_problems:
            _ProblemsPlanner(self, cash_customers).plan()
        one_off_budget = max(0, self.options.invoices - subscription_invoices - case_invoices)
        self._one_off_invoices(customers, one_off_budget, paid)
        self._invoiceless_charges(customers, paid)
        self._after_payment(paid)
        self._payouts()
        self._salesforce(customers)
        customers = customers + case_customers + cash_customers
        steps = sorted(self.steps, key=lambda s: (s.at, s.order))
        return Plan(self.options, (self.start, self.end), customers, steps, self.salesforce)

    def _customers(self) -> list[CustomerPlan]:
        count = max(4, round(self.options.invoices * 40 / 300))
        currencies = list(CURRENCY_WEIGHTS)
        # The first four cover every currency whatever the seed; the rest follow the weights.
        chosen = currencies + self.rng.choices(currencies, weights=list(CURRENCY_WEIGHTS.values()), k=count - 4)
        names = [f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES]
        self.rng.shuffle(names)
        window = self.end - self.start
        customers = []
        for index, currency in enumerate(chosen):
            name = names[index % len(names)] + ("" if index < len(names) else f" {index // len(names) + 1}")
            slug = "".join(ch for ch in name.lower() if ch.isalnum())
            created = self.at(self.start + HOUR + self.rng.random() * window * 0.4)
            customer = CustomerPlan(f"cus{index}", name, f"billing@{slug}.example", currency, created)
            if self.rng.random() < 0.3 or index == 0:
                customer.netsuite_external_id = f"crm-cust-{index:05d}"
            if self.rng.random() < 0.5 or index == 1:
                customer.salesforce_account_ref = f"acct{index}"
            self.add(created, customer.ref, "customer", customer.ref, customer=customer)
            customers.append(customer)
        return customers

    def _subscriptions(self, customers: list[CustomerPlan], paid: dict[str, tuple[str, int]]) -> int:
        made = 0
        for customer in customers:
            if self.rng.random() >= 0.6 and customer.ref != "cus0":
                continue
            sub = f"sub{customer.ref[3:]}"
            plan = "enterprise" if self.rng.random() < 0.3 else "pro"
            quantity = self.rng.randint(1, 5) if plan == "pro" else self.rng.randint(1, 2)
            start = self.at(customer.created_at + self.rng.randint(10 * 60, 6 * HOUR))
            coupon = "welcome10" if self.rng.random() < 0.15 else None
            taxed = customer.currency in TAX_RATES and self.rng.random() < 0.3
            self.add(
                start,
                customer.ref,
                "subscribe",
                sub,
                customer=customer.ref,
                plan=plan,
                quantity=quantity,
                coupon=coupon,
                taxed=taxed,
                opportunity=customer.salesforce_account_ref and f"opp-{sub}",
            )
            paid[f"{sub}:0"] = (customer.ref, start)
            made += 1
            upgrade_at = start + self.rng.randint(5 * DAY, 20 * DAY)
            # No mid-period upgrades in KWD: the Stripe stand-in's proration lines are not rounded to
            # Stripe's 10-fils grid, which then makes the KWD balance unpayable.
            upgradable = plan == "pro" and customer.currency != "kwd"
            if upgradable and self.rng.random() < 0.3 and upgrade_at < self.end - DAY:
                self.add(upgrade_at, customer.ref, "upgrade", sub, to_plan="enterprise")
                paid[f"{sub}:upgrade"] = (customer.ref, self.at(upgrade_at))
                made += 1
            period = 1
            while (renewal := add_months(start, period)) < self.end - HOUR:
                self.add(renewal, customer.ref, "renew", sub, period=period)
                paid[f"{sub}:{period}"] = (customer.ref, self.at(renewal))
                period += 1
                made += 1
        return made

    def _one_off_invoices(self, customers: list[CustomerPlan], budget: int, paid: dict[str, tuple[str, int]]) -> None:
        # Bigger customers get more invoices: a weight per customer, drawn once.
        weights = [self.rng.uniform(0.3, 3.0) for _ in customers]
        owners = self.rng.choices(customers, weights=weights, k=budget)
        refs = [f"inv{n}" for n in range(budget)]
        outcome_pool = list(refs)
        self.rng.shuffle(outcome_pool)
        outcomes: dict[str, str] = {}
        for outcome, share in (("failed_then_paid", 0.05), ("past_due", 0.04), ("void", 0.02), ("uncollectible", 0.02)):
            for ref in self.take(outcome_pool, share, budget):
                outcomes[ref] = outcome
        for ref, customer in zip(refs, owners, strict=True):
            created = self.at(self.rng.uniform(customer.created_at + HOUR, self.end - 2 * HOUR))
            items = self._invoice_items(customer.currency, first=ref == refs[0])
            outcome = outcomes.get(ref, "paid")
            coupon = self.rng.choice(list(COUPONS)) if self.rng.random() < 0.1 else None
            taxed = customer.currency in TAX_RATES and self.rng.random() < 0.25
            self.add(
                created,
                customer.ref,
                "invoice",
                ref,
                customer=customer.ref,
                items=items,
                coupon=coupon,
                taxed=taxed,
                outcome=outcome,
            )
            later = created + self.rng.randint(2 * DAY, 6 * DAY)
            if outcome == "failed_then_paid":
                self.add(later, customer.ref, "retry", ref)
                paid[ref] = (customer.ref, self.at(later))
            elif outcome == "void":
                self.add(later, customer.ref, "void", ref)
            elif outcome == "uncollectible":
                self.add(later + 5 * DAY, customer.ref, "uncollectible", ref)
            elif outcome == "paid":
                paid[ref] = (customer.ref, created)

    def _invoice_items(self, currency: str, first: bool) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if first or self.rng.random() < 0.15:
            items.append({"catalog": "onboarding", "quantity": 1})
        for _ in range(self.rng.randint(0 if items else 1, 2)):
            description = self.rng.choice(
                ("Professional services", "Usage overage", "Training workshop", "Premium support")
            )
            items.append({"description": description, "amount": self.amount(currency, 80, 4_000)})
        return items

    def _invoiceless_charges(self, customers: list[CustomerPlan], paid: dict[str, tuple[str, int]]) -> None:
        for n in range(max(3, self.options.invoices // 10)):
            customer = self.rng.choice(customers)
            ref = f"pi{n}"
            at = self.add(
                self.rng.uniform(customer.created_at + HOUR, self.end - 2 * HOUR),
                customer.ref,
                "charge",
                ref,
                customer=customer.ref,
                amount=self.amount(customer.currency, 20, 900),
                description=self.rng.choice(("Add-on credits", "Extra seats", "Data export")),
            )
            paid[ref] = (customer.ref, at)

    def _after_payment(self, paid: dict[str, tuple[str, int]]) -> None:
        """Refunds and disputes on paid documents: fixed quotas, so small scenarios still have each kind."""
        pool = sorted(paid)
        self.rng.shuffle(pool)
        # Disputes need time to be opened and decided inside the window.
        early = [r for r in pool if paid[r][1] < self.end - 12 * DAY]
        lost = self.take(early, 0.01, len(paid))
        won = self.take(early, 0.01, len(paid))
        pool = [r for r in pool if r not in lost and r not in won]
        full = self.take(pool, 0.03, len(paid))
        partial = self.take(pool, 0.05, len(paid))
        for ref in full + partial:
            actor, paid_at = paid[ref]
            # Mostly within days; one in five weeks later (the "40-day refund" of real life).
            delay = self.rng.randint(HOUR, 5 * DAY) if self.rng.random() < 0.8 else self.rng.randint(20, 40) * DAY
            self.add(
                paid_at + delay,
                actor,
                "refund",
                ref,
                share=None if ref in full else self.rng.choice((Decimal("0.1"), Decimal("0.25"), Decimal("0.5"))),
            )
        for ref, outcome in [(r, "lost") for r in lost] + [(r, "won") for r in won]:
            actor, paid_at = paid[ref]
            opened = paid_at + self.rng.randint(2 * DAY, 5 * DAY)
            self.add(opened, actor, "dispute", ref)
            self.add(opened + self.rng.randint(4 * DAY, 6 * DAY), actor, "dispute_close", ref, outcome=outcome)
        # An open dispute still awaiting evidence at the end of the window, when there is room.
        late = [r for r in pool if paid[r][1] < self.end - 3 * DAY]
        if late and self.options.invoices >= 100:
            actor, paid_at = paid[late[0]]
            self.add(paid_at + 2 * DAY, actor, "dispute", late[0])

    def _payouts(self) -> None:
        # Every few days at 06:00 UTC, like a standard payout schedule.
        days = []
        day = self.start + 3 * DAY + 6 * HOUR
        while day < self.end:
            days.append(day)
            day += self.rng.choice((2, 3, 4)) * DAY
        if self.options.cash_cases:
            # Stripe's daily automatic payouts: each morning, what has become available of each currency (drawn
            # after the schedule above, so the rest of the plan stays what the seed made it).
            days = list(range(self.start + DAY + 6 * HOUR, self.end, DAY))
        for n, day in enumerate(days):
            self.add(day, "payouts", "payout", f"payout{n}")

    def _salesforce(self, customers: list[CustomerPlan]) -> None:
        subscribed = {s.args["customer"]: s for s in self.steps if s.kind == "subscribe"}
        for customer in customers:
            if customer.salesforce_account_ref:
                self._account(customer.salesforce_account_ref, customer.name, customer.currency, customer.ref)
                sub = subscribed.get(customer.ref)
                if sub is not None:
                    self._opportunity(
                        f"opp-{sub.ref}",
                        customer.salesforce_account_ref,
                        customer.currency,
                        "Closed Won",
                        customer.created_at,
                        billed_by=sub.ref,
                        lines=[(sub.args["plan"], sub.args["quantity"])],
                    )
        prospects = max(3, len(customers) // 3)
        names = [f"{a} {b}" for a in FIRST_NAMES for b in ("Group", "Ventures", "Industries", "Co")]
        self.rng.shuffle(names)
        for n in range(prospects):
            currency = self.rng.choices(list(CURRENCY_WEIGHTS), weights=list(CURRENCY_WEIGHTS.values()))[0]
            ref = f"prospect{n}"
            self._account(ref, names[n % len(names)] + (f" {n}" if n >= len(names) else ""), currency, None)
            # The first two always close: unbilled Closed-Won deals the pipeline must pick up.
            stage = (
                "Closed Won" if n < 2 or self.rng.random() < 0.35 else self.rng.choice(OPEN_STAGES + ("Closed Lost",))
            )
            plan = self.rng.choice(("pro", "enterprise"))
            lines = [(plan, self.rng.randint(1, 10))] + ([("onboarding", 1)] if self.rng.random() < 0.5 else [])
            close = self.start + self.rng.randint(0, self.end - self.start)
            self._opportunity(f"opp-{ref}", ref, currency, stage, close, billed_by=None, lines=lines)

    def _account(self, ref: str, name: str, currency: str, customer_ref: str | None) -> None:
        self.salesforce.accounts.append(
            {
                "ref": ref,
                "customer_ref": customer_ref,
                "fields": {
                    "Name": name,
                    "BillingCountry": COUNTRY[currency],
                    "CurrencyIsoCode": currency.upper(),
                    "Industry": self.rng.choice(("Technology", "Retail", "Manufacturing", "Finance", "Healthcare")),
                },
            }
        )
        first, last = self.rng.choice(CONTACT_NAMES)
        domain = "".join(ch for ch in name.lower() if ch.isalnum())
        self.salesforce.contacts.append(
            {
                "ref": f"contact-{ref}",
                "account_ref": ref,
                "fields": {
                    "FirstName": first,
                    "LastName": last,
                    "Email": f"{first.lower()}@{domain}.example",
                },
            }
        )

    def _opportunity(
        self,
        ref: str,
        account_ref: str,
        currency: str,
        stage: str,
        close_at: int,
        billed_by: str | None,
        lines: list[tuple[str, int]],
    ) -> None:
        """An opportunity with its products; `billed_by` names the subscription that already bills it."""
        amount = sum(CATALOG[code].unit_amounts[currency] * qty for code, qty in lines)
        close_date = dt.datetime.fromtimestamp(close_at, dt.UTC).date().isoformat()
        self.salesforce.opportunities.append(
            {
                "ref": ref,
                "account_ref": account_ref,
                "billed_by": billed_by,
                "fields": {
                    "Name": f"{CATALOG[lines[0][0]].name} x{lines[0][1]}",
                    "StageName": stage,
                    "CloseDate": close_date,
                    "CurrencyIsoCode": currency.upper(),
                    "Amount": minor_to_decimal(amount, currency),
                },
            }
        )
        for code, quantity in lines:
            self.salesforce.line_items.append(
                {
                    "opportunity_ref": ref,
                    "catalog": code,
                    "fields": {
                        "Quantity": quantity,
                        "UnitPrice": minor_to_decimal(CATALOG[code].unit_amounts[currency], currency),
                    },
                }
            )


# The receivables cases, each with the small fixed share of `invoices` it occurs at (at least once).
RECEIVABLES_SHARES = {
    "credit_note_open_invoice": 0.01,  # a: pre-payment credit note, line amounts carrying discount and tax
    "credit_note_paid_split": 0.01,  # b: post-payment note split refund / customer balance / out of band
    "credit_note_full_refund": 0.01,  # b: a paid invoice credited and refunded in full
    "credit_note_voided": 0.005,  # c: a credit note created, then voided
    "balance_credit_applied": 0.01,  # d: a credit balance (from b or an adjustment) paying a later invoice
    "negative_invoice": 0.005,  # d: total < 0, credited to the customer balance at finalization
    "balance_debit_applied": 0.005,  # d: a debit balance making amount_due exceed the total
    "paid_out_of_band": 0.01,  # e
    "partial_payment_refunded": 0.005,  # f: part paid through attach_payment, that part refunded, rest paid
    "uncollectible_then_paid": 0.005,  # g
    "backdated": 0.005,  # h: effective_at before finalization
    "two_currencies_same_day": 0.005,  # i: a customer without a currency, billed in USD then EUR
    "kwd_coupon_and_tax": 0.01,  # j
}
# Only for the KWD receivables case: the scenario's Kuwaiti customers otherwise pay no tax.
CASE_TAX_RATES = {"kwd": ("GCC VAT", "KW", Decimal("5"))}


class _ReceivablesPlanner:
    """Plans the receivables cases on dedicated customers, so no other activity consumes their balances."""

    family = "receivables"  # names the generator's seed
    ref_prefix, label = "rcv", "Receivables"  # the customers' plan refs and names
    invoice_step = "case_invoice"

    def __init__(self, planner: _Planner, customers: list[CustomerPlan]) -> None:
        self.p = planner
        self.customers = customers
        self.rng = random.Random(f"{self.family}-{planner.options.seed}")
        self.invoices = 0

    def count(self, case: str) -> int:
        return max(1, round(RECEIVABLES_SHARES[case] * self.p.options.invoices))

    def when(self) -> int:
        """A start instant leaving about a week for the case's later steps (less in short windows)."""
        latest = max(self.p.start + 2 * HOUR, self.p.end - 8 * DAY)
        return int(self.rng.uniform(self.p.start + 2 * HOUR, latest))

    def customer(self, currency: str, at: int) -> str:
        index = len(self.customers)  # the case customers' own numbering: rcv0, rcv1, ...
        name = f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)} {self.label} {index}"
        slug = "".join(ch for ch in name.lower() if ch.isalnum())
        plan = CustomerPlan(
            f"{self.ref_prefix}{index}", name, f"billing@{slug}.example", currency, self.p.at(at - HOUR)
        )
        self.p.add(plan.created_at, plan.ref, "customer", plan.ref, customer=plan)
        self.customers.append(plan)
        return plan.ref

    def amount(self, currency: str, low_usd: int, high_usd: int, grid: int = 0) -> int:
        usd = self.rng.randint(low_usd, high_usd)
        minor = int(usd * UNITS_PER_USD[currency] * 10 ** CURRENCY_EXPONENT[currency])
        step = grid or AMOUNT_STEP[currency]
        return max(step, minor - minor % step)

    def items(self, currency: str, count: int = 2, grid: int = 0) -> list[dict[str, Any]]:
        return [
            {"description": f"Services {n + 1}", "amount": self.amount(currency, 150, 2_500, grid)}
            for n in range(count)
        ]

    def invoice(self, at: int, actor: str, ref: str, case: str, currency: str, **args: Any) -> str:
        self.invoices += 1
        args.setdefault("items", self.items(currency))
        self.p.add(at, actor, self.invoice_step, ref, case=case, currency=currency, **args)
        return ref

    def plan(self) -> int:
        cases = {
            "credit_note_open_invoice": self.credit_note_open_invoice,
            "credit_note_paid_split": self.credit_note_paid_split,
            "credit_note_full_refund": self.credit_note_full_refund,
            "credit_note_voided": self.credit_note_voided,
            "balance_credit_applied": self.balance_credit_applied,
            "negative_invoice": self.negative_invoice,
            "balance_debit_applied": self.balance_debit_applied,
            "paid_out_of_band": self.paid_out_of_band,
            "partial_payment_refunded": self.partial_payment_refunded,
            "uncollectible_then_paid": self.uncollectible_then_paid,
            "backdated": self.backdated,
            "two_currencies_same_day": self.two_currencies_same_day,
            "kwd_coupon_and_tax": self.kwd_coupon_and_tax,
        }
        for case, make in cases.items():
            for n in range(self.count(case)):
                make(case, n)
        return self.invoices

    # -- the cases ------------------------------------------------------------------------------
    def credit_note_open_invoice(self, case: str, n: int) -> None:
        currency = ("usd", "eur", "jpy")[n % 3]
        at = self.when()
        actor = self.customer(currency, at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, currency, coupon="welcome10", taxed=True)
        # Half of each line, so the note carries each line's share of the discount and tax.
        self.p.add(at + HOUR, actor, "case_credit_note", ref, case=case, share=Decimal("0.5"), split=None)
        self.p.add(at + 2 * DAY, actor, "case_pay", ref, case=case, out_of_band=False)

    def credit_note_paid_split(self, case: str, n: int) -> None:
        currency = ("usd", "eur")[n % 2]
        at = self.when()
        actor = self.customer(currency, at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, currency, pay="card")
        self.p.add(at + DAY, actor, "case_credit_note", ref, case=case, share=Decimal("0.6"), split="thirds")
        # The credit part of the note pays part of this customer's next invoice (case d).
        self.invoice(at + 3 * DAY, actor, f"{actor}:next", "balance_credit_applied", currency, pay="card")

    def credit_note_full_refund(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("usd", at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, "usd", coupon="annual20", taxed=True, pay="card")
        self.p.add(at + 2 * DAY, actor, "case_credit_note", ref, case=case, share=None, split="refund")

    def credit_note_voided(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("eur", at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, "eur")
        self.p.add(at + HOUR, actor, "case_credit_note", ref, case=case, share=Decimal("0.3"), split=None)
        self.p.add(at + 3 * HOUR, actor, "case_void_credit_note", ref, case=case)
        self.p.add(at + DAY, actor, "case_pay", ref, case=case, out_of_band=False)

    def balance_credit_applied(self, case: str, n: int) -> None:
        # A credit adjustment bigger than the next invoice: paid wholly from the balance.
        at = self.when()
        actor = self.customer("usd", at)
        self.p.add(at, actor, "case_balance", actor, case=case, amount=-self.amount("usd", 3_000, 4_000))
        self.invoice(at + HOUR, actor, f"{actor}:inv", case, "usd", items=self.items("usd", 1), pay="card")

    def negative_invoice(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("usd", at)
        items = [
            {"description": "Services", "amount": self.amount("usd", 200, 500)},
            {"description": "Service credit", "amount": -self.amount("usd", 800, 1_500)},
        ]
        self.invoice(at, actor, f"{actor}:inv", case, "usd", items=items)
        self.invoice(at + DAY, actor, f"{actor}:next", "balance_credit_applied", "usd", pay="card")

    def balance_debit_applied(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("usd", at)
        self.p.add(at, actor, "case_balance", actor, case=case, amount=self.amount("usd", 50, 200))
        self.invoice(at + HOUR, actor, f"{actor}:inv", case, "usd", pay="card")

    def paid_out_of_band(self, case: str, n: int) -> None:
        currency = ("usd", "eur")[n % 2]
        at = self.when()
        actor = self.customer(currency, at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, currency)
        self.p.add(at + 2 * DAY, actor, "case_pay", ref, case=case, out_of_band=True)

    def partial_payment_refunded(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("usd", at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, "usd")
        self.p.add(at + HOUR, actor, "case_partial_payment", ref, case=case, share=Decimal("0.4"))
        self.p.add(at + DAY, actor, "case_refund_partial", ref, case=case, share=Decimal("0.5"))
        self.p.add(at + 3 * DAY, actor, "case_pay", ref, case=case, out_of_band=False)

    def uncollectible_then_paid(self, case: str, n: int) -> None:
        currency = ("eur", "usd")[n % 2]
        at = self.when()
        actor = self.customer(currency, at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, currency, pay="fail")
        self.p.add(at + 3 * DAY, actor, "uncollectible", ref)
        self.p.add(at + 6 * DAY, actor, "case_pay", ref, case=case, out_of_band=False)

    def backdated(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("usd", at)
        effective_at = max(self.p.start, at - self.rng.randint(2, 5) * DAY)
        self.invoice(at, actor, f"{actor}:inv", case, "usd", effective_at=effective_at, pay="card")

    def two_currencies_same_day(self, case: str, n: int) -> None:
        # Morning, so both invoices fall on the same UTC day.
        day = self.when() // DAY * DAY
        at = max(day + 8 * HOUR, self.p.start + 2 * HOUR)
        actor = self.customer("usd", at)
        for offset, currency in ((0, "usd"), (2 * HOUR, "eur")):
            self.invoice(
                at + offset,
                actor,
                f"{actor}:{currency}",
                case,
                currency,
                pay="card",
                entry=actor,
                role=f"invoice_{currency}",
            )

    def kwd_coupon_and_tax(self, case: str, n: int) -> None:
        at = self.when()
        actor = self.customer("kwd", at)
        # Amounts on the 10-fils grid (not the scenario's usual 100), so 10% off and 5% tax need rounding.
        items = self.items("kwd", 2, grid=10)
        self.invoice(at, actor, f"{actor}:inv", case, "kwd", items=items, coupon="welcome10", taxed=True, pay="card")


# The cash cases and the roles each occurrence records (role -> Stripe id) in `ScenarioSummary.cash`:
CASH_CASES = {
    # a paid USD invoice, half refunded a day later
    "refund": ("invoice", "customer", "charge", "balance_transaction", "refund", "refund_balance_transaction"),
    # a paid USD invoice disputed two days later and lost four days after that (withdrawal: amount and fee)
    "dispute_lost": ("invoice", "customer", "charge", "balance_transaction", "dispute", "withdrawal"),
    # the same, won: the amount and the fee come back in a second transaction
    "dispute_won": ("invoice", "customer", "charge", "balance_transaction", "dispute", "withdrawal", "reinstatement"),
    # a EUR invoice paid by card while EUR settled in USD (charge and refund transactions in USD, at CASH_EUR_USD)
    "cross_currency": ("invoice", "customer", "charge", "balance_transaction", "refund", "refund_balance_transaction"),
    # the newest paid USD payout at mid-window, failed (account_closed): its money is paid out again next morning
    "payout_failure": ("payout", "failure_balance_transaction"),
    # a USD debit adjustment (`adjustment` / other_adjustment; `source` is its adj_ id)
    "balance_adjustment": ("balance_transaction", "source"),
    # a USD Billing usage fee (`stripe_fee` / fee)
    "account_fee": ("balance_transaction",),
}
# Roles holding a balance transaction id: each gets `<role>_payout`, the payout that paid it out.
CASH_TRANSACTION_ROLES = (
    "balance_transaction",
    "refund_balance_transaction",
    "withdrawal",
    "reinstatement",
    "failure_balance_transaction",
)
CASH_EUR_USD = "1.0850"  # the cross-currency case's exchange rate


class _CashPlanner(_ReceivablesPlanner):
    """Plans the cash cases, one occurrence each, on dedicated customers (and Stripe's own balance entries)."""

    family = "cash"
    ref_prefix, label = "cash", "Cash"
    invoice_step = "cash_invoice"

    def plan(self) -> int:
        self.refund()
        self.dispute("dispute_lost", "lost")
        self.dispute("dispute_won", "won")
        self.cross_currency()
        self.payout_failure()
        self.balance_entries()
        return self.invoices

    def paid_invoice(self, case: str, currency: str, **args: Any) -> tuple[str, str, int]:
        at = self.when()
        actor = self.customer(currency, at)
        ref = self.invoice(at, actor, f"{actor}:inv", case, currency, pay="card", **args)
        return actor, ref, at

    def refund(self) -> None:
        actor, ref, at = self.paid_invoice("refund", "usd")
        self.p.add(at + DAY, actor, "refund", ref, share=Decimal("0.5"), case="refund")

    def dispute(self, case: str, outcome: str) -> None:
        actor, ref, at = self.paid_invoice(case, "usd")
        self.p.add(at + 2 * DAY, actor, "dispute", ref, case=case)
        self.p.add(at + 6 * DAY, actor, "dispute_close", ref, outcome=outcome, case=case)

    def cross_currency(self) -> None:
        # Paid alone at its instant: the account settles EUR in USD only while this invoice is paid.
        actor, ref, at = self.paid_invoice("cross_currency", "eur", settle_in="usd", exclusive=True)
        self.p.add(at + DAY, actor, "refund", ref, share=Decimal("0.25"), case="cross_currency")

    def payout_failure(self) -> None:
        # Mid-window at noon: payouts made at 06:00 arrive two days later, so some USD payout is paid by then.
        if self.p.options.days >= 6:
            at = self.p.start + max(5, self.p.options.days // 2) * DAY + 12 * HOUR
            self.p.add(at, "cash", "cash_payout_failure", "cash:payout_failure", case="payout_failure", currency="usd")

    def balance_entries(self) -> None:
        adjustment = {"currency": "usd", "amount": -self.amount("usd", 10, 60), "description": "Balance correction"}
        self.p.add(
            self.when(), "cash", "cash_balance_entry", "cash:adjustment", case="balance_adjustment", **adjustment
        )
        fee = {"currency": "usd", "amount": self.amount("usd", 20, 90), "description": "Billing - Usage Fee"}
        self.p.add(self.when(), "cash", "cash_balance_entry", "cash:account_fee", case="account_fee", **fee)


# The planted problems and the roles each records in `ScenarioSummary.problems`.
PROBLEM_CASES = {
    "unmapped_currency": ("invoice", "customer"),  # a paid GBP invoice: GBP is not under currencies:
    "customer_without_email": ("invoice", "customer"),  # a paid USD invoice of a customer with no email
    "unmapped_product": ("invoice", "customer"),  # a paid USD invoice with a line of prod_seats, mapped nowhere
}


class _ProblemsPlanner(_ReceivablesPlanner):
    """Plants the problems of a first sync on customers of their own (`planted_problems`)."""

    family = "problems"
    ref_prefix, label = "prb", "Problem"
    invoice_step = "case_invoice"

    def plan(self) -> int:
        at = self.when()
        actor = self.customer("gbp", at)
        self.invoice(at, actor, f"{actor}:inv", "unmapped_currency", "gbp", pay="card")
        at = self.when()
        actor = self.customer("usd", at)
        self.customers[-1].email = ""  # Stripe allows a customer without one; an account's form may not
        self.invoice(at, actor, f"{actor}:inv", "customer_without_email", "usd", pay="card")
        at = self.when()
        actor = self.customer("usd", at)
        items = [{"catalog": "onboarding", "quantity": 1}, {"catalog": "seats", "quantity": 5}]
        self.invoice(at, actor, f"{actor}:inv", "unmapped_product", "usd", pay="card", items=items)
        return self.invoices


def build_plan(options: ScenarioOptions) -> Plan:
    """Every customer, document, amount and instant of the scenario, decided from the seed alone."""
    return _Planner(options).build()


# ---------------------------------------------------------------------------------------------
# Stage 2: executing the plan through the APIs
# ---------------------------------------------------------------------------------------------


class ScenarioError(RuntimeError):
    """A step of the plan failed; the message names the step."""


def _json_text(value: Any) -> str:
    """JSON with Decimals written digit for digit (Salesforce currency fields), never through float."""
    marks: dict[str, str] = {}

    def mark(obj: Any) -> str:
        if isinstance(obj, Decimal):
            key = f"\u0000{len(marks)}\u0000"
            marks[key] = format(obj, "f")
            return key
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    text = json.dumps(value, default=mark)
    for key, digits in marks.items():
        text = text.replace(json.dumps(key), digits)
    return text


@dataclass
class SandboxClients:
    """The real client libraries, pointed at the stand-ins by the pipeline's environment variables."""

    stripe: stripe.StripeClient
    stripe_base: str
    netsuite: requests.Session  # OAuth 1.0a (TBA) signed
    netsuite_base: str
    salesforce: Salesforce
    # Sessions for the Stripe stand-in's /_sandbox/ control endpoints (no auth), one per thread.
    control: threading.local = field(default_factory=threading.local)
    _sessions: list[requests.Session] = field(default_factory=list)
    _sessions_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SandboxClients:
        # Imported here, not at the top: every `sync-pipeline` command imports this module.
        import stripe
        from requests_oauthlib import OAuth1
        from simple_salesforce import Salesforce

        stripe_base = env["STRIPE_API_BASE"].rstrip("/")
        stripe_client = stripe.StripeClient(
            env["STRIPE_API_KEY"],
            base_addresses={"api": stripe_base},
            stripe_version=STRIPE_API_VERSION,
            max_network_retries=2,
            http_client=stripe.RequestsClient(timeout=60),
        )
        netsuite = requests.Session()
        netsuite.auth = OAuth1(
            env["NETSUITE_CONSUMER_KEY"],
            env["NETSUITE_CONSUMER_SECRET"],
            env["NETSUITE_TOKEN_ID"],
            env["NETSUITE_TOKEN_SECRET"],
            realm=env["NETSUITE_ACCOUNT_ID"],
            signature_method="HMAC-SHA256",
        )
        sf_session = requests.Session()
        sf_session.verify = env.get("SALESFORCE_CA_BUNDLE") or True
        sf_session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, silently replaces `verify`
        if env.get("SALESFORCE_SESSION_ID"):
            salesforce = Salesforce(
                instance_url=env["SALESFORCE_INSTANCE_URL"],
                session_id=env["SALESFORCE_SESSION_ID"],
                session=sf_session,
                version=SALESFORCE_API_VERSION,
            )
        else:
            salesforce = Salesforce(
                username=env["SALESFORCE_USERNAME"],
                password=env["SALESFORCE_PASSWORD"],
                security_token=env.get("SALESFORCE_SECURITY_TOKEN", ""),
                instance_url=env["SALESFORCE_INSTANCE_URL"],
                session=sf_session,
                version=SALESFORCE_API_VERSION,
            )
        return cls(stripe_client, stripe_base, netsuite, env["NETSUITE_BASE_URL"].rstrip("/"), salesforce)

    def stripe_control(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST to the Stripe stand-in's `/_sandbox/<path>` (JSON in and out)."""
        response = self.control_session().post(f"{self.stripe_base}/_sandbox/{path}", json=body, timeout=60)
        if response.status_code >= 400:
            raise ScenarioError(f"Stripe sandbox control {path} answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def stripe_config(self) -> dict[str, Any]:
        """The Stripe stand-in's knobs (`GET /_sandbox/config`)."""
        response = self.control_session().get(f"{self.stripe_base}/_sandbox/config", timeout=60)
        if response.status_code >= 400:
            raise ScenarioError(f"Stripe sandbox config answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def control_session(self) -> requests.Session:
        # One pooled session per thread: requests.Session is not documented as thread-safe.
        session = getattr(self.control, "session", None)
        if session is None:
            session = self.control.session = requests.Session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        self.netsuite.close()
        self.salesforce.session.close()


@dataclass
class _DocumentFacts:
    """What the APIs last said about one invoice or invoice-less payment (for the summary)."""

    kind: str  # "invoice" or "charge"
    currency: str
    status: str
    total: int
    amount_paid: int
    discounted: bool = False
    taxed: bool = False
    failed_attempts: int = 0


class _Seeder:
    """Runs a plan's steps against the stand-ins and remembers what they answered."""

    def __init__(self, plan: Plan, clients: SandboxClients) -> None:
        self.plan = plan
        self.clients = clients
        self.stripe = clients.stripe.v1
        self.ids: dict[str, str] = {}
        self.documents: dict[str, _DocumentFacts] = {}
        self.refunds: list[tuple[str, int, bool]] = []  # (currency, amount, full)
        self.disputes: dict[str, tuple[str, int, str]] = {}  # ref -> (currency, amount, status)
        self.payouts: list[tuple[str, int, int]] = []  # (currency, amount, fees inside it)
        self.payout_log: list[tuple[str, str]] = []  # (currency, payout id), oldest first
        self.paid_in: dict[str, str] = {}  # balance transaction id -> the payout that paid it out
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.currency_of = {c.ref: c.currency for c in plan.customers}
        # receivables case -> occurrence (plan ref) -> role -> Stripe id
        self.cases: dict[str, dict[str, dict[str, str]]] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def remember(self, ref: str, object_id: str) -> None:
        with self.lock:
            self.ids[ref] = object_id

    def count(self, name: str, currency: str = "all", n: int = 1) -> None:
        with self.lock:
            self.counts[(name, currency)] += n

    def record_invoice(self, ref: str, invoice: Any, failed_attempts: int | None = None) -> None:
        with self.lock:
            previous = self.documents.get(ref)
            if failed_attempts is None:
                failed_attempts = previous.failed_attempts if previous else 0
            self.documents[ref] = _DocumentFacts(
                "invoice",
                invoice.currency,
                invoice.status,
                invoice.total,
                invoice.amount_paid,
                discounted=bool(invoice.discounts),
                taxed=bool(invoice.total_taxes),
                failed_attempts=failed_attempts,
            )
            self.ids[ref] = invoice.id

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        self.netsuite_customers()
        self.salesforce_records()
        try:
            self.timeline()
            self.link_cash_payouts()
        finally:
            self.clients.stripe_control("clock", {"real": True})
        self.salesforce_billing_links()

    def timeline(self) -> None:
        threads = max(1, self.plan.options.threads)
        with ThreadPoolExecutor(threads, thread_name_prefix="seed") as pool:
            for at, group in itertools.groupby(self.plan.steps, key=lambda s: s.at):
                self.clients.stripe_control("clock", {"now": at})
                steps = list(group)
                # Payouts read the balance, so they wait for everything else at that instant; so does a step that
                # changes the Stripe account's settings for a moment.
                exclusive = [s for s in steps if s.kind == "payout" or s.args.get("exclusive")]
                chains: dict[str, list[Step]] = defaultdict(list)
                for step in steps:
                    if not (step.kind == "payout" or step.args.get("exclusive")):
                        chains[step.actor].append(step)
                if threads == 1 or len(chains) == 1:
                    for chain in chains.values():
                        self.run_chain(chain)
                else:
                    list(pool.map(self.run_chain, chains.values()))
                self.run_chain(exclusive)

    def run_chain(self, steps: list[Step]) -> None:
        for step in steps:
            try:
                getattr(self, f"step_{step.kind}")(step)
            except ScenarioError:
                raise
            except Exception as exc:
                when = dt.datetime.fromtimestamp(step.at, dt.UTC).isoformat()
                raise ScenarioError(f"step {step.kind} {step.ref} at {when} failed: {exc!r}") from exc

    # -- NetSuite ------------------------------------------------------------------------------
    def netsuite_customers(self) -> None:
        """Customers that already exist in the books; Stripe customers link to them by metadata."""
        for customer in self.plan.customers:
            if not customer.netsuite_external_id:
                continue
            body = {
                "companyName": customer.name,
                "email": customer.email,
                "isPerson": False,
                "subsidiary": {"id": NETSUITE_SUBSIDIARY_ID[customer.currency]},
                "currency": {"id": NETSUITE_CURRENCY_ID[customer.currency]},
            }
            url = f"{self.clients.netsuite_base}/services/rest/record/v1/customer/eid:{customer.netsuite_external_id}"
            response = self.clients.netsuite.put(url, json=body, timeout=60)
            if response.status_code != 204:
                raise ScenarioError(
                    f"NetSuite customer {customer.netsuite_external_id}: {response.status_code} {response.text[:300]}"
                )
            self.remember(f"ns:{customer.ref}", response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
            self.count("netsuite_customers", customer.currency)

    # -- Salesforce ----------------------------------------------------------------------------
    def sf_collection(self, method: str, records: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for offset in range(0, len(records), SALESFORCE_BATCH):
            batch = records[offset : offset + SALESFORCE_BATCH]
            results = self.clients.salesforce.restful(
                "composite/sobjects", method=method, data=_json_text({"allOrNone": True, "records": batch})
            )
            failed = [r for r in results if not r.get("success")]
            if failed:
                raise ScenarioError(f"Salesforce {method} composite/sobjects failed: {failed[:3]}")
            ids.extend(r["id"] for r in results)
        return ids

    def sf_create(self, sobject: str, rows: list[dict[str, Any]], fields: Callable[[dict[str, Any]], dict]) -> None:
        records = [{"attributes": {"type": sobject}, **fields(row)} for row in rows]
        for row, new_id in zip(rows, self.sf_collection("POST", records), strict=True):
            if "ref" in row:
                self.remember(f"sf:{row['ref']}", new_id)
        self.count(f"salesforce_{SALESFORCE_PLURALS[sobject]}", n=len(rows))

    def salesforce_records(self) -> None:
        sf = self.plan.salesforce
        products = [
            {"ref": code, "fields": {"Name": item.name, "ProductCode": item.code, "IsActive": True}}
            for code, item in CATALOG.items()
        ]
        self.sf_create("Product2", products, lambda r: r["fields"])
        self.sf_create("Account", sf.accounts, lambda r: r["fields"])
        self.sf_create(
            "Contact", sf.contacts, lambda r: {**r["fields"], "AccountId": self.ids[f"sf:{r['account_ref']}"]}
        )
        self.sf_create(
            "Opportunity", sf.opportunities, lambda r: {**r["fields"], "AccountId": self.ids[f"sf:{r['account_ref']}"]}
        )
        self.sf_create(
            "OpportunityLineItem",
            sf.line_items,
            lambda r: {
                **r["fields"],
                "OpportunityId": self.ids[f"sf:{r['opportunity_ref']}"],
                "Product2Id": self.ids[f"sf:{r['catalog']}"],
            },
        )
        for opportunity in sf.opportunities:
            stage = opportunity["fields"]["StageName"]
            detail = ("_billed" if opportunity["billed_by"] else "_unbilled") if stage == "Closed Won" else ""
            self.count(f"salesforce_opportunities_{stage.lower().replace(' ', '_').replace('/', '_')}{detail}")

    def salesforce_billing_links(self) -> None:
        """Deals already billed in Stripe carry the Stripe ids, as the pipeline's write-back leaves them."""
        sf = self.plan.salesforce
        accounts = [
            {
                "attributes": {"type": "Account"},
                "id": self.ids[f"sf:{a['ref']}"],
                ACCOUNT_STRIPE_CUSTOMER_FIELD: self.ids[a["customer_ref"]],
            }
            for a in sf.accounts
            if a["customer_ref"]
        ]
        opportunities = [
            {
                "attributes": {"type": "Opportunity"},
                "id": self.ids[f"sf:{o['ref']}"],
                OPPORTUNITY_STRIPE_SUBSCRIPTION_FIELD: self.ids[o["billed_by"]],
            }
            for o in sf.opportunities
            if o["billed_by"]
        ]
        self.sf_collection("PATCH", accounts)
        self.sf_collection("PATCH", opportunities)

    # -- Stripe steps --------------------------------------------------------------------------
    def catalog_product(self, code: str, item: CatalogItem) -> Any:
        """The product `prod_<code>` (the id field_mapping.yaml maps), made once per Stripe account."""
        import stripe

        try:
            return self.stripe.products.create(
                {
                    "id": f"prod_{code}",
                    "name": item.name,
                    "metadata": {"sku": item.code, "netsuite_item_id": item.netsuite_item_id},
                }
            )
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_already_exists":
                raise
            return self.stripe.products.retrieve(f"prod_{code}")  # a second scenario in the same account

    def step_catalog(self, step: Step) -> None:
        catalog = {**CATALOG, **(PLANTED_PRODUCTS if self.plan.options.planted_problems else {})}
        for code, item in catalog.items():
            product = self.catalog_product(code, item)
            self.remember(f"product:{code}", product.id)
            for currency, amount in item.unit_amounts.items():
                # A second scenario in the same account takes the lookup keys over, as Stripe requires.
                params: dict[str, Any] = {
                    "product": product.id,
                    "currency": currency,
                    "unit_amount": amount,
                    "lookup_key": f"{code}_{currency}",
                    "transfer_lookup_key": True,
                }
                if item.recurring:
                    params["recurring"] = {"interval": "month"}
                self.remember(f"price:{code}:{currency}", self.stripe.prices.create(params).id)
                self.count("prices", currency)
        for code, (name, percent) in COUPONS.items():
            coupon = self.stripe.coupons.create({"name": name, "percent_off": percent, "duration": "once"})
            self.remember(f"coupon:{code}", coupon.id)
        rates = {**TAX_RATES, **(CASE_TAX_RATES if self.plan.options.receivables_cases else {})}
        for currency, (name, country, percentage) in rates.items():
            rate = self.stripe.tax_rates.create(
                {"display_name": name, "country": country, "inclusive": False, "percentage": str(percentage)}
            )
            self.remember(f"tax:{currency}", rate.id)
        self.count("products", n=len(catalog))

    def step_customer(self, step: Step) -> None:
        customer: CustomerPlan = step.args["customer"]
        metadata = {"sandbox_ref": customer.ref}
        if customer.netsuite_external_id:
            metadata["netsuite_customer_id"] = self.ids[f"ns:{customer.ref}"]
        if customer.salesforce_account_ref:
            metadata["salesforce_account_id"] = self.ids[f"sf:{customer.salesforce_account_ref}"]
        params = {
            "name": customer.name,
            "metadata": metadata,
            "address": {
                "country": {"usd": "US", "eur": "DE", "jpy": "JP", "kwd": "KW", "gbp": "GB"}[customer.currency]
            },
        }
        if customer.email:
            params["email"] = customer.email
        created = self.stripe.customers.create(params)
        self.remember(customer.ref, created.id)
        card = self.stripe.payment_methods.attach("pm_card_visa", {"customer": created.id})
        self.stripe.customers.update(created.id, {"invoice_settings": {"default_payment_method": card.id}})
        self.remember(f"{customer.ref}:card", card.id)
        self.count("customers", customer.currency)

    def failing_card(self, customer_ref: str) -> str:
        """A second card on file that attaches fine but declines every charge."""
        key = f"{customer_ref}:failing_card"
        if key not in self.ids:
            card = self.stripe.payment_methods.attach(
                "pm_card_chargeCustomerFail", {"customer": self.ids[customer_ref]}
            )
            self.remember(key, card.id)
        return self.ids[key]

    def discounts_and_taxes(self, args: Mapping[str, Any], currency: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if args.get("coupon"):
            params["discounts"] = [{"coupon": self.ids[f"coupon:{args['coupon']}"]}]
        if args.get("taxed"):
            params["default_tax_rates"] = [self.ids[f"tax:{currency}"]]
        return params

    def step_subscribe(self, step: Step) -> None:
        currency = self.currency_of[step.actor]
        metadata = {"sandbox_ref": step.ref}
        if step.args.get("opportunity"):
            metadata["salesforce_opportunity_id"] = self.ids[f"sf:{step.args['opportunity']}"]
        subscription = self.stripe.subscriptions.create(
            {
                "customer": self.ids[step.actor],
                "metadata": metadata,
                "expand": ["latest_invoice"],
                "items": [
                    {"price": self.ids[f"price:{step.args['plan']}:{currency}"], "quantity": step.args["quantity"]}
                ],
                **self.discounts_and_taxes(step.args, currency),
            }
        )
        self.remember(step.ref, subscription.id)
        self.remember(f"{step.ref}:item", subscription["items"].data[0].id)
        self.record_invoice(f"{step.ref}:0", subscription.latest_invoice)
        self.count("subscriptions", currency)

    def step_upgrade(self, step: Step) -> None:
        currency = self.currency_of[step.actor]
        subscription = self.stripe.subscriptions.update(
            self.ids[step.ref],
            {
                "items": [
                    {"id": self.ids[f"{step.ref}:item"], "price": self.ids[f"price:{step.args['to_plan']}:{currency}"]}
                ],
                "proration_behavior": "always_invoice",
                "expand": ["latest_invoice"],
            },
        )
        self.record_invoice(f"{step.ref}:upgrade", subscription.latest_invoice)
        self.count("subscription_upgrades", currency)

    def step_renew(self, step: Step) -> None:
        # The control bills the next period (moving the clock to the period's end when it is behind).
        self.clients.stripe_control(f"subscriptions/{self.ids[step.ref]}/advance", {})
        subscription = self.stripe.subscriptions.retrieve(self.ids[step.ref], {"expand": ["latest_invoice"]})
        self.record_invoice(f"{step.ref}:{step.args['period']}", subscription.latest_invoice)
        self.count("subscription_renewals", self.currency_of[step.actor])

    def step_invoice(self, step: Step) -> None:
        invoice = self.open_invoice(step, self.currency_of[step.actor])
        outcome = step.args["outcome"]
        if outcome == "paid":
            invoice = self.stripe.invoices.pay(invoice.id)
        elif outcome in ("failed_then_paid", "past_due", "uncollectible"):
            invoice = self.failed_payment(step.actor, invoice.id)
        self.record_invoice(step.ref, invoice, failed_attempts=1 if outcome not in ("paid", "void") else 0)

    def open_invoice(self, step: Step, currency: str, **extra: Any) -> Any:
        """A one-off invoice of the step's items, finalized (not yet paid)."""
        customer = self.ids[step.actor]
        draft = self.stripe.invoices.create(
            {
                "customer": customer,
                "currency": currency,
                "collection_method": "charge_automatically",
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "metadata": {"sandbox_ref": step.ref},
                **self.discounts_and_taxes(step.args, currency),
                **extra,
            }
        )
        for item in step.args["items"]:
            params: dict[str, Any] = {"customer": customer, "invoice": draft.id}
            if "catalog" in item:
                params.update(
                    pricing={"price": self.ids[f"price:{item['catalog']}:{currency}"]}, quantity=item["quantity"]
                )
            else:
                params.update(amount=item["amount"], currency=currency, description=item["description"])
            self.stripe.invoice_items.create(params)
        return self.stripe.invoices.finalize_invoice(draft.id, {"auto_advance": False})

    def failed_payment(self, customer_ref: str, invoice_id: str) -> Any:
        import stripe

        try:
            self.stripe.invoices.pay(invoice_id, {"payment_method": self.failing_card(customer_ref)})
        except stripe.CardError:
            return self.stripe.invoices.retrieve(invoice_id)
        raise ScenarioError(f"the declining card paid invoice {invoice_id}")

    def step_retry(self, step: Step) -> None:
        self.record_invoice(step.ref, self.stripe.invoices.pay(self.ids[step.ref]))

    def step_void(self, step: Step) -> None:
        self.record_invoice(step.ref, self.stripe.invoices.void_invoice(self.ids[step.ref]))

    def step_uncollectible(self, step: Step) -> None:
        self.record_invoice(step.ref, self.stripe.invoices.mark_uncollectible(self.ids[step.ref]))

    def step_charge(self, step: Step) -> None:
        currency = self.currency_of[step.actor]
        intent = self.stripe.payment_intents.create(
            {
                "amount": step.args["amount"],
                "currency": currency,
                "customer": self.ids[step.actor],
                "payment_method": self.ids[f"{step.actor}:card"],
                "payment_method_types": ["card"],
                "confirm": True,
                "off_session": True,
                "description": step.args["description"],
                "metadata": {"sandbox_ref": step.ref},
            }
        )
        self.remember(step.ref, intent.id)
        with self.lock:
            self.documents[step.ref] = _DocumentFacts(
                "charge", currency, intent.status, intent.amount, intent.amount_received
            )

    def payment_intent_of(self, ref: str) -> str:
        if self.documents[ref].kind == "charge":
            return self.ids[ref]
        payments = self.stripe.invoice_payments.list({"invoice": self.ids[ref], "status": "paid"})
        return payments.data[0].payment.payment_intent

    def step_refund(self, step: Step) -> None:
        facts = self.documents[step.ref]
        if facts.amount_paid <= 0:
            return  # nothing was collected (e.g. a 100%-discounted invoice)
        params: dict[str, Any] = {"payment_intent": self.payment_intent_of(step.ref), "reason": "requested_by_customer"}
        amount = facts.amount_paid
        if step.args["share"] is not None:
            grid = 10 if facts.currency == "kwd" else 1
            amount = max(grid, int(facts.amount_paid * step.args["share"]) // grid * grid)
            params["amount"] = amount
        refund = self.stripe.refunds.create(params)
        with self.lock:
            self.refunds.append((facts.currency, refund.amount, step.args["share"] is None))
        if step.args.get("case"):
            self.note_case(
                step.args["case"], step.ref, refund=refund.id, refund_balance_transaction=refund.balance_transaction
            )

    def step_dispute(self, step: Step) -> None:
        intent = self.stripe.payment_intents.retrieve(self.payment_intent_of(step.ref))
        dispute = self.clients.stripe_control("disputes", {"charge": intent.latest_charge})
        self.remember(f"{step.ref}:dispute", dispute["id"])
        with self.lock:
            self.disputes[step.ref] = (intent.currency, dispute["amount"], dispute["status"])
        if step.args.get("case"):
            self.note_case(
                step.args["case"], step.ref, dispute=dispute["id"], withdrawal=dispute["balance_transactions"][0]["id"]
            )

    def step_dispute_close(self, step: Step) -> None:
        dispute_id = self.ids[f"{step.ref}:dispute"]
        # Test mode's magic evidence decides a dispute on submission, as in Stripe's own test mode.
        evidence = "winning_evidence" if step.args["outcome"] == "won" else "losing_evidence"
        dispute = self.stripe.disputes.update(
            dispute_id, {"evidence": {"uncategorized_text": evidence}, "submit": True}
        )
        with self.lock:
            self.disputes[step.ref] = (dispute.currency, dispute.amount, dispute.status)
        if step.args.get("case") and len(dispute.balance_transactions) > 1:
            self.note_case(step.args["case"], step.ref, reinstatement=dispute.balance_transactions[1].id)

    def step_payout(self, step: Step) -> None:
        # Stripe's automatic payout of each currency's available balance (a sandbox control: the
        # real one runs on Stripe's schedule); it links every balance transaction it contains.
        for payout in self.clients.stripe_control("payouts", {}):
            contents = list(
                self.stripe.balance_transactions.list({"payout": payout["id"], "limit": 100}).auto_paging_iter()
            )
            self.remember(f"{step.ref}:{payout['currency']}", payout["id"])
            with self.lock:
                self.payouts.append((payout["currency"], payout["amount"], sum(txn.fee for txn in contents)))
                self.payout_log.append((payout["currency"], payout["id"]))
                self.paid_in.update((txn.id, payout["id"]) for txn in contents if txn.type != "payout")

    # -- receivables cases (see _ReceivablesPlanner) ------------------------------------------------
    def note_case(self, case: str, entry: str, **ids: str) -> None:
        """Remember what a case occurrence made: role -> Stripe id, per occurrence (the plan ref)."""
        with self.lock:
            self.cases.setdefault(case, {}).setdefault(entry, {}).update(ids)

    def step_case_invoice(self, step: Step) -> None:
        extra = {"effective_at": step.args["effective_at"]} if step.args.get("effective_at") else {}
        invoice = self.open_invoice(step, step.args["currency"], **extra)
        pay = step.args.get("pay")
        if pay == "card" and invoice.status == "open":
            if step.args.get("settle_in"):
                invoice = self.pay_settling_in(invoice.id, step.args["currency"], step.args["settle_in"])
            else:
                invoice = self.stripe.invoices.pay(invoice.id)
        elif pay == "fail":
            invoice = self.failed_payment(step.actor, invoice.id)
        self.record_invoice(step.ref, invoice, failed_attempts=1 if pay == "fail" else 0)
        role = step.args.get("role", "invoice")
        self.note_case(
            step.args["case"], step.args.get("entry", step.ref), **{role: invoice.id}, customer=invoice.customer
        )
        if step.args["case"] in CASH_CASES and invoice.status == "paid":
            charge = self.stripe.charges.retrieve(
                self.stripe.payment_intents.retrieve(self.payment_intent_of(step.ref)).latest_charge
            )
            self.note_case(
                step.args["case"], step.ref, charge=charge.id, balance_transaction=charge.balance_transaction
            )

    step_cash_invoice = step_case_invoice  # the cash cases' invoices: made and paid the same way

    def pay_settling_in(self, invoice_id: str, currency: str, settlement: str) -> Any:
        """Pay while the account settles `currency` in `settlement` (as before it had a bank account in `currency`);
        the scenario's other currencies keep settling in themselves. The knobs are put back afterwards."""
        previous = self.clients.stripe_config()
        knobs = {key: previous[key] for key in ("settlement_currencies", "exchange_rates")}
        others = [c for c in CURRENCY_EXPONENT if c not in (currency, settlement)]
        self.clients.stripe_control(
            "config",
            {
                "settlement_currencies": [settlement, *others],
                "exchange_rates": {**knobs["exchange_rates"], f"{currency}:{settlement}": CASH_EUR_USD},
            },
        )
        try:
            return self.stripe.invoices.pay(invoice_id)
        finally:
            self.clients.stripe_control("config", knobs)

    # -- cash cases (see _CashPlanner) -------------------------------------------------------------
    def step_cash_payout_failure(self, step: Step) -> None:
        """Fail the newest payout of the currency that has arrived (a paid payout the bank then returns)."""
        with self.lock:
            candidates = [p for c, p in reversed(self.payout_log) if c == step.args["currency"]]
        for payout_id in candidates:
            if self.stripe.payouts.retrieve(payout_id).status == "paid":
                failed = self.clients.stripe_control(f"payouts/{payout_id}/fail", {"failure_code": "account_closed"})
                self.note_case(
                    step.args["case"],
                    step.ref,
                    payout=failed["id"],
                    failure_balance_transaction=failed["failure_balance_transaction"],
                )
                return

    def step_cash_balance_entry(self, step: Step) -> None:
        """A balance adjustment or an account fee: Stripe's own entries in the balance, outside any payment."""
        control = {"balance_adjustment": "balance_adjustments", "account_fee": "account_fees"}[step.args["case"]]
        body = {key: step.args[key] for key in ("currency", "amount", "description")}
        txn = self.clients.stripe_control(control, body)
        roles = {"source": txn["source"]} if txn["source"] else {}
        self.note_case(step.args["case"], step.ref, balance_transaction=txn["id"], **roles)

    def link_cash_payouts(self) -> None:
        """Name, beside each cash case's balance transaction, the payout that paid it out (when one did)."""
        for case in CASH_CASES:
            for entry in self.cases.get(case, {}).values():
                for role in CASH_TRANSACTION_ROLES:
                    payout = self.paid_in.get(entry.get(role, ""))
                    if payout:
                        entry[f"{role}_payout"] = payout

    def step_case_pay(self, step: Step) -> None:
        params = {"paid_out_of_band": True} if step.args["out_of_band"] else {}
        self.record_invoice(step.ref, self.stripe.invoices.pay(self.ids[step.ref], params))

    def step_case_credit_note(self, step: Step) -> None:
        invoice = self.stripe.invoices.retrieve(self.ids[step.ref])
        grid = 10 if invoice.currency == "kwd" else 1
        share = step.args["share"]
        lines = []
        for line in self.stripe.invoices.line_items.list(invoice.id, {"limit": 100}).auto_paging_iter():
            amount = line.amount if share is None else max(grid, int(line.amount * share) // grid * grid)
            lines.append({"type": "invoice_line_item", "invoice_line_item": line.id, "amount": amount})
        params: dict[str, Any] = {"invoice": invoice.id, "lines": lines, "metadata": {"sandbox_ref": step.ref}}
        if step.args["split"] == "refund":
            # Every line in full: the note's total is the invoice's, all of it refunded.
            params.update(refund_amount=invoice.amount_paid, reason="product_unsatisfactory")
        elif step.args["split"] == "thirds":
            # Untaxed and undiscounted, so the note's total is the sum of its line amounts.
            total = sum(line["amount"] for line in lines)
            third = total // 3 // grid * grid
            params.update(refund_amount=third, credit_amount=third, out_of_band_amount=total - 2 * third)
            params["reason"] = "order_change"
        note = self.stripe.credit_notes.create(params)
        self.remember(f"{step.ref}:credit_note", note.id)
        refunds = {f"refund_{n}": r.refund for n, r in enumerate(note.refunds)}
        if note.refunds:
            with self.lock:
                self.refunds.extend(
                    (note.currency, r.amount_refunded, step.args["split"] == "refund") for r in note.refunds
                )
        self.note_case(step.args["case"], step.ref, credit_note=note.id, **refunds)
        if note.customer_balance_transaction:
            self.note_case(step.args["case"], step.ref, balance_transaction=note.customer_balance_transaction)
        self.record_invoice(step.ref, self.stripe.invoices.retrieve(invoice.id))

    def step_case_void_credit_note(self, step: Step) -> None:
        note = self.stripe.credit_notes.void_credit_note(self.ids[f"{step.ref}:credit_note"])
        self.note_case(step.args["case"], step.ref, voided_credit_note=note.id)
        self.record_invoice(step.ref, self.stripe.invoices.retrieve(self.ids[step.ref]))

    def step_case_balance(self, step: Step) -> None:
        txn = self.stripe.customers.balance_transactions.create(
            self.ids[step.actor],
            {
                "amount": step.args["amount"],
                "currency": self.currency_of[step.actor],
                "description": "Goodwill credit" if step.args["amount"] < 0 else "Balance carried over",
            },
        )
        self.note_case(step.args["case"], f"{step.actor}:inv", balance_transaction=txn.id)

    def step_case_partial_payment(self, step: Step) -> None:
        invoice = self.stripe.invoices.retrieve(self.ids[step.ref])
        grid = 10 if invoice.currency == "kwd" else 1
        intent = self.stripe.payment_intents.create(
            {
                "amount": max(grid, int(invoice.amount_remaining * step.args["share"]) // grid * grid),
                "currency": invoice.currency,
                "customer": invoice.customer,
                "payment_method": self.ids[f"{step.actor}:card"],
                "payment_method_types": ["card"],
                "confirm": True,
                "off_session": True,
                "description": f"Part payment of invoice {invoice.number}",
                "metadata": {"sandbox_ref": step.ref},
            }
        )
        self.remember(f"{step.ref}:partial", intent.id)
        self.record_invoice(step.ref, self.stripe.invoices.attach_payment(invoice.id, {"payment_intent": intent.id}))
        self.note_case(step.args["case"], step.ref, partial_payment_intent=intent.id)

    def step_case_refund_partial(self, step: Step) -> None:
        intent = self.stripe.payment_intents.retrieve(self.ids[f"{step.ref}:partial"])
        grid = 10 if intent.currency == "kwd" else 1
        amount = max(grid, int(intent.amount_received * step.args["share"]) // grid * grid)
        refund = self.stripe.refunds.create(
            {"payment_intent": intent.id, "amount": amount, "reason": "requested_by_customer"}
        )
        with self.lock:
            self.refunds.append((intent.currency, refund.amount, False))
        self.note_case(step.args["case"], step.ref, refund=refund.id)

    # -- the summary ---------------------------------------------------------------------------
    def summary(self) -> ScenarioSummary:
        counts = Counter(self.counts)
        totals: dict[tuple[str, str], int] = defaultdict(int)  # (measure, currency) -> minor units
        for facts in self.documents.values():
            currency = facts.currency
            if facts.kind == "invoice":
                counts[("invoices", currency)] += 1
                counts[(f"invoices_{facts.status}", currency)] += 1
                counts[("invoices_discounted", currency)] += facts.discounted
                counts[("invoices_taxed", currency)] += facts.taxed
                counts[("invoices_failed_then_paid", currency)] += bool(
                    facts.failed_attempts and facts.status == "paid"
                )
                totals[("invoiced", currency)] += facts.total
            else:
                counts[("charges_without_invoice", currency)] += 1
                totals[("invoiceless_charges", currency)] += facts.amount_paid
            totals[("collected", currency)] += facts.amount_paid
        for currency, amount, full in self.refunds:
            counts[("refunds_full" if full else "refunds_partial", currency)] += 1
            totals[("refunded", currency)] += amount
        for currency, amount, status in self.disputes.values():
            counts[(f"disputes_{status}", currency)] += 1
            if status == "lost":
                totals[("disputes_lost", currency)] += amount
        for case, entries in self.cases.items():
            counts[(f"{'cash' if case in CASH_CASES else 'receivables'}_{case}", "all")] += len(entries)
        for currency, amount, fees in self.payouts:
            counts[("payouts", currency)] += 1
            totals[("payouts", currency)] += amount
            totals[("payout_fees", currency)] += fees
        digest = hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(self.ids.items())).encode()).hexdigest()
        return ScenarioSummary(
            window=tuple(dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat() for t in self.plan.window),
            seed=self.plan.options.seed,
            counts=_nested(counts.items()),
            totals=_nested((key, minor_to_decimal(amount, key[1])) for key, amount in totals.items()),
            ids_digest=digest[:16],
            receivables={
                c: list(entries.values())
                for c, entries in sorted(self.cases.items())
                if c not in CASH_CASES and c not in PROBLEM_CASES
            },
            cash={c: list(entries.values()) for c, entries in sorted(self.cases.items()) if c in CASH_CASES},
            problems={c: list(entries.values()) for c, entries in sorted(self.cases.items()) if c in PROBLEM_CASES},
        )


def _nested(items: Iterable[tuple[tuple[str, str], Any]]) -> dict[str, dict[str, Any]]:
    """{(name, currency): value} as {name: {currency: value}}, sorted, without zero counts."""
    nested: dict[str, dict[str, Any]] = defaultdict(dict)
    for (name, currency), value in sorted(items):
        if not (isinstance(value, int) and value == 0):
            nested[name][currency] = value
    return dict(nested)


def seed_scenario(env: Mapping[str, str], options: ScenarioOptions | None = None) -> ScenarioSummary:
    """Make the scenario of `options` in the stand-ins named by `env` (the pipeline's variables)."""
    plan = build_plan(options or ScenarioOptions())
    clients = SandboxClients.from_env(env)
    try:
        seeder = _Seeder(plan, clients)
        seeder.run()
        return seeder.summary()
    finally:
        clients.close()
