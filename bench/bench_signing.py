"""Cost of the model trust chain: sign and verify the model (goal <= 50 ms median each) and a safetensors load
no slower than torch.load(weights_only=True) of the same state_dict (what the pipeline loaded before).

    python bench/bench_signing.py [--repeat 50] [--architecture fast99-strided-cnn]

Prints the CPU model and the medians; exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe  # noqa: E402

SIGN_GOAL_MS = 50.0
VERIFY_GOAL_MS = 50.0


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: imports, first allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--architecture", default="fast99-strided-cnn")
    args = parser.parse_args()

    import io

    import torch
    from safetensors.torch import load as load_safetensors

    from include.mlops.model_scan import safetensors_header
    from include.mlops.signing import generate_key_pair, sign_model, verify_model
    from include.mnist.model import build_model
    from include.mnist.train import load_model, save_model, save_state_dict

    torch.set_num_threads(1)
    private, public = generate_key_pair()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = build_model(args.architecture)
        weights = root / "model" / "model.safetensors"
        save_model(model, weights, "fast")
        save_state_dict(model, root / "model.pt")
        signature = root / "model.sig"

        sign = median_ms(lambda: sign_model(weights.parent, signature, private), args.repeat)
        verify = median_ms(lambda: verify_model(weights.parent, signature, public), args.repeat)
        pt_bytes, st_bytes = (root / "model.pt").read_bytes(), weights.read_bytes()

        def torch_load() -> object:
            return torch.load(io.BytesIO(pt_bytes), map_location="cpu", weights_only=True)

        def safetensors_load() -> object:
            safetensors_header(st_bytes, "bench")  # the strict header check the loader runs first
            return load_safetensors(st_bytes)

        # Interleaved rounds so drift in machine load hits both alike.
        torch_ms, st_ms = [], []
        for _ in range(5):
            torch_ms.append(median_ms(torch_load, args.repeat))
            st_ms.append(median_ms(safetensors_load, args.repeat))
        torch_med, st_med = statistics.median(torch_ms), statistics.median(st_ms)
        full = median_ms(lambda: load_model(weights.parent), args.repeat)

    print(f"{describe()}\ntorch {torch.__version__}, 1 thread")
    print(f"model {args.architecture}: {len(st_bytes):,} bytes safetensors, {len(pt_bytes):,} bytes torch zip")
    print(f"sign (model-signing, P-256, model dir)   median {sign:7.2f} ms  goal <= {SIGN_GOAL_MS:.0f} ms")
    print(f"verify (private copy + model-signing)    median {verify:7.2f} ms  goal <= {VERIFY_GOAL_MS:.0f} ms")
    print(f"torch.load(weights_only=True) state_dict median {torch_med:7.3f} ms")
    print(f"safetensors load incl. header check      median {st_med:7.3f} ms  goal <= torch.load")
    print(f"load_model (config + header + build + load_state_dict) median {full:.3f} ms")
    missed = []
    if sign > SIGN_GOAL_MS:
        missed.append(f"sign {sign:.1f} ms > {SIGN_GOAL_MS} ms")
    if verify > VERIFY_GOAL_MS:
        missed.append(f"verify {verify:.1f} ms > {VERIFY_GOAL_MS} ms")
    if st_med > torch_med:
        missed.append(f"safetensors load {st_med:.3f} ms > torch.load {torch_med:.3f} ms")
    print("goals missed: " + "; ".join(missed) if missed else "all goals met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
