"""What the report shows, read from the warehouse's analytical views (`schema.views`) and nothing else.

Each `Section` is one query over one view: its rows fill a table on the page and, where it has a
chart, the chart too, so a chart never shows a figure the tables and views do not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from totesys_etl.adapters.postgres import Connection, transaction
from totesys_etl.schema.views import SCHEMA, view

#: How the page writes a column: plain text, a whole number, or money (exact, never rounded).
TEXT, COUNT, MONEY, DATE = "text", "count", "money", "date"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    view: str
    columns: tuple[tuple[str, str, str], ...]  # (column, heading, kind)
    query: str  # the columns above, in order, from `{view}`; may aggregate the view's rows
    note: str = ""
    table: bool = True  # False: the rows feed a chart only (a month-by-month series is too long to list)
    wide: bool = False  # the whole width of the page (a table with many money columns)


def _q(name: str) -> str:
    return view(name).qualified


def _told_apart(name: str, key: str) -> str:
    """A name, with its id where another row of the view has the same name ("Bronze (#123)")."""
    return (f"CASE WHEN namesakes > 1 THEN coalesce({name}, '(unknown)') || ' (#' || {key} || ')' "
            f"ELSE {name} END")


_SALES_COLUMNS = (("orders", "Orders", COUNT), ("units_sold", "Units", COUNT), ("sales_value", "Value", MONEY))
_GBP_COLUMNS = (("orders", "Orders", COUNT), ("units_sold", "Units", COUNT), ("sales_value_gbp", "Sales, £", MONEY))

SECTIONS: tuple[Section, ...] = (
    Section("trend", "Sales and purchases per month, in GBP", "gbp_by_month",
            (("month", "Month", DATE), ("sales_value_gbp", "Sales, £", MONEY),
             ("purchase_value_gbp", "Purchases, £", MONEY)),
            f"SELECT month, sales_value_gbp, purchase_value_gbp "  # nosec B608
            f"FROM {_q('gbp_by_month')} ORDER BY month",
            note="each order at its agreed payment date's rate; a month without orders is a gap",
            table=False, wide=True),
    Section("counterparties", "Best customers", "sales_in_gbp_by_counterparty",
            (("name", "Customer", TEXT), *_GBP_COLUMNS),
            f"SELECT {_told_apart('counterparty_legal_name', 'counterparty_id')}, "  # nosec B608
            f"orders, units_sold, sales_value_gbp FROM {_q('sales_in_gbp_by_counterparty')} "
            f"ORDER BY sales_value_gbp DESC NULLS LAST, 1 LIMIT 10", note="top 10 by sales in GBP"),
    Section("designs", "Best designs", "sales_in_gbp_by_design",
            (("name", "Design", TEXT), *_GBP_COLUMNS),
            f"SELECT {_told_apart('design_name', 'design_id')}, orders, units_sold, "  # nosec B608
            f"sales_value_gbp FROM {_q('sales_in_gbp_by_design')} "
            f"ORDER BY sales_value_gbp DESC NULLS LAST, 1 LIMIT 10",
            note="top 10 by sales in GBP; designs that share a name carry their id"),
    Section("countries", "Where orders go", "sales_in_gbp_by_country",
            (("country", "Country", TEXT), *_GBP_COLUMNS),
            f"SELECT country, orders, units_sold, sales_value_gbp "  # nosec B608
            f"FROM {_q('sales_in_gbp_by_country')} ORDER BY sales_value_gbp DESC NULLS LAST, 1 LIMIT 10",
            note="top 10 delivery countries by sales in GBP"),
    Section("ageing", "Payments outstanding, by age", "payments_outstanding",
            (("age", "Age", TEXT), ("direction", "Direction", TEXT), ("payments", "Payments", COUNT),
             ("amount_gbp", "Amount, £", MONEY)),
            f"SELECT age, direction, count(*), sum(payment_amount_gbp) "  # nosec B608
            f"FROM {_q('payments_outstanding')} GROUP BY age, age_order, direction ORDER BY age_order, direction",
            note="days past the payment date; in GBP at the newest stored rate"),
    Section("deliveries", "On-time delivery by courier", "delivery_on_time",
            (("courier", "Courier", TEXT), ("deliveries", "Delivered", COUNT), ("on_time", "On time", COUNT),
             ("late", "Late", COUNT), ("on_time_rate", "On time %", TEXT)),
            f"SELECT courier, sum(deliveries), sum(on_time), sum(late), "  # nosec B608
            f"coalesce(to_char(100 * sum(on_time) / nullif(sum(on_time) + sum(late), 0), 'FM990.0'), '-') "
            f"FROM {_q('delivery_on_time')} GROUP BY courier ORDER BY 2 DESC, 1",
            note="courier files: first delivery against the order's agreed date, all months and cities"),
    Section("currency", "Sales by currency", "sales_by_currency",
            (("currency_code", "Currency", TEXT), ("currency_name", "Name", TEXT), *_SALES_COLUMNS),
            f"SELECT currency_code, currency_name, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_currency')} ORDER BY sales_value DESC, currency_code",
            note="in each currency as sold"),
    Section("month", "Sales per month, by currency", "sales_by_month",
            (("month", "Month", DATE), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT month, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_month')} ORDER BY month, currency_code", table=False,
            note="in each currency as sold; a month without orders is a gap"),
    Section("quarter", "Sales per quarter", "sales_by_quarter",
            (("quarter", "Quarter", TEXT), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT year || ' Q' || quarter, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_quarter')} WHERE (year, quarter) IN (SELECT DISTINCT year, quarter "
            f"FROM {_q('sales_by_quarter')} ORDER BY year DESC, quarter DESC LIMIT 4) "
            f"ORDER BY year DESC, quarter DESC, currency_code",
            note="the latest four quarters, newest first, in each currency as sold"),
    Section("staff", "Top 10 sales staff", "sales_by_staff",
            (("name", "Staff", TEXT), ("department_name", "Department", TEXT), ("units_sold", "Units", COUNT),
             ("orders", "Orders", COUNT)),
            f"SELECT first_name || ' ' || last_name, department_name, sum(units_sold), "  # nosec B608
            f"sum(orders) FROM {_q('sales_by_staff')} GROUP BY staff_id, first_name, last_name, department_name "
            f"ORDER BY 3 DESC, 1 LIMIT 10", note="by units sold, all currencies"),
    Section("departments", "Sales by department", "sales_by_department",
            (("department_name", "Department", TEXT), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT department_name, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_department')} ORDER BY department_name, currency_code",
            note="in each currency as sold"),
    Section("payments", "Payments paid and outstanding", "payments_by_type",
            (("payment_type_name", "Type", TEXT), ("currency_code", "Currency", TEXT),
             ("paid_payments", "Paid", COUNT), ("paid_value", "Paid value", MONEY),
             ("outstanding_payments", "Outstanding", COUNT), ("outstanding_value", "Outstanding value", MONEY)),
            f"SELECT payment_type_name, currency_code, paid_payments, paid_value, "  # nosec B608
            f"outstanding_payments, outstanding_value FROM {_q('payments_by_type')} "
            f"ORDER BY payment_type_name, currency_code", wide=True, note="in each currency as paid"),
)

#: The headline figures in GBP, each from one view, with what the sum left out or valued at a carried rate.
HEADLINE_GBP = {
    "sales": f"SELECT sum(sales_value_gbp), count(*), count(*) - count(sales_value_gbp), "  # nosec B608
             f"count(*) FILTER (WHERE rate_carried), max(agreed_payment_date) FILTER (WHERE sales_value_gbp IS NULL), "
             f"max(sales_value_gbp) FROM {_q('sales_in_gbp')}",
    "purchases": f"SELECT sum(purchase_value_gbp), count(*), count(*) - count(purchase_value_gbp), "  # nosec B608
                 f"count(*) FILTER (WHERE rate_carried), "
                 f"max(agreed_payment_date) FILTER (WHERE purchase_value_gbp IS NULL), max(purchase_value_gbp) "
                 f"FROM {_q('purchases_in_gbp')}",
}
_HEADLINE_COLUMNS = ("value", "orders", "without_rate", "carried", "latest_without_rate", "largest")
OUTSTANDING_GBP = (f"SELECT direction, sum(payment_amount_gbp), count(*), "  # nosec B608
                   f"count(*) - count(payment_amount_gbp), count(*) FILTER (WHERE days_overdue > 0), "
                   f"max(rate_date) FROM {_q('payments_outstanding')} GROUP BY direction")
_OUTSTANDING_COLUMNS = ("value", "payments", "without_rate", "overdue", "rate_date")


@dataclass
class Figures:
    """Everything the page shows. `state` is "no views" (nothing loaded yet), "old views" (loaded by an
    older release, without the views of migration 6), "empty" or "ok"."""

    state: str
    freshness: dict = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)  # section key -> rows as {column: value}
    totals: dict = field(default_factory=dict)
    gbp: dict[str, dict] = field(default_factory=dict)  # "sales", "purchases", "to receive", "to pay" -> figures


def read_figures(conn: Connection) -> Figures:
    """Every section's rows in one read-only snapshot, so tables, charts and freshness agree."""
    with transaction(conn, isolation="REPEATABLE READ", read_only=True):
        if conn.run("SELECT to_regclass(:v)", v=f"{SCHEMA}.freshness")[0][0] is None:
            return Figures("no views")
        names = ("newest_run_id", "last_loaded_at", "runs_loaded", "newest_source_change")
        freshness = dict(zip(names, conn.run(f"SELECT {', '.join(names)} FROM {_q('freshness')}")[0]))  # nosec B608
        totals = dict(zip(("orders", "units_sold"), conn.run(
            f"SELECT coalesce(sum(orders), 0), coalesce(sum(units_sold), 0) "  # nosec B608
            f"FROM {_q('sales_by_currency')}")[0]))
        if conn.run("SELECT to_regclass(:v)", v=f"{SCHEMA}.gbp_by_month")[0][0] is None:
            return Figures("old views", freshness)  # loaded by an older release: its next load migrates
        rows = {s.key: [dict(zip((c for c, _, _ in s.columns), r)) for r in conn.run(s.query)] for s in SECTIONS}
        gbp = {name: dict(zip(_HEADLINE_COLUMNS, conn.run(query)[0])) for name, query in HEADLINE_GBP.items()}
        gbp.update({r[0]: dict(zip(_OUTSTANDING_COLUMNS, r[1:])) for r in conn.run(OUTSTANDING_GBP)})
    return Figures("ok" if totals["orders"] else "empty", freshness, rows, totals, gbp)


def money(value: Decimal | None) -> str:
    """Money exactly: thousands separated, at least two places, every digit kept (a cell's title)."""
    if value is None:
        return ""
    cents = value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value.normalize()
    return f"{cents:,f}" if cents.as_tuple().exponent < -2 else f"{cents:,.2f}"


def rounded(value: Decimal | None, places: int = 2) -> str:
    """Money as a reader scans it: rounded half to even, in decimal (never through a float)."""
    if value is None:
        return ""
    with localcontext() as context:
        context.prec = 80
        return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):,.{places}f}"


def compact(value: Decimal) -> str:
    """A headline amount in a few digits (`5.73 trillion`); the card's title keeps the exact value."""
    for size, word in ((Decimal(10) ** 12, "trillion"), (Decimal(10) ** 9, "billion"), (Decimal(10) ** 6, "million")):
        if abs(value) >= size:
            return f"{rounded(value / size)} {word}"
    return rounded(value, 0)


def pounds(value: Decimal | None) -> str:
    """A headline GBP amount: `£1.52 billion`, `-£2.50 million`, `£64`; `£ -` when nothing could be valued."""
    if value is None:
        return "£ -"
    return ("-£" if value < 0 else "£") + compact(abs(value))


def cell(kind: str, value) -> str:
    """One figure as the page writes it (the browser test reads the page back through this)."""
    if value is None:
        return "(unknown)" if kind == TEXT else ""
    if kind == MONEY:
        return rounded(value)
    if kind == COUNT:
        return f"{value:,}"
    return str(value)
