"""The README's `make demo` and its loop example, timed step by step (the README quotes this section).

    python scripts/time_demo.py [--workdir /tmp/kibble_demo_timing] [--full]

Runs, as `make demo` does after set-up, each as its own `kibble` process on a fresh workspace (so the
first round embeds the digits, as on a fresh machine):
  1. kibble import workspace=W overwrite=true inject_noise.rate=0.2
  2. kibble loop workspace=W experiment=demo_loop
  3. kibble train workspace=W experiment=demo_digits_quick   (--full: experiment=demo_digits, DEMO_TRAIN=full)
then the README's loop example with a random-queue arm on a second fresh import:
  4. kibble loop workspace=W2 experiment=demo_loop rounds=2 baseline=random
and records the wall time of each (start-up included), the load average, and what each printed last, in
docs/benchmarks.md, section "make demo, step by step". Set-up (the venv, the weights) is not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

TITLE = "make demo, step by step (scripts/time_demo.py)"


def timed(args: list[str], cwd: Path) -> tuple[float, list[str]]:
    script = Path(sys.executable).with_name("kibble")  # the console script, as a user runs it; else the module
    kibble = [str(script)] if script.is_file() else [sys.executable, "-m", "kibble.cli"]
    start = time.perf_counter()
    out = subprocess.run([*kibble, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"kibble {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return seconds, [line for line in (out.stdout + "\n" + out.stderr).splitlines() if line.strip()]


def loop_rows(workspace: Path) -> pd.DataFrame | None:
    path = workspace / "loop_summary.csv"
    return pd.read_csv(path) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kibble_demo_timing"))
    parser.add_argument("--full", action="store_true", help="the full final training (make demo DEMO_TRAIN=full)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    ws, ws2 = args.workdir / "demo", args.workdir / "demo_random"
    final = "demo_digits" if args.full else "demo_digits_quick"
    steps = [
        ("1", "kibble import workspace=W overwrite=true inject_noise.rate=0.2", ["import", f"workspace={ws}", "overwrite=true", "inject_noise.rate=0.2"]),
        ("2", "kibble loop workspace=W experiment=demo_loop", ["loop", f"workspace={ws}", "experiment=demo_loop"]),
        ("3", f"kibble train workspace=W experiment={final}", ["train", f"workspace={ws}", f"experiment={final}"]),
        ("4", "kibble import workspace=W2 ... (the same)", ["import", f"workspace={ws2}", "overwrite=true", "inject_noise.rate=0.2"]),
        ("5", "kibble loop workspace=W2 experiment=demo_loop rounds=2 baseline=random", ["loop", f"workspace={ws2}", "experiment=demo_loop", "rounds=2", "baseline=random"]),
    ]
    rows, loads, outputs = [], [os.getloadavg()[0]], {}
    for step, shown, argv in steps:
        seconds, lines = timed(argv, args.workdir)
        loads.append(os.getloadavg()[0])
        outputs[step] = lines
        said = [line.strip() for line in lines if any(ch.isalnum() for ch in line)]  # not a table's border
        rows.append({"step": step, "command": f"`{shown}`", "s": seconds, "last line": (said[-1] if said else "")[:100]})
        print(f"{seconds:7.1f} s  {shown}", flush=True)
    table = pd.DataFrame(rows)
    demo_total = float(table["s"].iloc[:3].sum())
    print(table.to_string(index=False))
    notes = [
        f"`make demo` after set-up = steps 1-3: {demo_total:.0f} s ({demo_total / 60:.1f} min). Each step is its own process, "
        "start-up and imports included, on a fresh workspace: the loop's first round embeds the 1,797 digits once "
        "(the cache is per workspace), later rounds read the cache.",
        f"1-min load average before and after each step: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores "
        "(a shared machine: other jobs may run too).",
    ]
    keep = ("queue_precision", "noise_remaining", "oof_accuracy_true", "test_accuracy", "wall_s")
    for step, label, workspace in (("2", "Step 2's per-round table", ws), ("5", "Step 5, the strategy's arm and the random arm", ws2)):
        summary = loop_rows(workspace)
        if summary is None:
            continue
        cols = [c for c in summary.columns if c.endswith(keep) and not c.startswith("wall_s_")]
        notes.append(f"{label} (loop_summary.csv): " + "; ".join(
            f"round {int(row['round'])}: " + ", ".join(f"{c} {row[c]:.3f}" for c in cols if pd.notna(row[c])) for _, row in summary.iterrows()))
    train_lines = [line for line in outputs.get("3", []) if "test" in line.lower() and "acc" in line.lower()]
    if train_lines:
        notes.append(f"Step 3's test line: {train_lines[-1].strip()[:200]}")
    print("\n".join(notes))
    if not args.no_record:
        from kibble.benchmarks import record

        record(TITLE, table, notes)


if __name__ == "__main__":
    main()
