"""Batch bookkeeping for drift monitoring: landing, quarantine, claims, a processed manifest and the history.

Producer contract: write the batch under a hidden name (starting with ".") in the landing folder, then rename
it to `<name>.npz` (rename(2) in the same folder is atomic), as `python -m include.mnist.batches` does. Hidden
files are never read, so a file is only claimed complete. Anything else that appears in landing (a symlink,
a FIFO, a folder, a file still being written, one that is not a valid batch) is moved to `quarantine/` under a
unique name with a `.reason.json`, never overwriting an earlier one, and never left to crash the next run.

Exactly once, keyed by content: the key is the sha256 of the decoded arrays (`drift.content_digest`), so the
same arrays saved differently are one batch. Ingest reads a landed file once (no symlink, bounded size),
validates those bytes, and claims them as `batches/<key>/batch.npz`; a batch counts as processed only when
`processed/<key>.json` exists, written atomically after the reports and the verdict. A rerun finds
claimed-but-unmarked batches and finishes them. Ingest passes hold one lock and each batch's measurement holds
that batch's lock (flock(2) on files under `locks/`), so racing runs neither claim nor measure a batch twice.
A batch whose content was already processed or claimed is quarantined as a duplicate: nothing is skipped silently.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.mlops.files import atomic_write_bytes, atomic_write_text, write_json
from include.security.untrusted import read_regular_file
from include.settings import InputLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRef:
    """A claimed batch, known by its content digest."""

    sha256: str
    name: str
    path: str
    arrived_at: str
    file_sha256: str = ""  # the landed file's bytes, for the audit trail; the key is the content digest

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy for XCom."""
        return asdict(self)


@dataclass(frozen=True)
class Quarantined:
    """A landed file that was refused, where it went and why."""

    name: str
    path: str
    reason: str


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion pass claimed, quarantined, and what is still pending."""

    claimed: list[BatchRef]
    quarantined: list[Quarantined]
    pending: list[BatchRef]


@dataclass(frozen=True)
class DriftStore:
    """The folders of the drift monitor; nothing is created until something is written."""

    landing: Path
    root: Path

    @property
    def quarantine(self) -> Path:
        """Refused files, each with a `<file>.reason.json`."""
        return self.root / "quarantine"

    @property
    def batches(self) -> Path:
        """Claimed batches, one folder per sha256."""
        return self.root / "batches"

    @property
    def processed(self) -> Path:
        """The processed manifest: one `<sha256>.json` per finished batch, the verdict inside."""
        return self.root / "processed"

    def landed(self) -> list[Path]:
        """Entries waiting in the landing folder (any type: lstat, never followed), oldest first; hidden ones are
        producers' temporaries."""
        if not self.landing.is_dir():
            return []
        entries = []
        with os.scandir(self.landing) as scan:
            for entry in scan:
                if entry.name.startswith("."):
                    continue
                try:
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                except FileNotFoundError:  # taken meanwhile
                    continue
        return [self.landing / name for _, name in sorted(entries)]

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold an exclusive flock(2) on `locks/<name>.lock` (threads and processes alike) while the block runs."""
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @contextmanager
    def measuring(self, sha256: str) -> Iterator[dict[str, Any] | None]:
        """Hold the batch's lock while it is measured; yields its processed record when another run finished it."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"batch sha256 {sha256!r} is not a lower-case sha256")
        with self.lock(sha256):
            yield self.record(sha256)

    def pending(self) -> list[BatchRef]:
        """Claimed batches without a processed marker, in arrival order."""
        refs = []
        if self.batches.is_dir():
            for folder in self.batches.iterdir():
                meta, data = folder / "meta.json", folder / "batch.npz"
                if data.exists() and meta.exists() and not (self.processed / f"{folder.name}.json").exists():
                    refs.append(BatchRef(**json.loads(meta.read_text())))
        return sorted(refs, key=lambda r: (r.arrived_at, r.name))

    def has_work(self) -> bool:
        """True when a file landed or a claimed batch is unfinished: the sensor's question."""
        return bool(self.landed()) or bool(self.pending())

    def record(self, sha256: str) -> dict[str, Any] | None:
        """The processed record of a batch, or None."""
        path = self.processed / f"{sha256}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def records(self) -> list[dict[str, Any]]:
        """Every processed record, oldest first: the drift history."""
        if not self.processed.is_dir():
            return []
        rows = [json.loads(p.read_text()) for p in self.processed.glob("*.json")]
        return sorted(rows, key=lambda r: (r.get("measured_at", ""), r.get("batch", {}).get("name", "")))

    def mark_processed(self, sha256: str, record: dict[str, Any]) -> Path:
        """Write the processed marker last, atomically: from now on the batch is never measured again."""
        return write_json(self.processed / f"{sha256}.json", record)

    def unsignalled_drift(self, run_id: str) -> list[dict[str, Any]]:
        """Drift verdicts no retrain decision has handled yet, plus those this run already handled (its retry)."""
        return [
            r
            for r in self.records()
            if r.get("drift_detected") and (r.get("signal") is None or r["signal"].get("run_id") == run_id)
        ]

    def mark_signal(self, sha256s: list[str], signal: dict[str, Any]) -> None:
        """Record what the retrain decision did with these drift verdicts (emitted or suppressed, and why)."""
        for sha in sha256s:
            record = self.record(sha)
            if record is not None:
                self.mark_processed(sha, {**record, "signal": signal})


def ingest(
    store: DriftStore,
    load: Callable[[Path], Any],
    sha256_of: Callable[[Path], str] | None = None,
    limits: InputLimits | None = None,
) -> IngestResult:
    """Claim every valid landed batch, quarantine everything else with a reason; returns all pending batches.

    `load` validates a batch file and returns its (images, labels); their content digest keys the batch.
    `sha256_of` is kept for callers that pass a file hash function: the file's sha256 is recorded either way.
    """
    limits = limits or InputLimits.from_env()
    claimed: list[BatchRef] = []
    quarantined: list[Quarantined] = []
    with store.lock("ingest"):
        for path in store.landed():
            outcome = _ingest_one(store, path, load, limits)
            if isinstance(outcome, BatchRef):
                claimed.append(outcome)
            elif isinstance(outcome, Quarantined):
                quarantined.append(outcome)
    return IngestResult(claimed=claimed, quarantined=quarantined, pending=store.pending())


def _ingest_one(store: DriftStore, path: Path, load: Callable[[Path], Any], limits: InputLimits) -> BatchRef | Quarantined | None:
    """Claim or quarantine one landed entry; None when it vanished meanwhile."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return _quarantine(store, path, None, f"{path}: is a symbolic link; producers rename a regular file into landing")
    if not stat.S_ISREG(info.st_mode):
        return _quarantine(store, path, None, f"{path}: is not a regular file (mode {stat.filemode(info.st_mode)})")
    if path.suffix != ".npz":
        return _quarantine(store, path, None, f"{path}: format: expected a .npz batch")
    try:
        blob = read_regular_file(path, limits.batch_max_file_bytes, ValueError)
    except ValueError as exc:
        return _quarantine(store, path, None, str(exc))
    file_sha = hashlib.sha256(blob).hexdigest()
    # Validate a private copy of exactly these bytes: what is claimed is what was validated, whatever happens to
    # the landed path afterwards.
    staged = atomic_write_bytes(store.root / "staging" / f"{uuid.uuid4().hex}.npz", blob)
    del blob
    try:
        try:
            arrays = load(staged)
        except ValueError as exc:
            return _quarantine(store, path, file_sha, str(exc).replace(str(staged), str(path)))
        # A hostile file must end in quarantine, not crash the pass and stay in landing: any other error from
        # the loader is a refusal too, logged with its traceback in case it is a bug.
        except Exception as exc:  # noqa: BLE001
            log.exception("loading %s failed unexpectedly", path)
            return _quarantine(store, path, file_sha, f"{path}: unreadable batch: {type(exc).__name__}: {exc}")
        sha = _content_key(arrays, file_sha)
        done = store.record(sha)
        if done is not None:
            reason = (f"{path}: duplicate: same content as batch '{done['batch']['name']}' processed at "
                      f"{done.get('measured_at')}")
            return _quarantine(store, path, sha, reason)
        folder = store.batches / sha
        if (folder / "batch.npz").exists():
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("name") == path.stem and meta.get("file_sha256") == file_sha:
                # This very file was claimed by a pass that stopped before removing it from landing.
                path.unlink(missing_ok=True)
                return None
            return _quarantine(store, path, sha, f"{path}: duplicate: same content as batch '{meta.get('name')}' "
                                                 "already claimed")
        ref = BatchRef(sha256=sha, name=path.stem, path=str(folder / "batch.npz"), arrived_at=_mtime(info.st_mtime),
                       file_sha256=file_sha)
        # Meta first, then the data, then the landed file goes: a crash in between claims the file again.
        write_json(folder / "meta.json", ref.to_dict())
        os.replace(staged, ref.path)
        path.unlink(missing_ok=True)
        return ref
    finally:
        staged.unlink(missing_ok=True)


def _content_key(arrays: Any, file_sha: str) -> str:
    """The content digest of a loader's (images, labels); the file's sha256 when the loader returns no arrays."""
    if isinstance(arrays, tuple) and len(arrays) == 2:
        from include.mlops.drift import content_digest

        return content_digest(*arrays)
    return file_sha


def _quarantine(store: DriftStore, path: Path, sha: str | None, reason: str) -> Quarantined | None:
    """Move a landed entry (itself, never a symlink's target) to a unique quarantine name beside its reason."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80] or "batch"
    suffix = re.sub(r"[^A-Za-z0-9.]+", "_", path.suffix)[:16]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = store.quarantine / f"{stem}-{stamp}-{uuid.uuid4().hex[:12]}{suffix}"
    info = {"file": path.name, "sha256": sha, "reason": reason, "quarantined_at": _now()}
    reason_path = target.with_name(target.name + ".reason.json")
    # The reason lands before the file moves, so a quarantined file never lacks its explanation.
    write_json(reason_path, info)
    try:
        os.rename(path, target)  # no replace: the name is new, and rename moves a symlink or FIFO itself
    except FileNotFoundError:
        reason_path.unlink(missing_ok=True)
        return None
    log.info("quarantined %s -> %s: %s", path.name, target, reason)
    return Quarantined(name=path.name, path=str(target), reason=reason)


def write_history(records: list[dict[str, Any]], directory: Path) -> dict[str, str]:
    """Drift share per batch over time: a PNG plot, a CSV and an HTML page linking each day's report."""
    import csv
    import io

    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "measured_at": r["measured_at"],
            "batch": r["batch"]["name"],
            "sha256": r["batch"]["sha256"],
            "drift_share": r["drift_share"],
            "threshold": r["threshold"],
            "drift_detected": r["drift_detected"],
            "drifted_columns": " ".join(r["drifted_columns"]),
            "model_version": r.get("model_version", ""),
            "signal": (r.get("signal") or {}).get("action", ""),
            "report": r.get("report", {}).get("html_path", ""),
        }
        for r in records
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["measured_at"])
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(directory / "history.csv", buffer.getvalue())
    png_path = directory / "history.png"
    atomic_write_bytes(png_path, _plot(rows))
    table = "\n".join(
        f"<tr><td>{r['measured_at']}</td><td>{r['batch']}</td><td>{r['drift_share']:.2f}</td>"
        f"<td>{'DRIFT' if r['drift_detected'] else 'ok'}</td><td>{r['drifted_columns']}</td><td>{r['signal']}</td>"
        f"<td><a href=\"{Path(r['report']).as_uri() if r['report'] else ''}\">report</a></td></tr>"
        for r in rows
    )
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift history</title></head><body>"
        "<h1>Drift history</h1><img src='history.png' alt='drift share per batch'>"
        "<table border='1' cellpadding='4'><tr><th>measured</th><th>batch</th><th>drift share</th><th>verdict</th>"
        f"<th>drifted features</th><th>retrain</th><th>Evidently</th></tr>{table}</table></body></html>\n"
    )
    html_path = atomic_write_text(directory / "history.html", html)
    return {"png": str(png_path), "csv": str(csv_path), "html": str(html_path)}


def _plot(rows: list[dict[str, Any]]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    try:
        x = [datetime.fromisoformat(r["measured_at"]) for r in rows]
        share = [r["drift_share"] for r in rows]
        colors = ["tab:red" if r["drift_detected"] else "tab:green" for r in rows]
        ax.plot(x, share, color="0.6", linewidth=1)
        ax.scatter(x, share, c=colors, zorder=3)
        for when, value, row in zip(x, share, rows, strict=True):
            ax.annotate(row["batch"], (when, value), textcoords="offset points", xytext=(4, 6), fontsize=7)
        if rows:
            ax.axhline(rows[-1]["threshold"], color="tab:red", linestyle="--", linewidth=1, label="drift threshold")
            ax.legend(loc="upper left")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of drifted features")
        ax.set_title("Production batches: drift share per day")
        fig.autofmt_xdate()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _mtime(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _now() -> str:
    return datetime.now(UTC).isoformat()
