"""mlflow.pytorch.log_model with explicit pip_requirements vs inferred ones, side by side (goal O2: >= 2x).

Both run in one process on a temporary SQLite store, interleaved (explicit first in odd rounds, inferred
first in even ones), after one untimed warm-up call that pays the lazy imports. MLflow 3.17's default pt2
serialization needs an input_example, so both get the same one. Prints the median of --runs each.

    .venv/bin/python bench/bench_mlflow_log_model.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

# Set before mlflow is imported: no telemetry thread or network attempt inside the timed calls.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.machine import describe  # noqa: E402
from include.mnist.model import build_model  # noqa: E402


def log_once(model: torch.nn.Module, example: np.ndarray, requirements: list[str] | None) -> float:
    """Seconds for one log_model call in a fresh run; None requirements means MLflow infers them."""
    with mlflow.start_run():
        start = time.perf_counter()
        if requirements is None:
            mlflow.pytorch.log_model(model, name="model", input_example=example)
        else:
            mlflow.pytorch.log_model(
                model, name="model", input_example=example, pip_requirements=requirements
            )
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(describe(), flush=True)

    # The same pins the training DAG passes (include.mlops.registry.pinned_requirements("torch", "numpy")).
    pins = [f"torch=={version('torch')}", f"numpy=={version('numpy')}"]
    torch.manual_seed(0)
    model = build_model().eval()
    example = np.zeros((1, 1, 28, 28), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        # An explicit artifact root: the SQLite store's default is ./mlruns in the current directory.
        experiment_id = mlflow.create_experiment(
            "bench-log-model", artifact_location=(Path(tmp) / "art").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment_id)
        warm = log_once(model, example, pins)  # warm-up: lazy imports, first export and serialization
        print(f"  warm-up (first call in the process, explicit): {warm:.2f} s", flush=True)
        explicit: list[float] = []
        inferred: list[float] = []
        for i in range(args.runs):
            order = [(explicit, pins), (inferred, None)]
            for times, requirements in order if i % 2 == 0 else reversed(order):
                times.append(log_once(model, example, requirements))
            print(
                f"  round {i + 1}: explicit {explicit[-1]:.2f} s, inferred {inferred[-1]:.2f} s  "
                f"[load {os.getloadavg()[0]:.2f}]",
                flush=True,
            )
    e, n = statistics.median(explicit), statistics.median(inferred)
    print(
        f"log_model median of {args.runs}: explicit pip_requirements {e:.2f} s, inferred {n:.2f} s -> "
        f"{n / e:.1f}x  (goal >= 2x; explicit <= 2.5 s)  mlflow {mlflow.__version__}"
    )
    met = n / e >= 2 and e <= 2.5
    print(f"goals: {'MET' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
