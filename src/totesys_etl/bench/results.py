"""The bench's figures judged against contract §8's targets, and printed as the README's tables.

Kept apart from the run (run.py) so that what counts as a miss, and how a result reads, are in one
place that a reader of `.local/bench.json` can check without the machinery that measured it.
"""
from __future__ import annotations

STAGES = ("ingest", "process", "load")

#: contract §8 targets on a 2-core machine: key -> (limit, what the value is compared on).
TARGETS: dict[str, float] = {"ratio_to_floor": 3.0, "noop_tick_handler_s": 0.3, "tick_1000_handler_s": 2.0,
                             "snapshot_load_s": 2.5, "peak_rss_mb": 1024.0}


def missed_targets(results: dict) -> dict[str, tuple[float, float]]:
    """Targets the figures miss: key -> (value, limit). Peak RSS counts only at a million orders."""
    values = {"ratio_to_floor": results["ratio_to_floor"], "noop_tick_handler_s": results["noop_tick_handler_s"],
              "tick_1000_handler_s": results["tick_1000_handler_s"],
              "snapshot_load_s": round(sum(results["snapshot_load_s"].values()), 4)}
    if results["orders"] >= 1_000_000:
        values["peak_rss_mb"] = max(results["peak_rss_mb"].values())
    return {k: (v, TARGETS[k]) for k, v in values.items() if v > TARGETS[k]}


def markdown(results: dict) -> str:
    """The README's tables: the contract §8 figures with their targets, then the initial load by stage."""
    missed = missed_targets(results)
    d = results["detail"]
    initial = {s: v["handler_s"] for s, v in d["initial_load"].items()}

    def status(key: str) -> str:
        if key == "peak_rss_mb" and results["orders"] < 1_000_000:
            return "(target at 1M)"
        return "MISSED" if key in missed else "ok"

    def stages(values: dict, unit: str = "s") -> str:
        return ", ".join(f"{s} {values[s]:.2f}{unit}" for s in STAGES)

    rows = [("orders", f"{results['orders']:,}", "", ""),
            ("initial_load_s", f"{results['initial_load_s']:.2f} ({stages(initial)})", "", ""),
            ("process_start_s", f"{results['process_start_s']:.2f}", "", ""),
            ("floor_s", f"{results['floor_s']:.2f} (COPY out {d['floor_copy_out_s']:.2f}s, "
                        f"in {d['floor_copy_in_s']:.2f}s)", "", ""),
            ("ratio_to_floor", f"{results['ratio_to_floor']:.2f}", "<= 3", status("ratio_to_floor")),
            ("speedup_vs_to_sql", "skipped (--skip-baselines)" if d["to_sql_s"] is None else
             f"{results['speedup_vs_to_sql']:.1f}x (to_sql {d['to_sql_s']:.2f}s, ours {d['our_load_s']:.2f}s)", "", ""),
            ("noop_tick_handler_s", f"{results['noop_tick_handler_s']:.3f} ({stages(d['noop_tick_s'])})", "<= 0.3",
             status("noop_tick_handler_s")),
            ("tick_1000_handler_s", f"{results['tick_1000_handler_s']:.3f} ({stages(d['tick_1000_s'])})", "<= 2",
             status("tick_1000_handler_s")),
            ("peak_rss_mb", stages(results["peak_rss_mb"], " MB"), "<= 1024 each", status("peak_rss_mb")),
            ("peak_tmp_mb", stages(results["peak_tmp_mb"], " MB"), "sizes /tmp (tf: ephemeral_storage)", ""),
            ("snapshot_load_s", f"{sum(results['snapshot_load_s'].values()):.2f} "
                                f"({stages(results['snapshot_load_s'])})", "<= 2.5 in all",
             status("snapshot_load_s"))]
    lines = ["| key | value | target | |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {v} | {t} | {s} |" for k, v, t, s in rows]
    lines += ["", "| stage (initial load) | handler s | start-up s | start-up CPU s | rows | source rows/s "
                  "| peak RSS MB | peak /tmp MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in STAGES:
        v = d["initial_load"][s]
        lines.append(f"| {s} | {v['handler_s']:.2f} | {v['process_start_s']:.2f} | {v['process_start_cpu_s']:.2f} | "
                     f"{v['rows']:,} | {v['source_rows_per_s']:,} | {v['peak_rss_mb']:.0f} | {v['peak_tmp_mb']:.1f} |")
    lines += ["", "FX off: no FX stand-in ran, so the pipelines fetched no rates (deployed ones do)."
              if d["fx_rates"] is None else f"FX on, as deployed: the initial load fetched {d['fx_rates']:,} rates."]
    m = d["machine"]
    lines += ["", f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, PostgreSQL {m['postgresql']}, "
                  f"Python {m['python']}; load average before {m['load_average_before'][0]}, "
                  f"after {m['load_average_after'][0]}; bench took {d['bench_s']:.0f} s."]
    return "\n".join(lines)
