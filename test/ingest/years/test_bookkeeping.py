"""Bounded bookkeeping (contract §2, issue 34.10): however long a transaction holds an id, however many
subtransactions it has and however many transactions commit meanwhile, a run's manifest stays under
64 KB. The loads are the bench's (`python -m totesys_etl.bench.bookkeeping`, which also reports the
seconds: a time target is measured there, never asserted here)."""
from __future__ import annotations

import pytest

from totesys_etl.bench.bookkeeping import (HELD_COMMITS, MANIFEST_LIMIT, SUBTRANSACTIONS, commit_interleaved,
                                           interleave_savepoints, open_subtransactions)
from totesys_etl.config import Settings
from totesys_etl.ingest.run import ingest

pytestmark = pytest.mark.slow


def test_a_run_manifest_stays_under_64_kb_with_an_id_held_and_with_200000_subtransactions(own_source, ingested,
                                                                                          shipped):
    def manifest_bytes() -> tuple[int, object]:
        result = ingest(Settings.from_env())
        return len(ingested.body(f"_runs/{result.run_id}.json")), result

    manifest_bytes()
    held, load = own_source.admin(), own_source.admin()
    try:
        held.run("BEGIN")
        held.run("INSERT INTO scratch VALUES (0)")  # holds an id while the others commit
        commit_interleaved(load, HELD_COMMITS)
        during, result = manifest_bytes()
        assert during < MANIFEST_LIMIT, during
        assert result.rows["department"] == HELD_COMMITS // 2 + 0 and result.files == 1
        quiet, result = manifest_bytes()
        assert quiet < MANIFEST_LIMIT and result.files == 0
        held.run("COMMIT")
        manifest_bytes()
        open_subtransactions(held, SUBTRANSACTIONS)
        for _ in range(2):
            with_savepoints, result = manifest_bytes()
            assert with_savepoints < MANIFEST_LIMIT and result.files == 0, with_savepoints
        held.run("COMMIT")
    finally:
        held.close()
        load.close()
    after, result = manifest_bytes()
    assert after < MANIFEST_LIMIT and result.files == 0  # the savepoints wrote another application's table


def test_savepoints_interleaved_one_for_one_with_commits_keep_the_manifest_under_64_kb_and_ship_each_row_once(
        own_source, ingested, shipped):
    """ADR 0001's once-unbounded case: the ids counted as in progress alternate one for one with ids
    that ended, 10,000 times (about 3,000 reached 64 KB when `in_progress` and `seen` were inline).
    Every department arrives once: the other session's with the run after them, the savepoints'
    with the run after their transaction commits."""
    count, first = 10_000, 5_000_000
    results = [ingest(Settings.from_env())]
    held, other = own_source.admin(), own_source.admin()
    try:
        held.run("BEGIN")
        interleave_savepoints(held, other, count, first)
        results += [ingest(Settings.from_env()), ingest(Settings.from_env())]
        held.run("COMMIT")
    finally:
        held.close()
        other.close()
    results += [ingest(Settings.from_env()), ingest(Settings.from_env())]
    sizes = [len(ingested.body(f"_runs/{r.run_id}.json")) for r in results]
    assert all(size < MANIFEST_LIMIT for size in sizes), sizes
    shipped_ids = [int(row["department_id"]) for r in results[1:] for row in shipped(r).get("department", [])]
    assert sorted(shipped_ids) == list(range(first, first + 2 * count))  # none lost, none twice
    assert [r.rows["department"] for r in results[1:]] == [count, 0, count, 0]
