"""The report as one self-contained HTML page: Vega-Lite charts (altair) rendered to inline SVG by
vl-convert, tables of the key figures, and the freshness line.

The page holds no script at all and its Content-Security-Policy forbids fetching anything, so it
opens offline, and text from the warehouse can only ever be text: every value goes through
`html.escape` (tables) or vl-convert's SVG writer (charts). Charts get floats (they only draw);
the tables print the views' exact numerics.

Each chart is drawn twice, for a laptop and for a phone, and CSS shows one: an SVG scaled down to a
phone's width would shrink its text to a few pixels, and Vega lays text out at a fixed size. Both
are laid out at the size they are shown (`autosize: fit-x`), with text of 11 px in DejaVu Sans (the
font vl-convert measures with, and the browser draws with where it has it), axis labels that Vega
thins out where they would overlap, and short money labels (`£1.5m`).
"""
from __future__ import annotations

import html
import re
from datetime import date, datetime, timezone
from decimal import Decimal

from totesys_etl.report.figures import COUNT, MONEY, SECTIONS, Figures, Section, cell, money, pounds

TITLE = "Terrific Totes: the business at a glance"

_CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --card: #f9fafb; --accent: #1d4ed8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
header, main { max-width: 1280px; margin: 0 auto; padding: 1rem; }
header { border-bottom: 1px solid var(--line); }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
.freshness, .note { color: var(--muted); font-size: .9rem; margin: 0; }
.state { font-size: 1.1rem; padding: 1rem; background: var(--card); border-left: 4px solid var(--accent); }
.kpis { display: grid; gap: .75rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 230px), 1fr));
        margin: 1rem 0; }
.kpi { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .75rem 1rem; }
.kpi .label { color: var(--muted); font-size: .85rem; }
.kpi .value { font-size: 1.25rem; font-weight: 600; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
.kpi .detail { color: var(--muted); font-size: .8rem; margin-top: .15rem; }
.grid { display: grid; gap: 1.25rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr)); }
section { border: 1px solid var(--line); border-radius: 8px; padding: 1rem; min-width: 0; }
section.wide { grid-column: 1 / -1; }
figure { margin: 0 0 .75rem; }
figure svg { max-width: 100%; height: auto; display: block; }
figure svg.phone { display: none; }
.scroll { overflow-x: auto; background: linear-gradient(to right, #fff 30%, rgba(255,255,255,0)) left / 2rem 100%,
          linear-gradient(to left, #fff 30%, rgba(255,255,255,0)) right / 2rem 100%,
          radial-gradient(farthest-side at 100% 50%, rgba(0,0,0,.18), transparent) right / .6rem 100%;
          background-repeat: no-repeat; background-attachment: local, local, scroll; }
.scroll-cue { display: none; color: var(--muted); font-size: .8rem; margin: 0 0 .25rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { white-space: pre-wrap; overflow-wrap: break-word; }
@media (max-width: 600px) {
  body { font-size: 14px; } header, main { padding: .6rem; } section { padding: .75rem; }
  figure svg.laptop { display: none; } figure svg.phone { display: block; }
  table { font-size: .8rem; } th, td { padding: .25rem .3rem; } .scroll-cue { display: block; }
}
"""

#: No script, no fetch of anything: inline styles and the inline SVG only.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "never"


def freshness_line(figures: Figures) -> str:
    f = figures.freshness
    if not f.get("newest_run_id"):
        return "No run loaded yet."
    return (f"Newest loaded run {f['newest_run_id']} (loaded {_when(f['last_loaded_at'])}; "
            f"{f['runs_loaded']:,} runs loaded). Newest source change held: {_when(f['newest_source_change'])}.")


def _age(then, now: datetime) -> str:
    """How long before `now` (naive times are UTC, as the warehouse stores them): `3 hours`, `2 days`."""
    if not isinstance(then, datetime):
        return ""
    seconds = (now - (then if then.tzinfo else then.replace(tzinfo=timezone.utc))).total_seconds()
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if abs(seconds) >= size:
            n = int(seconds // size)
            return f"{n:,} {unit}{'' if n == 1 else 's'}"
    return "under a minute"


def _exact(kind: str, value) -> str:
    """Money cells carry their exact value (hover, and for the tests) beside the rounded one shown."""
    return f' title="{_e(money(value))}" data-exact="{_e(money(value))}"' if kind == MONEY and value is not None else ""


def _cell(column: str, kind: str, value) -> str:
    numeric = kind in (COUNT, MONEY)
    return (f'<td class="{"num" if numeric else ""}" data-column="{_e(column)}"{_exact(kind, value)}>'
            f"{_e(cell(kind, value))}</td>")


def _table(section: Section, rows: list[dict]) -> str:
    numeric = {COUNT, MONEY}
    head = "".join(f'<th class="{"num" if kind in numeric else ""}">{_e(heading)}</th>'
                   for _, heading, kind in section.columns)
    body = "".join("<tr>" + "".join(_cell(column, kind, row[column]) for column, _, kind in section.columns)
                   + "</tr>" for row in rows)
    return (f'<div class="scroll"><table data-section="{_e(section.key)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _number(value) -> float:
    return float(value) if value is not None else 0.0


#: Chart labels are cut here, by code point, and Vega is told never to cut them itself: Vega cuts by
#: UTF-16 unit, so it can split an emoji's surrogate pair, and vl-convert then fails on the lone half.
LABEL_CHARACTERS = 24


def _label(value, characters: int = LABEL_CHARACTERS) -> str:
    """A chart label: one line, at most `characters` code points (the tables keep the full text); a
    trailing id (`Bronze (#123)`) is kept whole, since it is what tells two names apart."""
    if value is None:
        return "(unknown)"
    text = " ".join(str(value).split())
    if len(text) <= characters:
        return text
    suffix = re.search(r" \(#\d+\)$", text)
    tail = suffix.group(0) if suffix else ""
    return text[:characters - 1 - len(tail)].rstrip() + "…" + tail


#: Where a chart is shown: (total width in px, characters of a bar's label). A phone's chart fits a
#: 390 px screen's section unscaled; a laptop's fits a half-width (or, `wide`, full-width) section.
LAPTOP, LAPTOP_WIDE, PHONE = (540, LABEL_CHARACTERS), (1140, LABEL_CHARACTERS), (320, 18)
FONT, FONT_SIZE = "DejaVu Sans", 11
#: Money on an axis in a few characters (`£1.5m`, `£250k`): long labels are what collide.
_SHORT_MONEY = ("(datum.value < 0 ? '-' : '') + '{unit}' + (abs(datum.value) >= 1e9 ? "
                "format(abs(datum.value) / 1e9, '.3~r') + 'bn' : abs(datum.value) >= 1e6 ? "
                "format(abs(datum.value) / 1e6, '.3~r') + 'm' : abs(datum.value) >= 1e3 ? "
                "format(abs(datum.value) / 1e3, '.3~r') + 'k' : format(abs(datum.value), '.3~r'))")


def _money_axis(unit: str, narrow: bool, title: str | None = None):
    import altair as alt

    return alt.Axis(labelExpr=_SHORT_MONEY.format(unit=unit), tickCount=3 if narrow else 5, title=title,
                    labelOverlap=True, labelSeparation=6)


def _count_axis(narrow: bool, title: str | None = None):
    import altair as alt

    return alt.Axis(format="~s", tickCount=3 if narrow else 5, title=title, labelOverlap=True, labelSeparation=6)


def _months(rows: list[dict], measures: dict[str, str], series: str | None = None,
            to_date: date | None = None) -> list[dict]:
    """One point per month from the first to the last, per series and measure; a month the rows lack
    is None, which Vega draws as a gap in the line, never as a drop to zero. The month `to_date` (still
    in progress) is drawn dashed from the month before, so a part month does not read as a collapse."""
    months = sorted({r["month"] for r in rows})
    if not months:
        return []
    every, month = [], months[0]
    while month <= months[-1]:
        every.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    groups = sorted({_label(r[series]) for r in rows}) if series else [None]
    values = {(r["month"], _label(r[series]) if series else None, measure): r[column]
              for r in rows for measure, column in measures.items()}

    def point(m: date, g, measure: str, part: str) -> dict:
        value = values.get((m, g, measure))
        return {"month": m.isoformat(), "series": g if series else measure, "part": part,
                "value": None if value is None else float(value)}

    out = [point(m, g, measure, "to date" if m == to_date else "whole month")
           for m in every for g in groups for measure in measures]
    if to_date == every[-1] and len(every) > 1:
        out += [point(every[-2], g, measure, "to date") for g in groups for measure in measures]
    return out


def _bars(rows: list[dict], name: str, value: str, size: tuple[int, int]) -> list[dict]:
    # numbered, so two rows of one name stay two bars, in the table's order
    return [{"name": f"{i}. {_label(r[name], size[1])}", "value": _number(r[value])} for i, r in enumerate(rows, 1)]


def _chart(key: str, rows: list[dict], size: tuple[int, int] = LAPTOP, to_date: date | None = None):
    """The Vega-Lite chart for a section (altair) at `size`, or None where the section has none;
    `to_date` is the month still in progress, if the data reaches it."""
    import altair as alt

    narrow = size == PHONE
    months = alt.Axis(format="%b %Y" if not narrow else "%b %y", labelOverlap=True, labelSeparation=8,
                      labelAngle=0, tickCount=6 if not narrow else 3, title=None)
    top = alt.Legend(orient="top", title=None)
    line = {"point": True, "invalid": "break-paths-show-domains"}  # a None value breaks the line
    dash = alt.StrokeDash("part:N", legend=None, scale=alt.Scale(domain=["whole month", "to date"],
                                                                 range=[[1, 0], [4, 3]]))
    if key == "trend":
        data = _months(rows, {"sales": "sales_value_gbp", "purchases": "purchase_value_gbp"}, to_date=to_date)
        return alt.Chart(alt.Data(values=data)).mark_line(**line).encode(
            x=alt.X("month:T", axis=months), y=alt.Y("value:Q", axis=_money_axis("£", narrow)), strokeDash=dash,
            color=alt.Color("series:N", legend=top, sort=["sales", "purchases"])).properties(height=240)
    if key == "month":
        data = _months(rows, {"sales": "sales_value"}, series="currency_code", to_date=to_date)
        return alt.Chart(alt.Data(values=data)).mark_line(**line).encode(
            x=alt.X("month:T", axis=months), y=alt.Y("value:Q", axis=_money_axis("", narrow)), strokeDash=dash,
            color=alt.Color("series:N", legend=top)).properties(height=220)
    if key in ("designs", "countries", "counterparties"):
        name = "country" if key == "countries" else "name"
        return alt.Chart(alt.Data(values=_bars(rows, name, "sales_value_gbp", size))).mark_bar().encode(
            x=alt.X("value:Q", axis=_money_axis("£", narrow, "sales, GBP")),
            y=alt.Y("name:N", sort=None, title=None)).properties(height=alt.Step(20))
    if key == "staff":
        return alt.Chart(alt.Data(values=_bars(rows, "name", "units_sold", size))).mark_bar().encode(
            x=alt.X("value:Q", axis=_count_axis(narrow, "units sold")),
            y=alt.Y("name:N", sort=None, title=None)).properties(height=alt.Step(20))
    if key == "ageing":
        data = [{"age": r["age"], "direction": r["direction"], "value": _number(r["amount_gbp"])} for r in rows]
        ages = list(dict.fromkeys(r["age"] for r in rows))
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("age:N", sort=ages, title=None), yOffset=alt.YOffset("direction:N", sort=["to receive", "to pay"]),
            x=alt.X("value:Q", axis=_money_axis("£", narrow, "outstanding, GBP")),
            color=alt.Color("direction:N", legend=top,
                            scale=alt.Scale(domain=["to receive", "to pay"], range=["#1d4ed8", "#f59e0b"]))
        ).properties(height=alt.Step(12))
    if key == "departments":
        data = [{"department": _label(r["department_name"], size[1]), "currency": _label(r["currency_code"]),
                 "value": _number(r["sales_value"])} for r in rows]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("department:N", title=None), x=alt.X("value:Q", axis=_money_axis("", narrow, "sales value")),
            yOffset="currency:N", color=alt.Color("currency:N", legend=top)
        ).properties(height=alt.Step(10))
    if key == "deliveries":
        data = [{"courier": _label(r["courier"], size[1]), "status": status, "deliveries": _number(r[column])}
                for r in rows for status, column in (("on time", "on_time"), ("late", "late"))]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("courier:N", title=None, sort=None),
            x=alt.X("sum(deliveries):Q", axis=_count_axis(narrow, "deliveries")),
            color=alt.Color("status:N", legend=top,
                            scale=alt.Scale(domain=["on time", "late"], range=["#16a34a", "#dc2626"]))
        ).properties(height=alt.Step(22))
    if key == "payments":
        data = [{"type": _label(r["payment_type_name"], size[1]), "status": status, "payments": _number(r[column])}
                for r in rows for status, column in (("paid", "paid_payments"),
                                                     ("outstanding", "outstanding_payments"))]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("type:N", title=None), x=alt.X("sum(payments):Q", axis=_count_axis(narrow, "payments")),
            color=alt.Color("status:N", legend=top, scale=alt.Scale(domain=["paid", "outstanding"],
                                                                    range=["#16a34a", "#f59e0b"]))
        ).properties(height=alt.Step(22))
    return None


def _svg(chart, prefix: str, width: int) -> str:
    """The chart as inline SVG `width` px wide in all; its ids prefixed so no two SVGs share one."""
    import vl_convert

    chart = chart.properties(width=width, autosize={"type": "fit-x", "contains": "padding"},
                             padding={"left": 4, "top": 4, "right": 12, "bottom": 4})
    text = {"labelFont": FONT, "labelFontSize": FONT_SIZE, "titleFont": FONT, "titleFontSize": FONT_SIZE,
            "titleFontWeight": "normal"}
    chart = (chart.configure(font=FONT).configure_axis(labelLimit=0, **text).configure_legend(labelLimit=0, **text)
             .configure_header(labelLimit=0, **text).configure_view(stroke=None))
    svg = vl_convert.vegalite_to_svg(chart.to_json())
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)


def _figure(section: Section, rows: list[dict], to_date: date | None) -> str:
    """The section's chart for a laptop and for a phone (CSS shows one), or nothing."""
    svgs = []
    for device, size in (("laptop", LAPTOP_WIDE if section.wide else LAPTOP), ("phone", PHONE)):
        chart = _chart(section.key, rows, size, to_date)
        if chart is None:
            return ""
        svg = _svg(chart, f"{section.key}-{device}", size[0])
        svgs.append(svg.replace("<svg ", f'<svg class="{device}" ', 1))
    return f'<figure data-chart="{_e(section.key)}">{"".join(svgs)}</figure>'


def _may_scroll(section: Section) -> bool:
    """Whether the table may be wider than a phone (390 px): five columns or more, money among them.
    The page then says it scrolls; a shadow at its edge shows it too, where it does."""
    return len(section.columns) >= 5 and any(kind == MONEY for _, _, kind in section.columns)


def _in_progress(figures: Figures) -> date | None:
    """The month the newest source change falls in: its figures are to date, not a whole month's."""
    newest = figures.freshness.get("newest_source_change")
    return newest.date().replace(day=1) if isinstance(newest, datetime) else None


def _section(section: Section, rows: list[dict], to_date: date | None = None) -> str:
    parts = [f"<h2>{_e(section.title)}</h2>"]
    note = section.note
    if to_date and rows and "month" in rows[0] and max(r["month"] for r in rows) == to_date:
        note += f"; {to_date:%B %Y} is to date (dashed)"
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')
    if not rows:
        parts.append('<p class="note">No rows yet.</p>')
    else:
        parts.append(_figure(section, rows, to_date))
        if section.table:
            if _may_scroll(section):
                parts.append('<p class="scroll-cue">Scroll the table sideways for every column →</p>')
            parts.append(_table(section, rows))
    wide = ' class="wide"' if section.wide else ""
    return f'<section data-section="{_e(section.key)}"{wide}>{"".join(parts)}</section>'


def _n(count: int, thing: str) -> str:
    """`1 order`, `2 orders`."""
    return f"{count:,} {thing}{'' if count == 1 else 's'}"


def _gbp_detail(figures: dict, what: str) -> str:
    """What a GBP sum rests on: how many, how many at a carried rate, how many it could not value."""
    if figures["orders"] and figures["without_rate"] == figures["orders"]:
        return (f"{_n(figures['orders'], what)}, none valued: the warehouse holds no exchange rate for their "
                f"payment dates (is the FX source on? contract §9)")
    parts = [f"{_n(figures['orders'], what)}, each at its agreed payment date's rate"]
    if figures["carried"]:
        parts.append(f"{figures['carried']:,} of them at a weekend's or holiday's carried rate")
    if figures["without_rate"]:
        parts.append(f"{_n(figures['without_rate'], what)} not valued yet: due after the newest rate "
                     f"(the latest on {figures['latest_without_rate']})")
    return "; ".join(parts)


def _owed_detail(figures: dict | None) -> str:
    if not figures:
        return "none outstanding"
    text = (f"{_n(figures['payments'], 'payment')}, {figures['overdue']:,} past due; at the newest stored rate "
            f"({figures['rate_date'] or 'none yet'})")
    if figures["without_rate"]:
        text += f"; {figures['without_rate']:,} not valued: no rate stored for their currency"
    return text


def _kpis(figures: Figures, generated: datetime) -> str:
    gbp = figures.gbp
    sales, purchases = gbp.get("sales", {}), gbp.get("purchases", {})
    receive, pay = gbp.get("to receive"), gbp.get("to pay")
    valued = (sales.get("orders") or 0) - (sales.get("without_rate") or 0)
    average = (sales["value"] / valued).quantize(Decimal("0.01")) if valued and sales.get("value") is not None \
        else None
    fresh = figures.freshness.get("newest_source_change")
    cards = [
        ("Sales, GBP", sales.get("value"), "sales_gbp", _gbp_detail(sales, "order") if sales else ""),
        ("Purchases, GBP", purchases.get("value"), "purchases_gbp",
         _gbp_detail(purchases, "purchase order") if purchases else ""),
        ("Payments to receive, GBP", (receive or {}).get("value", Decimal(0)), "receivable_gbp", _owed_detail(receive)),
        ("Payments to pay, GBP", (pay or {}).get("value", Decimal(0)), "payable_gbp", _owed_detail(pay)),
        ("Average order, GBP", average, "average_order_gbp", "sales in GBP over the orders valued"),
        ("Orders", figures.totals["orders"], "orders", f"{figures.totals['units_sold']:,} units sold"),
        ("Data as of", None, "data_as_of", f"newest source change held, {_age(fresh, generated)} before this report"
         if fresh else "nothing loaded yet"),
    ]
    html_cards = []
    for label, value, key, detail in cards:
        if key == "orders":
            shown, exact = cell(COUNT, value), ""
        elif key == "data_as_of":
            shown, exact = _when(fresh), ""
        else:
            shown, exact = pounds(value), _exact(MONEY, value)
        html_cards.append(f'<div class="kpi" data-kpi="{_e(key)}"><div class="label">{_e(label)}</div>'
                          f'<div class="value"{exact}>{_e(shown)}</div><div class="detail">{_e(detail)}</div></div>')
    return '<div class="kpis">' + "".join(html_cards) + "</div>"


def render(figures: Figures, generated: datetime | None = None) -> str:
    generated = generated or datetime.now(timezone.utc)
    header = [f"<h1>{_e(TITLE)}</h1>", f'<p class="freshness" data-freshness>{_e(freshness_line(figures))} '
              f"Report written {_e(_when(generated))}.</p>"]
    if figures.state == "no views":
        body = ('<p class="state" data-state="no views">Nothing loaded yet: the warehouse has no analytical '
                "views. Run <code>totesys-etl tick</code>; its load creates them.</p>")
    elif figures.state == "old views":
        body = ('<p class="state" data-state="old views">The warehouse lacks the views this report reads '
                "(an older release loaded it). Run <code>totesys-etl tick</code>; its load adds them.</p>")
    elif figures.state == "empty":
        body = ('<p class="state" data-state="empty">The warehouse holds no sales orders yet, so there is '
                "nothing to chart.</p>" + _kpis(figures, generated) + '<div class="grid">'
                + "".join(_section(s, figures.rows[s.key], _in_progress(figures)) for s in SECTIONS) + "</div>")
    else:
        body = (_kpis(figures, generated) + '<div class="grid">'
                + "".join(_section(s, figures.rows[s.key], _in_progress(figures)) for s in SECTIONS) + "</div>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{_e(TITLE)}</title><style>{_CSS}</style></head><body>"
            f"<header>{''.join(header)}</header><main>{body}</main></body></html>\n")
