"""Wait for a URL, for DAGs to be parsed, or for a DAG run to finish; used by scripts/pipeline."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def wait_url(url: str, deadline: float) -> None:
    """Until the URL answers 200."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        _check(deadline, f"{url} did not answer 200")
        time.sleep(1)


def wait_dags(dag_ids: list[str], deadline: float) -> None:
    """Until the dag-processor has serialized every DAG without import errors."""
    while True:
        found = {d["dag_id"] for d in _json_rows(_airflow("dags", "list", "-o", "json"))}
        if set(dag_ids) <= found:
            return
        errors = _json_rows(_airflow("dags", "list-import-errors", "-o", "json"))
        if errors:
            sys.exit(f"DAG import errors: {errors}")
        _check(deadline, f"DAGs {sorted(set(dag_ids) - found)} not parsed")
        time.sleep(3)


def wait_run(dag_id: str, run_id: str, deadline: float) -> None:
    """Until the run ends; exit 1 when it failed."""
    last = ""
    while True:
        state = _airflow("dags", "state", dag_id, run_id).strip().splitlines()
        # `airflow dags state` appends the run's conf ("success, {...}") when the run has one.
        state_word = state[-1].split(",")[0].strip() if state else ""
        if state_word != last:
            print(f"{dag_id} {run_id}: {state_word}", flush=True)
            last = state_word
        if state_word == "success":
            return
        if state_word == "failed":
            print(_airflow("tasks", "states-for-dag-run", dag_id, run_id), flush=True)
            sys.exit(1)
        _check(deadline, f"{dag_id} {run_id} still {state_word}")
        time.sleep(5)


def _json_rows(out: str) -> list[dict]:
    """The JSON list in a CLI's output; Airflow prints warnings on stdout before it."""
    rows = [line for line in out.splitlines() if line.startswith("[")]
    return json.loads(rows[-1]) if rows else []


def _airflow(*args: str) -> str:
    proc = subprocess.run(["airflow", *args], capture_output=True, text=True, check=False)
    return proc.stdout


def _check(deadline: float, message: str) -> None:
    if time.monotonic() > deadline:
        sys.exit(f"timed out: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--dags", nargs="+")
    parser.add_argument("--dag-run", nargs=2, metavar=("DAG_ID", "RUN_ID"))
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    if args.url:
        wait_url(args.url, deadline)
    if args.dags:
        wait_dags(args.dags, deadline)
    if args.dag_run:
        wait_run(*args.dag_run, deadline)


if __name__ == "__main__":
    main()
