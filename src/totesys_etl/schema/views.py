"""The warehouse's analytical views (issue 25), declared once: what a BI tool and `totesys-etl report` read.

They live in a schema of their own, `analytics`, so `public` keeps exactly contract §3's tables. Facts
keep history (one row per version), so every view reads a fact through its `current_*` view: the
version of each id that the latest run read, i.e. the row with the greatest `etl_run_id`, then the
greatest `last_updated_date, last_updated_time` (`warehouse.newest_first`; newer means committed
later, not stamped later).

Money stays `numeric` and is never added across currencies in its own currency: a view that sums
money as sold has a `currency_code` column. Sums across currencies are in GBP, through
`fact_exchange_rate` (contract §3, §9): FX_VIEWS value each order at its agreed payment date's rate
(`sales_in_gbp`, `purchases_in_gbp`), and REPORT_VIEWS add them up per month, customer, design and
country, and age the payments outstanding (valued at the newest stored rate, as a ledger revalues
open items at the closing rate). Every GBP sum says how many orders it could not value yet (no rate
stored for their date) and how many at a carried rate (a weekend or holiday: the last published one).
Values: sales `units_sold * unit_price`, purchases `item_quantity * item_unit_price`, payments
`payment_amount`. Dimension joins are LEFT joins, so a fact whose dimension row comes with a later
run still counts.

Migration 3 creates VIEWS, migration 4 FX_VIEWS, migration 5 DELIVERY_VIEWS, migration 6 REPORT_VIEWS
(and FX_VIEWS again, which gained columns). Changing one later means a new migration that creates it
again with `replace=True`, never an edit of an applied migration's meaning; a replaced view may only
gain columns at its end (PostgreSQL's rule for `CREATE OR REPLACE VIEW`).
"""
from __future__ import annotations

from dataclasses import dataclass

from pg8000.native import identifier, literal

from totesys_etl.schema.model import Table
from totesys_etl.schema.cdc import deleted_after
from totesys_etl.schema.warehouse import FACTS, RUN_ID, STATE_TABLES, newest_first

SCHEMA = "analytics"


@dataclass(frozen=True)
class View:
    name: str
    description: str
    select: str

    @property
    def qualified(self) -> str:
        return f"{identifier(SCHEMA)}.{identifier(self.name)}"


def _current(fact: Table, value: str | None, live: bool = False) -> View:
    """One fact's current versions: DISTINCT ON the source id, newest first by `newest_first`; with
    `live` (migration 7), less the ids deleted since that version (schema/cdc.py, contract §10)."""
    source_id = fact.version_key[0]
    order = ", ".join(f"f.{identifier(c)} DESC" for c in newest_first(fact))
    extra = f", {value}" if value else ""
    select = (f"SELECT DISTINCT ON (f.{identifier(source_id)}) f.*{extra} "  # nosec B608
              f"FROM public.{identifier(fact.name)} f "
              f"ORDER BY f.{identifier(source_id)}, {order}")
    if live:
        deleted = deleted_after(fact.source, f"c.{identifier(source_id)}", f"c.{identifier(RUN_ID.name)}")
        select = f"SELECT c.* FROM ({select}) c WHERE NOT {deleted}"  # nosec B608 - declared names
    return View(
        f"current_{fact.source}",
        f"The current version of each `{source_id}` in `{fact.name}`: the row with the greatest `etl_run_id`, "
        f"then the greatest `last_updated_date, last_updated_time` (newer means committed later, not stamped "
        f"later)" + (f"; adds `{value.split(' AS ')[1]}`" if value else "")
        + ("; an id deleted in the source since that version is left out (`etl_deleted_row`)" if live else "") + ".",
        select)


_VALUES = {"fact_sales_order": "f.units_sold * f.unit_price AS sales_value",
           "fact_purchase_order": "f.item_quantity * f.item_unit_price AS purchase_value",
           "fact_payment": None}
CURRENT_VIEWS = tuple(_current(fact, _VALUES[fact.name]) for fact in FACTS)
#: The same views as migration 7 replaces them: deleted ids left out, so every view over them is too.
LIVE_CURRENT_VIEWS = tuple(_current(fact, _VALUES[fact.name], live=True) for fact in FACTS)

_SALES = f"{identifier(SCHEMA)}.current_sales_order s LEFT JOIN public.dim_currency c USING (currency_id)"
_SALES_FIGURES = "count(*) AS orders, sum(s.units_sold) AS units_sold, sum(s.sales_value) AS sales_value"


def _newest_source_change() -> str:
    """The greatest `last_updated` in any fact or state row: the newest source change the warehouse holds."""
    facts = [f"SELECT max(last_updated_date + last_updated_time) AS t FROM public.{identifier(f.name)}"  # nosec B608
             for f in FACTS]
    states = [f"SELECT max(last_updated) FROM public.{identifier(t.name)}" for t in STATE_TABLES]  # nosec B608
    return f"(SELECT max(t) FROM ({' UNION ALL '.join(facts + states)}) changes)"  # nosec B608


ANALYTICAL_VIEWS = (
    View("sales_by_month", "Sales per calendar month of `created_date` and currency: orders, units, value.",
         f"SELECT date_trunc('month', s.created_date)::date AS month, "  # nosec B608
         f"extract(year FROM s.created_date)::int AS year, extract(quarter FROM s.created_date)::int AS quarter, "
         f"c.currency_code, {_SALES_FIGURES} FROM {_SALES} GROUP BY 1, 2, 3, 4"),
    View("sales_by_quarter", "Sales per calendar quarter of `created_date` and currency: orders, units, value.",
         f"SELECT extract(year FROM s.created_date)::int AS year, "  # nosec B608
         f"extract(quarter FROM s.created_date)::int AS quarter, c.currency_code, {_SALES_FIGURES} "
         f"FROM {_SALES} GROUP BY 1, 2, 3"),
    View("sales_by_delivery_location", "Sales per country and city of the agreed delivery location, and currency.",
         f"SELECT l.country, l.city, c.currency_code, {_SALES_FIGURES} FROM {_SALES} "  # nosec B608
         f"LEFT JOIN public.dim_location l ON l.location_id = s.agreed_delivery_location_id GROUP BY 1, 2, 3"),
    View("sales_by_counterparty", "Sales per counterparty (with its legal name) and currency.",
         f"SELECT s.counterparty_id, p.counterparty_legal_name, c.currency_code, "  # nosec B608
         f"{_SALES_FIGURES} FROM {_SALES} "
         f"LEFT JOIN public.dim_counterparty p USING (counterparty_id) GROUP BY 1, 2, 3"),
    View("top_designs", "Designs ranked by units sold (units need no currency): `units_rank` 1 sold most.",
         "SELECT s.design_id, d.design_name, count(*) AS orders, sum(s.units_sold) AS units_sold, "  # nosec B608
         "rank() OVER (ORDER BY sum(s.units_sold) DESC) AS units_rank "
         f"FROM {identifier(SCHEMA)}.current_sales_order s LEFT JOIN public.dim_design d USING (design_id) "
         "GROUP BY 1, 2"),
    View("sales_by_staff", "Sales per member of staff (with name and department) and currency.",
         f"SELECT s.sales_staff_id AS staff_id, t.first_name, t.last_name, "  # nosec B608
         "t.department_name, c.currency_code, "
         f"{_SALES_FIGURES} FROM {_SALES} LEFT JOIN public.dim_staff t ON t.staff_id = s.sales_staff_id "
         "GROUP BY 1, 2, 3, 4, 5"),
    View("sales_by_department", "Sales per department of the selling staff, and currency.",
         f"SELECT t.department_name, c.currency_code, {_SALES_FIGURES} FROM {_SALES} "  # nosec B608
         "LEFT JOIN public.dim_staff t ON t.staff_id = s.sales_staff_id GROUP BY 1, 2"),
    View("sales_by_currency", "Sales per currency, with the currency's English ISO 4217 name.",
         f"SELECT s.currency_id, c.currency_code, c.currency_name, {_SALES_FIGURES} FROM {_SALES} "  # nosec B608
         "GROUP BY 1, 2, 3"),
    View("purchases_and_sales_by_month",
         "Per calendar month of `created_date` and currency: sales value and orders against purchase value and "
         "orders (0 where a month has only one of them).",
         f"WITH sales AS (SELECT date_trunc('month', s.created_date)::date AS month, s.currency_id, "  # nosec B608
         f"count(*) AS orders, sum(s.sales_value) AS value FROM {identifier(SCHEMA)}.current_sales_order s "
         "GROUP BY 1, 2), "
         "purchases AS (SELECT date_trunc('month', p.created_date)::date AS month, p.currency_id, "
         f"count(*) AS orders, sum(p.purchase_value) AS value FROM {identifier(SCHEMA)}.current_purchase_order p "
         "GROUP BY 1, 2) "
         "SELECT month, c.currency_code, coalesce(sales.orders, 0) AS sales_orders, "
         "coalesce(sales.value, 0) AS sales_value, coalesce(purchases.orders, 0) AS purchase_orders, "
         "coalesce(purchases.value, 0) AS purchase_value "
         "FROM sales FULL JOIN purchases USING (month, currency_id) "
         "LEFT JOIN public.dim_currency c USING (currency_id)"),
    View("payments_by_type", "Payments per payment type and currency: paid and outstanding, counts and value.",
         "SELECT p.payment_type_id, t.payment_type_name, c.currency_code, "  # nosec B608
         "count(*) FILTER (WHERE p.paid) AS paid_payments, coalesce(sum(p.payment_amount) FILTER (WHERE p.paid), 0) "
         "AS paid_value, count(*) FILTER (WHERE NOT p.paid) AS outstanding_payments, "
         "coalesce(sum(p.payment_amount) FILTER (WHERE NOT p.paid), 0) AS outstanding_value "
         f"FROM {identifier(SCHEMA)}.current_payment p LEFT JOIN public.dim_payment_type t USING (payment_type_id) "
         "LEFT JOIN public.dim_currency c USING (currency_id) GROUP BY 1, 2, 3"),
    View("freshness", "One row: the newest loaded run (`etl_load_ledger`), when it was loaded, how many runs are "
         "loaded, and the newest source change (`last_updated`) the warehouse holds.",
         "SELECT (SELECT max(run_id) FROM public.etl_load_ledger) AS newest_run_id, "  # nosec B608
         "(SELECT max(loaded_at) FROM public.etl_load_ledger) AS last_loaded_at, "
         "(SELECT count(*) FROM public.etl_load_ledger) AS runs_loaded, "
         f"{_newest_source_change()} AS newest_source_change"),
)

VIEWS: tuple[View, ...] = (*CURRENT_VIEWS, *ANALYTICAL_VIEWS)


def view(name: str, views: tuple[View, ...] | None = None) -> View:
    """The view called `name`, among `views` (default: every view of every migration)."""
    return next(v for v in (views or (*LIVE_CURRENT_VIEWS, *VIEWS, *FX_VIEWS, *DELIVERY_VIEWS, *REPORT_VIEWS))
                if v.name == name)


def _create(conn, views: tuple[View, ...], replace: bool = False) -> None:
    """Create the views, each with its description as a comment."""
    for v in views:
        conn.run(f"CREATE {'OR REPLACE ' if replace else ''}VIEW {v.qualified} AS {v.select}")
        conn.run(f"COMMENT ON VIEW {v.qualified} IS {literal(v.description)}")


def create_views(conn, replace: bool = False) -> None:
    """The `analytics` schema and every view of migration 3."""
    conn.run(f"CREATE SCHEMA {'IF NOT EXISTS ' if replace else ''}{identifier(SCHEMA)}")
    _create(conn, VIEWS, replace)


#: Views over the FX rates (issue 28), created by migration 4 with `fact_exchange_rate`; kept apart from
#: VIEWS because migration 3 creates exactly those.
_AT_PAYMENT_DATE = ("LEFT JOIN public.fact_exchange_rate r "
                    "ON r.rate_date = {o}.agreed_payment_date AND r.currency_id = {o}.currency_id")

FX_VIEWS: tuple[View, ...] = (
    View("sales_in_gbp",
         "Each sales order's current version valued in GBP at its agreed payment date: `sales_value` divided by "
         "that date's `units_per_gbp` (carried days included; `rate_carried` says so). `sales_value_gbp` is NULL "
         "while no rate is stored for that date (a payment date after the newest FX date). The order's month, "
         "customer, design, seller and delivery location follow, for sums in GBP by any of them.",
         "SELECT s.sales_order_id, s.agreed_payment_date, s.currency_id, c.currency_code, s.units_sold, "  # nosec B608
         "s.unit_price, s.sales_value, r.units_per_gbp, r.carried AS rate_carried, "
         "s.sales_value / r.units_per_gbp AS sales_value_gbp, s.created_date, s.counterparty_id, s.design_id, "
         "s.sales_staff_id, s.agreed_delivery_location_id, s.agreed_delivery_date "
         f"FROM {identifier(SCHEMA)}.current_sales_order s LEFT JOIN public.dim_currency c USING (currency_id) "
         + _AT_PAYMENT_DATE.format(o="s")),
)


def create_fx_views(conn, replace: bool = False) -> None:
    """The FX views (the `analytics` schema exists: migration 3 made it)."""
    _create(conn, FX_VIEWS, replace)


#: Views over courier events (contract §9), created by migration 5 with `fact_delivery` (never by
#: migration 3 or 4, which run before that table exists).
DELIVERY_VIEWS: tuple[View, ...] = (
    View("delivery_on_time",
         "On-time delivery per calendar month of the delivery, city and courier: a sales order's first "
         "`delivered` event against its current `agreed_delivery_date` (on time: delivered on or before it). "
         "`without_order` counts deliveries whose sales order is not loaded (yet); `on_time_rate` is "
         "`on_time / (on_time + late)`; `mean_days_late` averages the late ones.",
         "WITH delivered AS (SELECT DISTINCT ON (d.sales_order_id) d.sales_order_id, d.event_date, d.city, "  # nosec
         "d.courier FROM public.fact_delivery d WHERE d.status = 'delivered' "
         "ORDER BY d.sales_order_id, d.event_date, d.event_time, d.event_id) "
         "SELECT date_trunc('month', d.event_date)::date AS month, d.city, d.courier, count(*) AS deliveries, "
         "count(*) FILTER (WHERE d.event_date <= s.agreed_delivery_date) AS on_time, "
         "count(*) FILTER (WHERE d.event_date > s.agreed_delivery_date) AS late, "
         "count(*) FILTER (WHERE s.agreed_delivery_date IS NULL) AS without_order, "
         "round(count(*) FILTER (WHERE d.event_date <= s.agreed_delivery_date)::numeric "
         "/ nullif(count(s.agreed_delivery_date), 0), 4) AS on_time_rate, "
         "round(avg(d.event_date - s.agreed_delivery_date) FILTER (WHERE d.event_date > s.agreed_delivery_date), 2) "
         "AS mean_days_late "
         f"FROM delivered d LEFT JOIN {identifier(SCHEMA)}.current_sales_order s USING (sales_order_id) "
         "GROUP BY 1, 2, 3"),
)


def create_delivery_views(conn, replace: bool = False) -> None:
    """The courier views (the `analytics` schema exists: migration 3 made it)."""
    _create(conn, DELIVERY_VIEWS, replace)


def _gbp_figures(prefix: str, value: str) -> str:
    """Orders, the GBP sum, and how many orders it left out (no rate yet) or valued at a carried rate."""
    return (f"count(*) AS {prefix}orders, sum({value}_gbp) AS {prefix}value_gbp, "
            f"count(*) FILTER (WHERE {value}_gbp IS NULL) AS {prefix}orders_without_rate, "
            f"count(*) FILTER (WHERE rate_carried) AS {prefix}orders_at_carried_rate")


_SALES_GBP = f"{identifier(SCHEMA)}.sales_in_gbp g"
#: The days a payment is past due, and its bucket; `age_order` sorts the buckets.
_OVERDUE = "((now() AT TIME ZONE 'UTC')::date - p.payment_date)"
_AGES = (("not yet due", f"{_OVERDUE} <= 0"), ("1-30 days", f"{_OVERDUE} <= 30"),
         ("31-60 days", f"{_OVERDUE} <= 60"), ("61-90 days", f"{_OVERDUE} <= 90"), ("over 90 days", "TRUE"))
_AGE = "CASE " + " ".join(f"WHEN {test} THEN {literal(name)}" for name, test in _AGES) + " END"
_AGE_ORDER = "CASE " + " ".join(f"WHEN {test} THEN {i}" for i, (_, test) in enumerate(_AGES, 1)) + " END"

#: What a sales dashboard over the star schema shows (issue 36), in GBP; created by migration 6.
REPORT_VIEWS: tuple[View, ...] = (
    View("purchases_in_gbp",
         "Each purchase order's current version valued in GBP at its agreed payment date, as `sales_in_gbp` "
         "values sales: `purchase_value_gbp` is NULL while no rate is stored for that date.",
         "SELECT p.purchase_order_id, p.agreed_payment_date, p.currency_id, c.currency_code, "  # nosec B608
         "p.item_quantity, p.item_unit_price, p.purchase_value, r.units_per_gbp, r.carried AS rate_carried, "
         "p.purchase_value / r.units_per_gbp AS purchase_value_gbp, p.created_date, p.counterparty_id "
         f"FROM {identifier(SCHEMA)}.current_purchase_order p LEFT JOIN public.dim_currency c USING (currency_id) "
         + _AT_PAYMENT_DATE.format(o="p")),
    View("gbp_by_month",
         "Per calendar month of `created_date`: sales and purchase orders and their value in GBP at each order's "
         "agreed payment date (`sales_in_gbp`, `purchases_in_gbp`), with the orders left out for want of a rate "
         "and those valued at a carried one. A month with no orders has no row (a gap, not a zero).",
         "WITH sales AS (SELECT date_trunc('month', created_date)::date AS month, "  # nosec B608
         f"{_gbp_figures('sales_', 'sales_value')} FROM {_SALES_GBP} GROUP BY 1), "
         "purchases AS (SELECT date_trunc('month', created_date)::date AS month, "
         f"{_gbp_figures('purchase_', 'purchase_value')} FROM {identifier(SCHEMA)}.purchases_in_gbp GROUP BY 1) "
         "SELECT month, coalesce(sales_orders, 0) AS sales_orders, sales_value_gbp, "
         "coalesce(sales_orders_without_rate, 0) AS sales_orders_without_rate, "
         "coalesce(sales_orders_at_carried_rate, 0) AS sales_orders_at_carried_rate, "
         "coalesce(purchase_orders, 0) AS purchase_orders, purchase_value_gbp, "
         "coalesce(purchase_orders_without_rate, 0) AS purchase_orders_without_rate, "
         "coalesce(purchase_orders_at_carried_rate, 0) AS purchase_orders_at_carried_rate "
         "FROM sales FULL JOIN purchases USING (month)"),
    View("sales_in_gbp_by_counterparty",
         "Sales per customer (counterparty, with its legal name) in GBP: orders, units, value, and the orders "
         "left out for want of a rate. `namesakes` counts the customers of that name (more than 1: tell them "
         "apart by id).",
         "SELECT g.counterparty_id, p.counterparty_legal_name, count(*) AS orders, "  # nosec B608
         "sum(g.units_sold) AS units_sold, sum(g.sales_value_gbp) AS sales_value_gbp, "
         "count(*) FILTER (WHERE g.sales_value_gbp IS NULL) AS orders_without_rate, "
         "count(*) OVER (PARTITION BY p.counterparty_legal_name) AS namesakes "
         f"FROM {_SALES_GBP} LEFT JOIN public.dim_counterparty p USING (counterparty_id) GROUP BY 1, 2"),
    View("sales_in_gbp_by_design",
         "Sales per design in GBP: orders, units, value, and the orders left out for want of a rate. "
         "`namesakes` counts the designs of that name (more than 1: tell them apart by id).",
         "SELECT g.design_id, d.design_name, count(*) AS orders, sum(g.units_sold) AS units_sold, "  # nosec B608
         "sum(g.sales_value_gbp) AS sales_value_gbp, "
         "count(*) FILTER (WHERE g.sales_value_gbp IS NULL) AS orders_without_rate, "
         "count(*) OVER (PARTITION BY d.design_name) AS namesakes "
         f"FROM {_SALES_GBP} LEFT JOIN public.dim_design d USING (design_id) GROUP BY 1, 2"),
    View("sales_in_gbp_by_country",
         "Sales per country of the agreed delivery location in GBP: where orders go.",
         "SELECT l.country, count(*) AS orders, sum(g.units_sold) AS units_sold, "  # nosec B608
         "sum(g.sales_value_gbp) AS sales_value_gbp, "
         "count(*) FILTER (WHERE g.sales_value_gbp IS NULL) AS orders_without_rate "
         f"FROM {_SALES_GBP} LEFT JOIN public.dim_location l ON l.location_id = g.agreed_delivery_location_id "
         "GROUP BY 1"),
    View("payments_outstanding",
         "Each current payment not yet paid: `direction` 'to receive' (a sales receipt, a purchase refund) or "
         "'to pay' (a purchase payment, a sales refund); `days_overdue` past its `payment_date` (UTC today; "
         "0 or less: not yet due) and its `age` bucket (`age_order` sorts them); the amount in GBP at the "
         "newest stored rate of its currency (`rate_date`; NULL while none is stored).",
         "SELECT p.payment_id, t.payment_type_name, CASE WHEN t.payment_type_name IN "  # nosec B608
         "('SALES_RECEIPT', 'PURCHASE_REFUND') THEN 'to receive' ELSE 'to pay' END AS direction, "
         f"c.currency_code, p.payment_amount, p.payment_date, {_OVERDUE} AS days_overdue, "
         f"{_AGE} AS age, {_AGE_ORDER} AS age_order, "
         "r.rate_date, r.units_per_gbp, p.payment_amount / r.units_per_gbp AS payment_amount_gbp "
         f"FROM {identifier(SCHEMA)}.current_payment p "
         "LEFT JOIN public.dim_payment_type t USING (payment_type_id) "
         "LEFT JOIN public.dim_currency c USING (currency_id) "
         "LEFT JOIN LATERAL (SELECT x.rate_date, x.units_per_gbp FROM public.fact_exchange_rate x "
         "WHERE x.currency_id = p.currency_id ORDER BY x.rate_date DESC LIMIT 1) r ON TRUE "
         "WHERE NOT p.paid"),
)


def create_report_views(conn, replace: bool = False) -> None:
    """The report's views (migration 6), after FX_VIEWS again: `sales_in_gbp` gained columns they read."""
    _create(conn, FX_VIEWS, replace=True)
    _create(conn, REPORT_VIEWS, replace)


def create_live_current_views(conn) -> None:
    """Migration 7: the current-version views leave out ids deleted since (change data capture)."""
    _create(conn, LIVE_CURRENT_VIEWS, replace=True)
