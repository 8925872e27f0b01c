"""The nightly mnist_training run on the local stack, trigger to success, and where its time goes.

Starts the stack scripts/pipeline starts (JFrog stand-in, MLflow behind basic auth, api-server, scheduler,
dag-processor, triggerer; JFrog Evidence on) in a temporary home, once with our executor and, side by side, with
Airflow's plain LocalExecutor (no preloaded libraries). On each it runs one warm-up run (the first run creates the
MLflow registry entry and the first champion), then `--runs` timed runs triggered through the REST API as the UI
does. Every step runs: validate, train (all 60,000 images), evaluate against the champion, register, publish,
SBOM, Xray gate, promote with evidence, release, approval check, champion move.

Prints per run the trigger-to-success seconds and per task its duration and the wait before it started
(scheduling), then the medians. Goal: median trigger to success <= 30 s with our executor; exit code 1 if missed.
Run: `.venv/bin/python bench/bench_nightly_dag.py [--runs 3] [--no-baseline]` (about 4 minutes; 2 with
--no-baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.machine import describe, load  # noqa: E402
from tests.ui.local_stack import LocalStack  # noqa: E402

GOAL_S = 30.0
DAG_ID = "mnist_training"
OURS = "mlops_executor.PreloadingLocalExecutor"
BASELINE = "LocalExecutor"
# The pipeline registers the signing key with the JFrog stand-in as a trusted Evidence key (scripts/pipeline).
TRUST_KEY = """
import os, sys
from jfrog_provider.hooks.evidence import EvidenceHook
from include.mlops.jfrog_evidence import DEFAULT_KEY_ALIAS
EvidenceHook().upload_trusted_key(DEFAULT_KEY_ALIAS, open(sys.argv[1]).read())
"""


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


def timed_run(stack: LocalStack, token: str, label: str) -> dict:
    """Trigger through the REST API, poll the run every 0.2 s; trigger-to-success and the per-task breakdown."""
    run_id = f"bench__{label}_{time.time_ns()}"
    start = time.time()
    stack.api(f"dags/{DAG_ID}/dagRuns", "POST", {"dag_run_id": run_id, "logical_date": None, "conf": {}})
    while True:
        run = stack.api(f"dags/{DAG_ID}/dagRuns/{run_id}", token=token)
        if run["state"] in ("success", "failed"):
            break
        if time.time() - start > 600:
            raise SystemExit(f"{run_id} did not finish in 600 s")
        time.sleep(0.2)
    seen = time.time()
    if run["state"] != "success":
        raise SystemExit(f"{run_id} {run['state']}: see {stack.home}/airflow/logs")
    tis = stack.api(f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100", token=token)["task_instances"]
    tasks = sorted(({"task": t["task_id"], "start": _ts(t["start_date"]), "end": _ts(t["end_date"])} for t in tis),
                   key=lambda t: t["start"])
    previous = _ts(run["queued_at"])
    for t in tasks:
        t["wait"], t["run"] = t["start"] - previous, t["end"] - t["start"]
        previous = t["end"]
    total = _ts(run["end_date"]) - start
    return {"total": total, "queued": _ts(run["queued_at"]) - start, "tail": _ts(run["end_date"]) - previous,
            "observed": seen - start, "tasks": tasks}


def measure(executor: str, runs: int) -> list[dict]:
    """Start the stack with `executor`, warm up once, then `runs` timed runs."""
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        stack = LocalStack(Path(tmp), extra_env={"AIRFLOW__CORE__EXECUTOR": executor, "MLOPS_JFROG_EVIDENCE": "true"})
        try:
            started = time.monotonic()
            stack.start()
            subprocess.run([sys.executable, "-c", TRUST_KEY, str(Path(tmp) / "keys" / "model-signing.pub")],
                           env={**stack.env, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}, cwd=ROOT, check=True)
            stack.wait_for_dags([DAG_ID])
            stack.api(f"dags/{DAG_ID}", "PATCH", {"is_paused": False})
            print(f"[{executor}] stack up in {time.monotonic() - started:.0f} s  [{load()}]", flush=True)
            token = stack.token()
            warm = timed_run(stack, token, "warmup")
            print(f"[{executor}] warm-up run (creates the registry entry and first champion): {warm['total']:.1f} s",
                  flush=True)
            results = []
            for i in range(runs):
                result = timed_run(stack, token, f"run{i}")
                results.append(result)
                steps = ", ".join(f"{t['task']} {t['wait']:.1f}+{t['run']:.1f}" for t in result["tasks"])
                print(f"[{executor}] run {i + 1}: trigger to success {result['total']:.1f} s "
                      f"(queued after {result['queued']:.2f} s; task wait+run: {steps})  [{load()}]", flush=True)
            return results
        finally:
            stack.stop()


def summary(label: str, results: list[dict]) -> float:
    """Print the medians per task and in total; returns the median trigger-to-success seconds."""
    total = statistics.median(r["total"] for r in results)
    names = [t["task"] for t in results[0]["tasks"]]
    runs = ", ".join(f"{r['total']:.1f}" for r in results)
    print(f"\n{label}: trigger to success, median of {len(results)}: {total:.1f} s ({runs})")
    waits = ran = 0.0
    for name in names:
        rows = [next(t for t in r["tasks"] if t["task"] == name) for r in results]
        wait, run = statistics.median(t["wait"] for t in rows), statistics.median(t["run"] for t in rows)
        waits, ran = waits + wait, ran + run
        print(f"  {name:<18} waited {wait:5.2f} s  ran {run:5.2f} s")
    print(f"  {'all tasks':<18} waited {waits:5.2f} s  ran {ran:5.2f} s (task run = start-up, DAG parse, body)")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain LocalExecutor stack")
    args = parser.parse_args(argv)
    print(describe(), flush=True)
    ours = measure(OURS, args.runs)
    baseline = None if args.no_baseline else measure(BASELINE, args.runs)
    ours_total = summary(f"ours ({OURS})", ours)
    if baseline:
        base_total = summary(f"baseline (Airflow's {BASELINE}, every task imports torch/mlflow itself)", baseline)
        print(f"\nbaseline / ours: {base_total / ours_total:.2f}x")
    ok = ours_total <= GOAL_S
    print(f"goal: nightly run trigger to success <= {GOAL_S:.0f} s: {ours_total:.1f} s {'MET' if ok else 'MISSED'}"
          f"  [{load()}]")
    print("json " + json.dumps({"ours": ours, "baseline": baseline}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
