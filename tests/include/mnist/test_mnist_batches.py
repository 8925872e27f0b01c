"""include.mnist.batches: every scenario has the right shape and moves the statistic it claims to move."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from include.mnist.batches import SCENARIOS, _rotate, main, make_batch, write_batch
from include.mnist.data import MnistSplit, load_split

SIZE = 400


@pytest.fixture(scope="module")
def pool(data_dir: Path) -> MnistSplit:
    return load_split(data_dir, "test")


@pytest.fixture(scope="module")
def clean(pool: MnistSplit) -> tuple[np.ndarray, np.ndarray]:
    return make_batch(pool.images, pool.labels, "clean", SIZE, seed=1)


def principal_axis_degrees(images: np.ndarray) -> np.ndarray:
    """Orientation of each image's ink (principal axis of its second moments), in degrees."""
    ys, xs = np.mgrid[0:28, 0:28]
    w = images.astype(np.float64)
    total = w.sum(axis=(1, 2)) + 1e-9
    mx, my = (w * xs).sum(axis=(1, 2)) / total, (w * ys).sum(axis=(1, 2)) / total
    dx, dy = xs - mx[:, None, None], ys - my[:, None, None]
    cxx, cyy, cxy = (
        (w * dx * dx).sum(axis=(1, 2)),
        (w * dy * dy).sum(axis=(1, 2)),
        (w * dx * dy).sum(axis=(1, 2)),
    )
    return np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_shape_dtype_and_seed(pool: MnistSplit, scenario: str) -> None:
    images, labels = make_batch(pool.images, pool.labels, scenario, SIZE, seed=3)
    assert images.shape == (SIZE, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (SIZE,) and labels.dtype == pool.labels.dtype
    assert labels.max() <= 9
    again = make_batch(pool.images, pool.labels, scenario, SIZE, seed=3)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    other = make_batch(pool.images, pool.labels, scenario, SIZE, seed=4)
    assert not np.array_equal(labels, other[1])


def test_clean_batch_is_drawn_from_pool(pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = clean
    pool_rows = {row.tobytes(): lbl for row, lbl in zip(pool.images, pool.labels, strict=True)}
    assert all(pool_rows[img.tobytes()] == lbl for img, lbl in zip(images, labels, strict=True))
    assert len({img.tobytes() for img in images}) == SIZE  # drawn without replacement
    assert abs(float(images.mean()) - float(pool.images.mean())) < 5


def test_inversion_raises_mean_intensity(pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = make_batch(pool.images, pool.labels, "inversion", SIZE, seed=1)
    np.testing.assert_array_equal(images, 255 - clean[0])  # same seed draws the same records
    assert images.mean() > 200 > 40 > clean[0].mean()


def test_noise_raises_pixel_spread_in_background(
    pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = make_batch(pool.images, pool.labels, "noise", SIZE, seed=1)
    background = clean[0] == 0
    assert (images[background] > 0).mean() > 0.4  # about half the zero pixels get positive noise
    assert float(clean[0][background].std()) == 0.0 < 20 < float(images[background].std())


def test_rotation_moves_ink_but_keeps_it(pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = make_batch(pool.images, pool.labels, "rotation", SIZE, seed=1)
    np.testing.assert_array_equal(labels, clean[1])
    # Ink mass survives (digits sit in the central 20x20, so little is rotated out of frame)...
    ratio = images.astype(np.float64).sum() / clean[0].astype(np.float64).sum()
    assert 0.85 < ratio < 1.1
    # ...but lands on different pixels, and shape orientation changes.
    changed = np.abs(images.astype(int) - clean[0].astype(int)).mean(axis=(1, 2))
    assert (changed > 10).mean() > 0.95
    # The ink's principal axis turns by the drawn 30-45 degrees (wrapped to +-90, the axis has no direction).
    turned = np.abs((principal_axis_degrees(images) - principal_axis_degrees(clean[0]) + 90) % 180 - 90)
    assert 28 < float(np.median(turned)) < 47


def test_rotate_known_angles() -> None:
    img = np.zeros((1, 28, 28), dtype=np.uint8)
    img[0, 4, 12:16] = 255  # a bar above the centre
    np.testing.assert_array_equal(_rotate(img, np.array([0.0])), img)
    quarter = _rotate(np.repeat(img, 2, axis=0), np.array([90.0, -90.0]))
    # A quarter turn moves the bar from the top row band to the left or right column band.
    assert quarter[0, 12:16, 4].min() == 255 or quarter[0, 12:16, 23].min() == 255
    np.testing.assert_array_equal(quarter[0], quarter[1][:, ::-1])
    assert quarter[:, 4, 12:16].max() == 0


def test_imbalance_concentrates_labels(pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = make_batch(pool.images, pool.labels, "imbalance", SIZE, seed=1)
    top_two = np.sort(np.bincount(labels, minlength=10))[-2:].sum() / SIZE
    clean_top_two = np.sort(np.bincount(clean[1], minlength=10))[-2:].sum() / SIZE
    assert top_two > 0.85 and clean_top_two < 0.3


def test_blank_is_near_zero(pool: MnistSplit) -> None:
    images, _ = make_batch(pool.images, pool.labels, "blank", SIZE, seed=1)
    assert images.max() <= 8 and images.mean() < 5


def test_severity_zero_leaves_pixels_alone(pool: MnistSplit, clean: tuple[np.ndarray, np.ndarray]) -> None:
    for scenario in ("rotation", "noise", "inversion"):
        images, _ = make_batch(pool.images, pool.labels, scenario, SIZE, seed=1, severity=0.0)
        np.testing.assert_array_equal(images, clean[0], err_msg=scenario)


def test_make_batch_rejects_bad_arguments(pool: MnistSplit) -> None:
    with pytest.raises(ValueError, match="clean, rotation, noise, inversion, imbalance, blank"):
        make_batch(pool.images, pool.labels, "snow", 10, seed=0)
    with pytest.raises(ValueError, match="size"):
        make_batch(pool.images, pool.labels, "clean", 0, seed=0)
    with pytest.raises(ValueError, match="severity"):
        make_batch(pool.images, pool.labels, "noise", 10, seed=0, severity=-1)
    with pytest.raises(ValueError, match="uint8"):
        make_batch(pool.images.astype(np.float32), pool.labels, "clean", 10, seed=0)


def test_write_batch_atomic_and_no_overwrite(tmp_path: Path, clean: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = clean
    landing = tmp_path / "landing"
    path = write_batch(landing, images, labels, "clean-1")
    assert path == landing / "clean-1.npz"
    with np.load(path, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["images", "labels"]
        np.testing.assert_array_equal(saved["images"], images)
        np.testing.assert_array_equal(saved["labels"], labels)
    # A retried task writing the same batch succeeds; different content under the same name does not.
    assert write_batch(landing, images, labels, "clean-1") == path
    with pytest.raises(FileExistsError) as info:
        write_batch(landing, 255 - images, labels, "clean-1")
    assert str(path) in str(info.value)
    assert sorted(p.name for p in landing.iterdir()) == ["clean-1.npz"]  # no temp files left
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="name"):
            write_batch(landing, images, labels, bad)


def test_cli_writes_batch(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--scenario",
        "inversion",
        "--size",
        "50",
        "--seed",
        "2",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(data_dir),
    ]
    assert main(argv) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == tmp_path / "inversion-seed2-n50.npz"
    with np.load(printed) as saved:
        assert saved["images"].shape == (50, 28, 28) and saved["images"].mean() > 200


def test_cli_module_entry_point(tmp_path: Path, data_dir: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "include.mnist.batches",
            "--scenario",
            "blank",
            "--size",
            "20",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(data_dir),
            "--name",
            "dead-camera",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == str(tmp_path / "dead-camera.npz")


def test_data_and_batches_do_not_import_torch() -> None:
    repo = Path(__file__).resolve().parents[3]
    code = "import sys, include.mnist.data, include.mnist.batches; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'airflow')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
