"""``--only compare``: hmq and its peers on the same workloads, in the same run, on the same
machine, each with the same number of workers (1 core each).

hmq runs through its public API against ``hmq up`` (SQLite and the local object store), then
against the same stack on PostgreSQL and S3 (moto's server). The peers run in their own virtual
environment (:mod:`bench.peer_env`): RQ with Redis and ``SimpleWorker`` processes, Lithops with
its localhost compute and storage backends (:mod:`bench.peers`). A peer that cannot run here is
left out with a one-line reason; a peer workload that would not fit in its time budget is
skipped, and one that fails (a Lithops call that never returns is given up after a timeout) is
marked so, each with a line under the table saying why. The last line under it is the floor of
a warm call here (:mod:`bench.floor`): its eight requests to handlers that do nothing, beside
RQ's one-call p50.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from bench import floor, peer_env
from bench.stacks import local_queue, postgres_s3, scenario

PEER_NAMES = {"rq": "RQ", "lithops": "Lithops"}


@dataclass(frozen=True)
class Workloads:
    """The sizes of each workload: one-call ``latency`` repeats, ``noop`` tags, a tag of
    ``kilobyte`` calls returning 1 KB."""

    latency: int
    noop: tuple[int, ...]
    kilobyte: int

    @classmethod
    def of(cls, quick: bool, latency_only: bool = False) -> Workloads:
        """The sizes of ``--quick`` or a full run; ``latency_only``: the one-call row alone
        (``--only latency``), with more repeats."""
        if latency_only:
            return cls(10 if quick else 100, (), 0)
        return cls(5, (500, 2_000), 500) if quick else cls(30, (5_000, 50_000), 5_000)

    def rows(self) -> list[tuple[str, str]]:
        """``(key, label)`` of each row of the table."""
        rows = [("latency", f"one no-op call, warm: p50 / p95 of {self.latency} (ms)")]
        rows += [(f"noop:{n}", f"{n:,} no-op calls end to end (calls/s)") for n in self.noop]
        if self.kilobyte:
            rows.append((f"kilobyte:{self.kilobyte}", f"{self.kilobyte:,} calls returning 1 KB (calls/s)"))
        return rows


def hmq_column(workloads: Workloads, env: dict[str, str]) -> dict[str, Any]:
    """hmq's figures on the queue of ``env``."""
    figures: dict[str, Any] = {"latency": scenario("latency", workloads.latency, env)}
    for n in workloads.noop:
        figures[f"noop:{n}"] = scenario("end_to_end", n, env)["end_to_end_per_s"]
    if workloads.kilobyte:
        figures[f"kilobyte:{workloads.kilobyte}"] = scenario("kilobyte", workloads.kilobyte, env)["end_to_end_per_s"]
    return figures


def peer_column(peer: str, workloads: Workloads, workers: int, budget: float) -> tuple[Optional[dict[str, Any]], str]:
    """A peer's figures, or ``(None, why it could not run)``."""
    log = Path(tempfile.gettempdir()) / "hmq-bench-peers.log"
    python, why = peer_env.peer_python(log)
    if python is None:
        return None, why
    if peer == "rq":
        server, why = peer_env.redis_server()
        if server is None:
            return None, why
    spec = json.dumps(asdict(workloads))
    argv = [python, "-m", "bench.peers", peer, spec, "--workers", str(workers), "--budget", str(budget)]
    env = {**os.environ, "PYTHONPATH": str(peer_env.REPO)}
    out = subprocess.run(argv, cwd=peer_env.REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"it failed: {last}"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['p50_ms']:,.1f} / {value['p95_ms']:,.1f}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return str(value).split(":", 1)[0]  # "skipped", "failed": why is a note under the table


def peer_notes(name: str, workloads: Workloads, figures: dict[str, Any]) -> list[str]:
    """One line for each of a peer's workloads that has no figure, saying why (a cell of the
    table only says "skipped" or "failed")."""
    return [
        f"{name}: {label.rsplit(' (', 1)[0]}: {figures[key]}"
        for key, label in workloads.rows()
        if isinstance(figures.get(key), str)
    ]


def _ratio(ours: Any, theirs: Any) -> str:
    """ours / theirs: of rates (higher is better for hmq) or of p50 latencies (lower is)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return f"{ours['p50_ms'] / theirs['p50_ms']:.2f}x"
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
        return f"{ours / theirs:.1f}x"
    return "-"


def table(workloads: Workloads, columns: dict[str, Optional[dict[str, Any]]]) -> list[str]:
    """The side-by-side table, as Markdown."""
    hmq, pg = columns["hmq"] or {}, columns.get("hmq PG+S3") or {}
    peers = [p for p in PEER_NAMES.values() if p in columns]
    head = ["workload", "hmq", *peers, *(f"hmq/{p}" for p in peers), "hmq PG+S3", "PG+S3/hmq"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label in workloads.rows():
        cells = [label, _cell(hmq.get(key))]
        cells += [_cell((columns[p] or {}).get(key)) for p in peers]
        cells += [_ratio(hmq.get(key), (columns[p] or {}).get(key)) for p in peers]
        cells += [_cell(pg.get(key)), _ratio(pg.get(key), hmq.get(key))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def floor_note(protocol_floor: dict[str, float], columns: dict[str, Optional[dict[str, Any]]]) -> str:
    """The line on :mod:`bench.floor`'s figures, against RQ's one-call p50 when RQ ran."""
    line = (
        "floor: a warm call's eight requests to handlers that do nothing (hmq's kept connections "
        f"to uvicorn and Starlette): p50 / p95 {_cell(protocol_floor)} ms"
    )
    rq = (columns.get("RQ") or {}).get("latency")
    if isinstance(rq, dict):
        line += f", {_ratio(protocol_floor, rq)} RQ's p50"
    return line


def run(workers: int, quick: bool, peers: list[str], latency_only: bool = False) -> None:
    """Measure everything (``latency_only``: the one-call latency alone) and print the table
    (and why a peer is missing, if one is)."""
    workloads = Workloads.of(quick, latency_only)
    columns: dict[str, Optional[dict[str, Any]]] = {}
    with local_queue(workers) as env:
        columns["hmq"] = hmq_column(workloads, env)
    with postgres_s3() as (database, storage), local_queue(workers, database=database, storage=storage) as env:
        columns["hmq PG+S3"] = hmq_column(workloads, env)
    protocol_floor = floor.measure(workloads.latency)
    notes = []
    for peer in peers:
        figures, why = peer_column(peer, workloads, workers, 120 if quick else 600)
        if figures is None:
            notes.append(f"{PEER_NAMES[peer]}: left out: {why}")
        else:
            columns[PEER_NAMES[peer]] = figures
            notes += peer_notes(PEER_NAMES[peer], workloads, figures)
    print(
        f"{'latency' if latency_only else 'compare':<11} the same workloads on hmq and its peers, {workers} workers each:"
    )
    for line in [*table(workloads, columns), *notes, floor_note(protocol_floor, columns)]:
        print(f"  {line}")
    print("  (ratios: of rates, higher is better for hmq; of one-call p50 latencies, lower is)")
