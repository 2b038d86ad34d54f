"""What the report shows, read from the warehouse's analytical views (`schema.views`) and nothing else.

Each `Section` is one query over one view: its rows fill a table on the page and, where it has a
chart, the chart too, so a chart never shows a figure the tables and views do not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from totesys_etl.adapters.postgres import Connection, transaction
from totesys_etl.schema.views import DELIVERY_VIEWS, SCHEMA, view

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


_SALES_COLUMNS = (("orders", "Orders", COUNT), ("units_sold", "Units", COUNT), ("sales_value", "Value", MONEY))

SECTIONS: tuple[Section, ...] = (
    Section("currency", "Sales by currency", "sales_by_currency",
            (("currency_code", "Currency", TEXT), ("currency_name", "Name", TEXT), *_SALES_COLUMNS),
            f"SELECT currency_code, currency_name, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_currency')} ORDER BY sales_value DESC, currency_code"),
    Section("month", "Sales value per month", "sales_by_month",
            (("month", "Month", DATE), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT month, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_month')} ORDER BY month, currency_code", table=False),
    Section("quarter", "Sales per quarter", "sales_by_quarter",
            (("quarter", "Quarter", TEXT), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT year || ' Q' || quarter, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_quarter')} WHERE (year, quarter) IN (SELECT DISTINCT year, quarter "
            f"FROM {_q('sales_by_quarter')} ORDER BY year DESC, quarter DESC LIMIT 4) "
            f"ORDER BY year DESC, quarter DESC, currency_code",
            note="the latest four quarters, newest first"),
    Section("purchases", "Sales and purchases per month", "purchases_and_sales_by_month",
            (("month", "Month", DATE), ("currency_code", "Currency", TEXT), ("sales_value", "Sales", MONEY),
             ("purchase_value", "Purchases", MONEY)),
            f"SELECT month, currency_code, sales_value, purchase_value "  # nosec B608
            f"FROM {_q('purchases_and_sales_by_month')} ORDER BY month, currency_code", table=False),
    Section("designs", "Top 10 designs", "top_designs",
            (("units_rank", "Rank", COUNT), ("design_name", "Design", TEXT), ("units_sold", "Units", COUNT),
             ("orders", "Orders", COUNT)),
            f"SELECT units_rank, design_name, units_sold, orders FROM {_q('top_designs')} "  # nosec B608
            f"ORDER BY units_rank, design_name LIMIT 10", note="by units sold"),
    Section("countries", "Top 10 delivery countries", "sales_by_delivery_location",
            (("country", "Country", TEXT), ("units_sold", "Units", COUNT), ("orders", "Orders", COUNT)),
            f"SELECT country, sum(units_sold), sum(orders) FROM {_q('sales_by_delivery_location')} "  # nosec B608
            f"GROUP BY country ORDER BY 2 DESC, 1 LIMIT 10", note="by units sold, all cities and currencies"),
    Section("counterparties", "Top 10 counterparties", "sales_by_counterparty",
            (("counterparty_legal_name", "Counterparty", TEXT), ("units_sold", "Units", COUNT),
             ("orders", "Orders", COUNT)),
            f"SELECT counterparty_legal_name, sum(units_sold), sum(orders) "  # nosec B608
            f"FROM {_q('sales_by_counterparty')} GROUP BY counterparty_id, counterparty_legal_name "
            f"ORDER BY 2 DESC, 1 LIMIT 10", note="by units sold, all currencies"),
    Section("staff", "Top 10 sales staff", "sales_by_staff",
            (("name", "Staff", TEXT), ("department_name", "Department", TEXT), ("units_sold", "Units", COUNT),
             ("orders", "Orders", COUNT)),
            f"SELECT first_name || ' ' || last_name, department_name, sum(units_sold), "  # nosec B608
            f"sum(orders) FROM {_q('sales_by_staff')} GROUP BY staff_id, first_name, last_name, department_name "
            f"ORDER BY 3 DESC, 1 LIMIT 10", note="by units sold, all currencies"),
    Section("payments", "Payments paid and outstanding", "payments_by_type",
            (("payment_type_name", "Type", TEXT), ("currency_code", "Currency", TEXT),
             ("paid_payments", "Paid", COUNT), ("paid_value", "Paid value", MONEY),
             ("outstanding_payments", "Outstanding", COUNT), ("outstanding_value", "Outstanding value", MONEY)),
            f"SELECT payment_type_name, currency_code, paid_payments, paid_value, "  # nosec B608
            f"outstanding_payments, outstanding_value FROM {_q('payments_by_type')} "
            f"ORDER BY payment_type_name, currency_code", wide=True),
    Section("departments", "Sales by department", "sales_by_department",
            (("department_name", "Department", TEXT), ("currency_code", "Currency", TEXT), *_SALES_COLUMNS),
            f"SELECT department_name, currency_code, orders, units_sold, sales_value "  # nosec B608
            f"FROM {_q('sales_by_department')} ORDER BY department_name, currency_code"),
    Section("deliveries", "On-time delivery by courier", "delivery_on_time",
            (("courier", "Courier", TEXT), ("deliveries", "Delivered", COUNT), ("on_time", "On time", COUNT),
             ("late", "Late", COUNT), ("on_time_rate", "On time %", TEXT)),
            f"SELECT courier, sum(deliveries), sum(on_time), sum(late), "  # nosec B608
            f"coalesce(to_char(100 * sum(on_time) / nullif(sum(on_time) + sum(late), 0), 'FM990.0'), '-') "
            f"FROM {view('delivery_on_time', DELIVERY_VIEWS).qualified} GROUP BY courier ORDER BY 2 DESC, 1",
            note="courier files: first delivery against the order's agreed date, all months and cities"),
)


@dataclass
class Figures:
    """Everything the page shows. `state` is "no views" (nothing loaded yet), "empty" or "ok"."""

    state: str
    freshness: dict = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)  # section key -> rows as {column: value}
    totals: dict = field(default_factory=dict)


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
        rows = {s.key: [dict(zip((c for c, _, _ in s.columns), r)) for r in conn.run(s.query)] for s in SECTIONS}
    return Figures("ok" if totals["orders"] else "empty", freshness, rows, totals)


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


def cell(kind: str, value) -> str:
    """One figure as the page writes it (the browser test reads the page back through this)."""
    if value is None:
        return "(unknown)" if kind == TEXT else ""
    if kind == MONEY:
        return rounded(value)
    if kind == COUNT:
        return f"{value:,}"
    return str(value)
