"""The report as one self-contained HTML page: Vega-Lite charts (altair) rendered to inline SVG by
vl-convert, tables of the key figures, and the freshness line.

The page holds no script at all and its Content-Security-Policy forbids fetching anything, so it
opens offline, and text from the warehouse can only ever be text: every value goes through
`html.escape` (tables) or vl-convert's SVG writer (charts). Charts get floats (they only draw);
the tables print the views' exact numerics.
"""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone

from totesys_etl.report.figures import COUNT, MONEY, SECTIONS, Figures, Section, cell, compact, money

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
.grid { display: grid; gap: 1.25rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr)); }
section { border: 1px solid var(--line); border-radius: 8px; padding: 1rem; min-width: 0; }
section.wide { grid-column: 1 / -1; }
figure { margin: 0 0 .75rem; }
figure svg { max-width: 100%; height: auto; display: block; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { white-space: pre-wrap; overflow-wrap: break-word; }
@media (max-width: 600px) { body { font-size: 14px; } header, main { padding: .6rem; } }
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


def _label(value) -> str:
    """A chart label: one line, at most LABEL_CHARACTERS code points (the tables keep the full text)."""
    if value is None:
        return "(unknown)"
    text = " ".join(str(value).split())
    return text if len(text) <= LABEL_CHARACTERS else text[:LABEL_CHARACTERS - 1] + "…"


def _chart(key: str, rows: list[dict]):
    """The Vega-Lite chart for a section (altair), or None where the section has none."""
    import altair as alt

    months = alt.Axis(format="%b %Y", labelOverlap=True, labelAngle=0)
    if key == "month":
        data = [{"month": r["month"].isoformat(), "currency": _label(r["currency_code"]),
                 "value": _number(r["sales_value"])} for r in rows]
        return alt.Chart(alt.Data(values=data)).mark_line(point=True).encode(
            x=alt.X("month:T", title=None, axis=months), y=alt.Y("value:Q", title=None),
            color=alt.Color("currency:N", title="currency")).properties(width=520, height=240)
    if key == "purchases":
        data = [{"month": r["month"].isoformat(), "currency": _label(r["currency_code"]), "measure": measure,
                 "value": _number(r[column])}
                for r in rows for measure, column in (("sales", "sales_value"), ("purchases", "purchase_value"))]
        return alt.Chart(alt.Data(values=data)).mark_line().encode(
            x=alt.X("month:T", title=None, axis=months), y=alt.Y("value:Q", title=None),
            color=alt.Color("measure:N", title=None), row=alt.Row("currency:N", title=None)
        ).properties(width=520, height=110)
    if key in ("designs", "countries", "counterparties", "staff"):
        name = {"designs": "design_name", "countries": "country", "counterparties": "counterparty_legal_name",
                "staff": "name"}[key]
        # numbered, so two designs (or people) of one name stay two bars, in the table's order
        data = [{"name": f"{i}. {_label(r[name])}", "units": _number(r["units_sold"])} for i, r in enumerate(rows, 1)]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            x=alt.X("units:Q", title="units sold"), y=alt.Y("name:N", sort=None, title=None)
        ).properties(width=440, height=alt.Step(18))
    if key == "departments":
        data = [{"department": _label(r["department_name"]), "currency": _label(r["currency_code"]),
                 "value": _number(r["sales_value"])} for r in rows]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("department:N", title=None), x=alt.X("value:Q", title="sales value"),
            yOffset="currency:N", color=alt.Color("currency:N", title="currency")
        ).properties(width=440, height=alt.Step(10))
    if key == "deliveries":
        data = [{"courier": _label(r["courier"]), "status": status, "deliveries": _number(r[column])}
                for r in rows for status, column in (("on time", "on_time"), ("late", "late"))]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("courier:N", title=None, sort=None), x=alt.X("sum(deliveries):Q", title="deliveries"),
            color=alt.Color("status:N", title=None, scale=alt.Scale(domain=["on time", "late"],
                                                                    range=["#16a34a", "#dc2626"]))
        ).properties(width=440, height=alt.Step(22))
    if key == "payments":
        data = [{"type": _label(r["payment_type_name"]), "status": status, "payments": _number(r[column])}
                for r in rows for status, column in (("paid", "paid_payments"),
                                                     ("outstanding", "outstanding_payments"))]
        return alt.Chart(alt.Data(values=data)).mark_bar().encode(
            y=alt.Y("type:N", title=None), x=alt.X("sum(payments):Q", title="payments"),
            color=alt.Color("status:N", title=None, scale=alt.Scale(domain=["paid", "outstanding"],
                                                                    range=["#16a34a", "#f59e0b"]))
        ).properties(width=440, height=alt.Step(22))
    return None


def _svg(chart, prefix: str) -> str:
    """The chart as inline SVG; its ids prefixed so several SVGs on one page never share one."""
    import vl_convert

    # Vega measures text with vl-convert's fonts and the browser draws it with its own, which may be
    # wider: the padding keeps long axis labels inside the picture.
    chart = chart.properties(padding={"left": 36, "top": 6, "right": 12, "bottom": 6})
    chart = chart.configure_axis(labelLimit=0).configure_legend(labelLimit=0).configure_header(labelLimit=0)
    svg = vl_convert.vegalite_to_svg(chart.to_json())
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    return re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)


def _section(section: Section, rows: list[dict]) -> str:
    parts = [f"<h2>{_e(section.title)}</h2>"]
    if section.note:
        parts.append(f'<p class="note">{_e(section.note)}</p>')
    if not rows:
        parts.append('<p class="note">No rows yet.</p>')
    else:
        chart = _chart(section.key, rows)
        if chart is not None:
            parts.append(f'<figure data-chart="{_e(section.key)}">{_svg(chart, section.key)}</figure>')
        if section.table:
            parts.append(_table(section, rows))
    wide = ' class="wide"' if section.wide else ""
    return f'<section data-section="{_e(section.key)}"{wide}>{"".join(parts)}</section>'


def _kpis(figures: Figures) -> str:
    cards = [("Orders", figures.totals["orders"], "orders", COUNT),
             ("Units sold", figures.totals["units_sold"], "units_sold", COUNT)]
    cards += [(f"Sales value, {_label(r['currency_code'])}", r["sales_value"],
               f"sales_value_{_label(r['currency_code'])}", MONEY) for r in figures.rows["currency"]]
    outstanding: dict[str, object] = {}
    for r in figures.rows["payments"]:
        code = _label(r["currency_code"])
        outstanding[code] = outstanding.get(code, 0) + r["outstanding_value"]
    cards += [(f"Payments outstanding, {code}", value, f"outstanding_{code}", MONEY)
              for code, value in sorted(outstanding.items())]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi" data-kpi="{_e(key)}"><div class="label">{_e(label)}</div>'
        f'<div class="value"{_exact(kind, value)}>{_e(compact(value) if kind == MONEY else cell(kind, value))}'
        f"</div></div>" for label, value, key, kind in cards) + "</div>"


def render(figures: Figures, generated: datetime | None = None) -> str:
    generated = generated or datetime.now(timezone.utc)
    header = [f"<h1>{_e(TITLE)}</h1>", f'<p class="freshness" data-freshness>{_e(freshness_line(figures))} '
              f"Report written {_e(_when(generated))}.</p>"]
    if figures.state == "no views":
        body = ('<p class="state" data-state="no views">Nothing loaded yet: the warehouse has no analytical '
                "views. Run <code>totesys-etl tick</code>; its load creates them.</p>")
    elif figures.state == "empty":
        body = ('<p class="state" data-state="empty">The warehouse holds no sales orders yet, so there is '
                "nothing to chart.</p>" + _kpis(figures) + '<div class="grid">'
                + "".join(_section(s, figures.rows[s.key]) for s in SECTIONS) + "</div>")
    else:
        body = (_kpis(figures) + '<div class="grid">'
                + "".join(_section(s, figures.rows[s.key]) for s in SECTIONS) + "</div>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<title>{_e(TITLE)}</title><style>{_CSS}</style></head><body>"
            f"<header>{''.join(header)}</header><main>{body}</main></body></html>\n")
