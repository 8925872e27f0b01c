"""Batch bookkeeping for drift monitoring: landing, quarantine, claims, a processed manifest and the history.

Exactly once: a good batch is claimed by an atomic rename from the landing folder to `batches/<sha256>/`,
and counts as processed only when `processed/<sha256>.json` exists; that marker is written atomically after the
reports and the verdict are stored. A rerun finds claimed-but-unmarked batches and finishes them, and every
output is keyed by the sha256, so a retry overwrites rather than adds. A batch whose content was already
processed or claimed is quarantined as a duplicate, so nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.mlops.files import atomic_write_bytes, atomic_write_text, write_json


@dataclass(frozen=True)
class BatchRef:
    """A claimed batch, known by its content digest."""

    sha256: str
    name: str
    path: str
    arrived_at: str

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
        """Files waiting in the landing folder, oldest first; hidden files are producers' temporaries."""
        if not self.landing.is_dir():
            return []
        files = [p for p in self.landing.iterdir() if p.is_file() and not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

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


def ingest(store: DriftStore, validate: Callable[[Path], Any], sha256_of: Callable[[Path], str]) -> IngestResult:
    """Claim every valid landed batch, quarantine the rest with a reason; returns all pending batches."""
    claimed, quarantined = [], []
    for path in store.landed():
        if path.suffix != ".npz":
            quarantined.append(_quarantine(store, path, None, f"{path}: format: expected a .npz batch"))
            continue
        sha = sha256_of(path)
        done = store.record(sha)
        if done is not None:
            reason = f"{path}: duplicate: same content as batch '{done['batch']['name']}' processed at {done['measured_at']}"
            quarantined.append(_quarantine(store, path, sha, reason))
            continue
        if (store.batches / sha / "batch.npz").exists():
            quarantined.append(_quarantine(store, path, sha, f"{path}: duplicate: same content as a batch already claimed"))
            continue
        try:
            validate(path)
        except ValueError as exc:
            quarantined.append(_quarantine(store, path, sha, str(exc)))
            continue
        ref = BatchRef(sha256=sha, name=path.stem, path=str(store.batches / sha / "batch.npz"), arrived_at=_mtime(path))
        # Meta first, then the rename: a crash in between leaves the file in landing to be claimed again.
        write_json(store.batches / sha / "meta.json", ref.to_dict())
        os.replace(path, ref.path)
        claimed.append(ref)
    return IngestResult(claimed=claimed, quarantined=quarantined, pending=store.pending())


def _quarantine(store: DriftStore, path: Path, sha: str | None, reason: str) -> Quarantined:
    target = store.quarantine / (f"{path.stem}-{sha[:12]}{path.suffix}" if sha else path.name)
    info = {"file": path.name, "sha256": sha, "reason": reason, "quarantined_at": _now()}
    # The reason lands before the file moves, so a quarantined file never lacks its explanation.
    write_json(target.with_name(target.name + ".reason.json"), info)
    store.quarantine.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
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


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).isoformat()


def _now() -> str:
    return datetime.now(UTC).isoformat()
