"""The training presets on a CUDA GPU: accuracy and train seconds of fast (5 seeds) and quality (2 seeds).

Goals (H100/H200): fast >= 99.0 % on every seed in <= 0.15 s of training; quality >= 99.5 % (its 5-view TTA is
the served model) in <= 2 s. One warm-up run of each preset first (CUDA context, cuDNN and CUDA-graph capture
set-up), then the timed runs; train seconds include each run's own graph capture. Exit code 1 if a goal is
missed, 2 if there is no CUDA device. Needs only torch, numpy and safetensors (no Airflow, MLflow or network):
`bench/gpu_check.sh` runs it with the project's venv or the machine's python3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

from bench.machine import describe  # noqa: E402
from include.mnist.evaluate import evaluate_model  # noqa: E402
from include.mnist.train import TrainConfig, train_model  # noqa: E402

GOALS = {"fast": (0.990, 0.15), "quality": (0.995, 2.0)}


def run(preset: str, seed: int, data_dir: Path, workdir: Path) -> tuple[float, float]:
    """Train one preset on cuda and evaluate it: (test accuracy, train seconds)."""
    path = workdir / f"{preset}-{seed}" / "model.safetensors"
    path.parent.mkdir()
    result = train_model(TrainConfig(preset=preset, seed=seed, device="cuda"), data_dir, path)
    accuracy = evaluate_model(path, data_dir, device="cuda").accuracy
    print(f"  {preset} seed={seed}: test acc {accuracy:.4%}, train {result.train_seconds:.3f} s "
          f"(graph capture {result.capture_seconds:.3f} s, amp {result.amp_dtype})", flush=True)
    return accuracy, result.train_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "include" / "data" / "mnist")
    parser.add_argument("--fast-seeds", default="42,1,2,3,4")
    parser.add_argument("--quality-seeds", default="42,1")
    args = parser.parse_args(argv)
    print(describe(), flush=True)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    seeds = {"fast": [int(s) for s in args.fast_seeds.split(",")],
             "quality": [int(s) for s in args.quality_seeds.split(",")]}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for preset, (min_accuracy, max_seconds) in GOALS.items():
            run(preset, 0, args.data_dir, Path(tmp))  # warm-up, not counted
            rows = [run(preset, seed, args.data_dir, Path(tmp)) for seed in seeds[preset]]
            worst, median_s = min(a for a, _ in rows), statistics.median(t for _, t in rows)
            met = worst >= min_accuracy and median_s <= max_seconds
            ok &= met
            print(f"{preset}: min test acc {worst:.2%} over {len(rows)} seeds (goal >= {min_accuracy:.1%}), "
                  f"median train {median_s:.3f} s (goal <= {max_seconds} s): {'MET' if met else 'MISSED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
