"""Which data a training run uses: the version a data-arrival Asset event names, downloaded and checked, else the bundled copy.

The event's `extra` is {"data_version", "repo", "folder", "digests": {file: sha256}}: the files lie at
`<repo>/<folder>/<file>` with a SHA256SUMS beside them. Every file is downloaded into the run's directory,
each sha256 must equal the event's digest, and only then does the model package validate the directory.

Trust: the event's digests must equal a manifest pinned in include/security/data_manifests.json (reviewed like
code) before anything is downloaded, and the bundled copy's must too; whoever can publish a data version or
rewrite its SHA256SUMS cannot also pin it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.mlops.gates import GateFailure
from include.security.untrusted import MANIFESTS_FILE, load_data_manifests, pinned_manifest

BUNDLED = "bundled"
CHECKSUMS_FILE = "SHA256SUMS"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# One path segment of ordinary characters: an event cannot make a download land outside the run directory.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")

# (repo, path in the repo, local file) -> the sha256 of what was written (ArtifactoryHook.download_artifact).
Download = Callable[[str, str, Path], str]


class DataVersionError(GateFailure):
    """The event or the downloaded files are not a usable data version; the message names the field or file."""


@dataclass(frozen=True)
class DataVersion:
    """A published data version: where its files are and the sha256 each must have."""

    version: str
    repo: str
    folder: str
    digests: dict[str, str]

    @classmethod
    def from_event(cls, extra: Mapping[str, Any]) -> DataVersion:
        """Read and check a training-data Asset event's extra; DataVersionError names the bad field."""
        for key in ("data_version", "repo", "folder", "digests"):
            if not extra.get(key):
                raise DataVersionError(f"data event extra has no {key!r} (got keys {sorted(extra)})")
        version, repo, folder = str(extra["data_version"]), str(extra["repo"]), str(extra["folder"]).strip("/")
        if not _FILE_NAME.fullmatch(version):
            raise DataVersionError(f"data event field data_version {version!r} is not a plain name")
        if not _FILE_NAME.fullmatch(repo):
            raise DataVersionError(f"data event field repo {repo!r} is not a repository key")
        if not _FOLDER.fullmatch(folder) or ".." in folder.split("/"):
            raise DataVersionError(f"data event field folder {folder!r} is not a relative folder path")
        digests = extra["digests"]
        if not isinstance(digests, Mapping):
            raise DataVersionError(f"data event field digests must map file name to sha256, got {digests!r}")
        for name, digest in digests.items():
            if not _FILE_NAME.fullmatch(str(name)) or name == CHECKSUMS_FILE:
                raise DataVersionError(f"data event field digests names {name!r}, not a plain data file name")
            if not _SHA256.fullmatch(str(digest)):
                raise DataVersionError(f"data event field digests[{name!r}] is not a lower-case sha256: {digest!r}")
        return cls(version, repo, folder, {str(k): str(v) for k, v in sorted(digests.items())})

    def fetch(self, download: Download, directory: Path) -> Path:
        """Download the files and SHA256SUMS into `directory`; every data file must have the event's sha256."""
        directory = Path(directory)
        for name in [*self.digests, CHECKSUMS_FILE]:
            sha256 = download(self.repo, f"{self.folder}/{name}", directory / name)
            expected = self.digests.get(name)
            if expected is not None and sha256 != expected:
                (directory / name).unlink(missing_ok=True)
                raise DataVersionError(f"{self.repo}/{self.folder}/{name}: sha256 {sha256}, but the data event "
                                       f"for version {self.version} says {expected}")
        return directory


def prepare_dataset(
    event_extra: Mapping[str, Any] | None,
    *,
    bundled_dir: Path,
    directory: Path,
    download: Download,
    validate: Callable[[Path], Mapping[str, Any]],
    manifests: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The validated dataset of a run: the event's data version (downloaded) when there is one, else the bundled.

    Either must match a pinned manifest (`manifests`, default include/security/data_manifests.json).
    """
    pins = load_data_manifests() if manifests is None else manifests
    if not event_extra:  # no event, or one made by hand without facts (the UI's "create asset event")
        report = dict(validate(Path(bundled_dir)))
        if pinned_manifest(report["digests"], pins) is None:
            raise DataVersionError(f"bundled data {bundled_dir}: its digests {report['digests']} are in no pinned "
                                   f"data manifest ({MANIFESTS_FILE.name})")
        return {**report, "data_version": BUNDLED, "data_source": str(bundled_dir)}
    version = DataVersion.from_event(event_extra)
    if pinned_manifest(version.digests, pins) is None:
        raise DataVersionError(f"data version {version.version}: its digests are in no pinned data manifest "
                               f"({MANIFESTS_FILE.name}); {_nearest_difference(version, pins)}; a new version is "
                               "accepted once a reviewed change adds its manifest there")
    report = dict(validate(version.fetch(download, Path(directory) / version.version)))
    # The model's own check read SHA256SUMS; it must vouch for exactly the bytes the event named.
    differing = sorted(k for k in version.digests if report["digests"].get(k) != version.digests[k])
    if differing:
        raise DataVersionError(f"data version {version.version}: {differing} differ between the event and "
                               f"{CHECKSUMS_FILE} in {version.repo}/{version.folder}")
    return {**report, "data_version": version.version, "data_source": f"{version.repo}/{version.folder}"}


def _nearest_difference(version: DataVersion, pins: Mapping[str, Mapping[str, str]]) -> str:
    """Name the files of `version` that differ from the pinned manifest it is closest to."""
    if not pins:
        return "no manifest is pinned"
    name, files = max(pins.items(), key=lambda item: len(set(item[1].items()) & set(version.digests.items())))
    differing = [f"{version.repo}/{version.folder}/{file}: sha256 {digest}, pinned {files.get(file, 'nothing')}"
                 for file, digest in version.digests.items() if files.get(file) != digest]
    extra = sorted(set(files) - set(version.digests))
    return f"closest manifest {name!r}: " + "; ".join(differing + [f"{file} missing" for file in extra])
