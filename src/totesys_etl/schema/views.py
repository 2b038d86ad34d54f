"""The warehouse's analytical views (issue 25), declared once: what a BI tool and `totesys-etl report` read.

They live in a schema of their own, `analytics`, so `public` keeps exactly contract §3's tables. Facts
keep history (one row per version), so every view reads a fact through its `current_*` view: the
version of each id that the latest run read, i.e. the row with the greatest `etl_run_id`, then the
greatest `last_updated_date, last_updated_time` (`warehouse.newest_first`; newer means committed
later, not stamped later).

Money stays `numeric` and is never added across currencies: every view that sums money has a
`currency_code` column (the warehouse holds no exchange rates to convert with). Values: sales
`units_sold * unit_price`, purchases `item_quantity * item_unit_price`, payments `payment_amount`.
Dimension joins are LEFT joins, so a fact whose dimension row comes with a later run still counts.

Migration 3 creates these views. Changing one later means a new migration that calls
`create_views(conn, replace=True)` again, never an edit of migration 3's meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

from pg8000.native import identifier, literal

from totesys_etl.schema.model import Table
from totesys_etl.schema.warehouse import FACTS, STATE_TABLES, newest_first

SCHEMA = "analytics"


@dataclass(frozen=True)
class View:
    name: str
    description: str
    select: str

    @property
    def qualified(self) -> str:
        return f"{identifier(SCHEMA)}.{identifier(self.name)}"


def _current(fact: Table, value: str | None) -> View:
    """One fact's current versions: DISTINCT ON the source id, newest first by `newest_first`."""
    source_id = fact.version_key[0]
    order = ", ".join(f"f.{identifier(c)} DESC" for c in newest_first(fact))
    extra = f", {value}" if value else ""
    return View(
        f"current_{fact.source}",
        f"The current version of each `{source_id}` in `{fact.name}`: the row with the greatest `etl_run_id`, "
        f"then the greatest `last_updated_date, last_updated_time` (newer means committed later, not stamped "
        f"later)" + (f"; adds `{value.split(' AS ')[1]}`" if value else "") + ".",
        f"SELECT DISTINCT ON (f.{identifier(source_id)}) f.*{extra} "  # nosec B608
        f"FROM public.{identifier(fact.name)} f "
        f"ORDER BY f.{identifier(source_id)}, {order}")


_VALUES = {"fact_sales_order": "f.units_sold * f.unit_price AS sales_value",
           "fact_purchase_order": "f.item_quantity * f.item_unit_price AS purchase_value",
           "fact_payment": None}
CURRENT_VIEWS = tuple(_current(fact, _VALUES[fact.name]) for fact in FACTS)

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
    return next(v for v in (views or VIEWS) if v.name == name)


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
FX_VIEWS: tuple[View, ...] = (
    View("sales_in_gbp",
         "Each sales order's current version valued in GBP at its agreed payment date: `sales_value` divided by "
         "that date's `units_per_gbp` (carried days included; `rate_carried` says so). `sales_value_gbp` is NULL "
         "while no rate is stored for that date (a payment date after the newest FX date).",
         "SELECT s.sales_order_id, s.agreed_payment_date, s.currency_id, c.currency_code, s.units_sold, "  # nosec B608
         "s.unit_price, s.sales_value, r.units_per_gbp, r.carried AS rate_carried, "
         "s.sales_value / r.units_per_gbp AS sales_value_gbp "
         f"FROM {identifier(SCHEMA)}.current_sales_order s LEFT JOIN public.dim_currency c USING (currency_id) "
         "LEFT JOIN public.fact_exchange_rate r "
         "ON r.rate_date = s.agreed_payment_date AND r.currency_id = s.currency_id"),
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
