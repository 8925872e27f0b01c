"""Artifactory operators: upload, set properties, promote, publish build-info.

JFrog REST APIs pages: "Deploy Artifact", "Set Item Properties", "Copy Item", "Build Upload"
(https://jfrog.com/help/r/jfrog-rest-apis).
"""

from __future__ import annotations

import datetime as dt
import os
import posixpath
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from jfrog_provider import __version__
from jfrog_provider.exceptions import JFrogApiError
from jfrog_provider.links import ARTIFACTORY_URL_KEY, ArtifactoryLink, push_link_url

if TYPE_CHECKING:
    from airflow.sdk import Context

    from jfrog_provider.hooks.artifactory import ArtifactoryHook

RELEASE_STATUS = "released"


def _templated(value: Any) -> bool:
    """True for a value Jinja (or an XComArg) will fill in later: validate it in execute, not at parse time."""
    return (isinstance(value, str) and "{{" in value) or hasattr(value, "resolve")


def _require_str(name: str, value: Any) -> None:
    if not _templated(value) and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _require_repo(name: str, value: Any) -> None:
    _require_str(name, value)
    if isinstance(value, str) and "/" in value and not _templated(value):
        raise ValueError(f"{name} is a repository key and cannot contain '/': {value!r}")


def _check_properties(value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if _templated(value):
        return
    if not isinstance(value, Mapping) or (required and not value):
        raise ValueError(f"properties must be a non-empty mapping of key to value(s), got {value!r}")


def _full_path(row_path: str) -> str:
    return row_path.strip("/")


class _ArtifactoryOperator(BaseOperator):
    """Shared plumbing: the connection id and the lazily built hook."""

    operator_extra_links = (ArtifactoryLink(),)
    ui_color = "#40be46"

    def __init__(self, *, jfrog_conn_id: str = "jfrog_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jfrog_conn_id = jfrog_conn_id

    @cached_property
    def hook(self) -> ArtifactoryHook:
        """The Artifactory hook for `jfrog_conn_id`."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        return ArtifactoryHook(self.jfrog_conn_id)


class ArtifactoryUploadOperator(_ArtifactoryOperator):
    """Deploy a local file to Artifactory (checksum deploy first), with properties; XCom: where it landed.

    :param local_path: file to upload (templated).
    :param repo: target repository key (templated).
    :param target_path: path inside the repository, e.g. ``mnist/{{ run_id }}/model.pt`` (templated).
    :param properties: item properties set at deploy time (templated values).
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("local_path", "repo", "target_path", "properties", "jfrog_conn_id")

    def __init__(self, *, local_path: str, repo: str, target_path: str,
                 properties: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_str("local_path", local_path)
        _require_repo("repo", repo)
        _require_str("target_path", target_path)
        _check_properties(properties, required=False)
        self.local_path = local_path
        self.repo = repo
        self.target_path = target_path
        self.properties = properties

    def execute(self, context: Context) -> dict[str, Any]:
        if not os.path.isfile(self.local_path):
            raise AirflowFailException(f"local_path {self.local_path!r} is not a file; nothing to upload")
        _check_properties(self.properties, required=False)  # a template may have rendered to a non-mapping
        result = self.hook.deploy_artifact(self.local_path, self.repo, self.target_path, self.properties or None)
        push_link_url(context, ARTIFACTORY_URL_KEY, self.hook.ui_url(result.repo, result.path))
        self.log.info("Uploaded %s to %s/%s sha256 %s (checksum deploy: %s)", self.local_path, result.repo,
                      result.path, result.sha256, result.checksum_deployed)
        return {"repo": result.repo, "path": result.path, "sha256": result.sha256, "sha1": result.sha1,
                "md5": result.md5, "size": result.size, "uri": result.download_uri,
                "checksum_deployed": result.checksum_deployed}


class ArtifactorySetPropertiesOperator(_ArtifactoryOperator):
    """Set item properties (listed keys replaced, others untouched); XCom: what was set.

    :param repo: repository key (templated).
    :param path: item path inside the repository (templated).
    :param properties: key → value or list of values (templated values).
    :param recursive: on a folder, also set them on everything below it.
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("repo", "path", "properties", "jfrog_conn_id")

    def __init__(self, *, repo: str, path: str, properties: Mapping[str, Any], recursive: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_repo("repo", repo)
        _require_str("path", path)
        _check_properties(properties, required=True)
        self.repo = repo
        self.path = path
        self.properties = properties
        self.recursive = recursive

    def execute(self, context: Context) -> dict[str, Any]:
        _check_properties(self.properties, required=True)
        path = _full_path(self.path)
        self.hook.set_item_properties(self.repo, path, self.properties, recursive=self.recursive)
        push_link_url(context, ARTIFACTORY_URL_KEY, self.hook.ui_url(self.repo, path))
        self.log.info("Set properties %s on %s/%s (recursive: %s)", sorted(self.properties), self.repo, path,
                      self.recursive)
        return {"repo": self.repo, "path": path, "recursive": self.recursive,
                "properties": {str(k): _as_values(v) for k, v in self.properties.items()}}


def _as_values(value: Any) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return [str(value)]
    return [str(v) for v in value]


class ArtifactoryPromoteOperator(_ArtifactoryOperator):
    """Copy (or move) one file to a release repository and stamp it; safe to retry.

    A retry that finds the target already holding the same sha256 does not copy again, it only re-stamps.
    A target holding *different* bytes is never overwritten (AirflowFailException): releases are immutable.

    :param source_repo: repository the file is promoted from (templated).
    :param source_path: file path in source_repo (templated).
    :param target_repo: release repository (templated).
    :param target_path: path in target_repo; defaults to source_path (templated).
    :param copy: True copies (the source stays), False moves.
    :param properties: extra properties stamped on the target, over ``release.status=released``,
        ``release.promoted_at`` and ``release.promoted_from`` (templated values).
    :param companions: names of files beside source_path that travel with it, under the same immutability
        rule (e.g. a model's config and signature); the stamp goes on the file itself (templated).
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("source_repo", "source_path", "target_repo", "target_path", "properties",
                                      "companions", "jfrog_conn_id")

    def __init__(self, *, source_repo: str, source_path: str, target_repo: str, target_path: str | None = None,
                 copy: bool = True, properties: Mapping[str, Any] | None = None, companions: Sequence[str] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_repo("source_repo", source_repo)
        _require_str("source_path", source_path)
        _require_repo("target_repo", target_repo)
        if target_path is not None:
            _require_str("target_path", target_path)
        _check_properties(properties, required=False)
        names = (source_repo, source_path, target_repo, target_path or source_path)
        if not any(_templated(v) for v in names) and (
            (source_repo, source_path.strip("/")) == (target_repo, (target_path or source_path).strip("/"))
        ):
            raise ValueError(f"promoting {source_repo}/{source_path} onto itself")
        self.source_repo = source_repo
        self.source_path = source_path
        self.target_repo = target_repo
        self.target_path = target_path
        self.copy = copy
        self.properties = properties
        self.companions = companions

    def _sha256(self, repo: str, path: str) -> str | None:
        """sha256 of a file, None if there is no such item; a folder is bad input."""
        try:
            info = self.hook.get_file_info(repo, path)
        except JFrogApiError as exc:
            if exc.status == 404:
                return None
            raise
        sha = (info.get("checksums") or {}).get("sha256") if isinstance(info, dict) else None
        if not sha:
            raise AirflowFailException(f"{repo}/{path} is a folder or has no sha256; promote one file at a time")
        return str(sha)

    def execute(self, context: Context) -> dict[str, Any]:
        src_path = _full_path(self.source_path)
        dst_path = _full_path(self.target_path or self.source_path)
        companions = {}
        for name in self.companions or ():
            if not isinstance(name, str) or not name or "/" in name:
                raise AirflowFailException(f"companions are file names beside {src_path}, got {name!r}")
            companions[name] = self._promote(f"{src_path.rsplit('/', 1)[0]}/{name}",
                                             f"{dst_path.rsplit('/', 1)[0]}/{name}")[1]
        action, sha256 = self._promote(src_path, dst_path)
        stamp = {"release.status": RELEASE_STATUS,
                 "release.promoted_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                 "release.promoted_from": f"{self.source_repo}/{src_path}",
                 **{str(k): v for k, v in (self.properties or {}).items()}}
        self.hook.set_item_properties(self.target_repo, dst_path, stamp)
        push_link_url(context, ARTIFACTORY_URL_KEY, self.hook.ui_url(self.target_repo, dst_path))
        self.log.info("Promoted %s/%s to %s/%s (%s), sha256 %s", self.source_repo, src_path, self.target_repo,
                      dst_path, action, sha256)
        return {"repo": self.target_repo, "path": dst_path, "sha256": sha256, "source_repo": self.source_repo,
                "source_path": src_path, "action": action, "uri": self.hook.artifact_url(self.target_repo, dst_path),
                "companions": companions, "properties": {k: _as_values(v) for k, v in stamp.items()}}

    def _promote(self, src_path: str, dst_path: str) -> tuple[str, str]:
        """Copy or move one file unless the target already holds its bytes; (action, sha256)."""
        src_sha, dst_sha = self._sha256(self.source_repo, src_path), self._sha256(self.target_repo, dst_path)
        if dst_sha is not None and (src_sha is None or src_sha == dst_sha):
            if src_sha is None and self.copy:
                # the target is there but the source of a copy is gone: we cannot prove they match
                raise AirflowFailException(f"source {self.source_repo}/{src_path} not found; "
                                           f"{self.target_repo}/{dst_path} exists but is not verifiable")
            action = "already_promoted"
            if src_sha is not None and not self.copy:  # a move whose delete did not happen yet
                self.hook.move_item(self.source_repo, src_path, self.target_repo, dst_path)
                action = "moved"
        elif dst_sha is not None:
            raise AirflowFailException(
                f"refusing to overwrite {self.target_repo}/{dst_path} (sha256 {dst_sha}) with "
                f"{self.source_repo}/{src_path} (sha256 {src_sha}): released artifacts are immutable")
        elif src_sha is None:
            raise AirflowFailException(f"source {self.source_repo}/{src_path} not found; nothing to promote")
        else:
            op = self.hook.copy_item if self.copy else self.hook.move_item
            op(self.source_repo, src_path, self.target_repo, dst_path)
            action = "copied" if self.copy else "moved"
        return action, str(dst_sha or src_sha)


def build_timestamp(when: dt.datetime) -> str:
    """Build-info `started`: yyyy-MM-dd'T'HH:mm:ss.SSSZ, e.g. 2026-05-01T12:00:00.000+0000 ("Build Upload" sample)."""
    when = when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}" + when.strftime("%z")


def build_artifact(raw: Any, index: int) -> dict[str, Any]:
    """One module artifact {name, type, path, sha1, sha256, md5} from a dict like the upload operator's XCom."""
    if not isinstance(raw, Mapping):
        raise AirflowFailException(f"artifacts[{index}] must be a mapping, got {type(raw).__name__}")
    path = str(raw.get("path") or "").strip("/")
    missing = [k for k in ("sha1", "sha256", "md5") if not raw.get(k)]
    if not path or missing:
        # "Build Upload": Artifactory links a build and its artifacts only with correct sha1/md5
        raise AirflowFailException(f"artifacts[{index}] ({path or raw!r}) needs path, sha1, sha256 and md5; "
                                   f"missing {missing or ['path']}")
    name = str(raw.get("name") or posixpath.basename(path))
    art = {"name": name, "type": str(raw.get("type") or (posixpath.splitext(name)[1].lstrip(".") or "file")),
           "path": path, "sha1": str(raw["sha1"]), "sha256": str(raw["sha256"]), "md5": str(raw["md5"])}
    if raw.get("repo"):
        art["originalDeploymentRepo"] = str(raw["repo"])
    return art


class ArtifactoryPublishBuildInfoOperator(_ArtifactoryOperator):
    """Publish a build-info (one module listing the artifacts) and link the artifacts to it ("Build Upload").

    :param build_name: build name, e.g. ``mnist-training`` (templated).
    :param build_number: build number, e.g. ``{{ run_id }}`` (templated).
    :param artifacts: list of {name?, path, sha256, sha1, md5, repo?, type?}; the upload operator's XCom
        fits as is (templated / XComArg).
    :param module_id: module id; defaults to the build name (templated).
    :param module_type: module type (``generic``, ``python``, ...).
    :param properties: build-level properties, str → str (templated).
    :param module_properties: module properties, str → str (templated).
    :param vcs: list of {url, revision, branch?, message?} (templated).
    :param project: JFrog project key (templated).
    :param link_artifacts: stamp ``build.name``/``build.number``/``build.timestamp`` on every artifact that
        names its ``repo``, so Artifactory shows the build on the artifact.
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("build_name", "build_number", "artifacts", "module_id", "properties",
                                      "module_properties", "vcs", "project", "jfrog_conn_id")

    def __init__(self, *, build_name: str, build_number: str | int, artifacts: Any,
                 module_id: str | None = None, module_type: str = "generic",
                 properties: Mapping[str, str] | None = None, module_properties: Mapping[str, str] | None = None,
                 vcs: Sequence[Mapping[str, str]] | None = None, project: str | None = None,
                 link_artifacts: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_str("build_name", build_name)
        if isinstance(build_number, int) and not isinstance(build_number, bool):
            build_number = str(build_number)
        _require_str("build_number", build_number)
        if not _templated(artifacts) and (isinstance(artifacts, str | bytes | Mapping)
                                          or not isinstance(artifacts, Sequence)):
            raise ValueError(f"artifacts must be a list of artifact dicts (or a template / XComArg), got {artifacts!r}")
        if not _templated(artifacts):
            for i, a in enumerate(artifacts):
                if not isinstance(a, Mapping) and not _templated(a):
                    raise ValueError(f"artifacts[{i}] must be a mapping, got {a!r}")
        _check_properties(properties, required=False)
        _check_properties(module_properties, required=False)
        if vcs is not None and not _templated(vcs) and (not isinstance(vcs, Sequence) or isinstance(vcs, str)
                                                         or not all(isinstance(v, Mapping) for v in vcs)):
            raise ValueError(f"vcs must be a list of {{url, revision, branch, message}} mappings, got {vcs!r}")
        self.build_name = build_name
        self.build_number = build_number
        self.artifacts = artifacts
        self.module_id = module_id
        self.module_type = module_type
        self.properties = properties
        self.module_properties = module_properties
        self.vcs = vcs
        self.project = project
        self.link_artifacts = link_artifacts

    def build_info(self, started: dt.datetime, context: Context | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The build-info JSON (build-info-go `BuildInfo` fields) for the rendered arguments."""
        arts_in = self.artifacts
        if isinstance(arts_in, Mapping):  # a single upload XCom
            arts_in = [arts_in]
        if not isinstance(arts_in, Sequence) or isinstance(arts_in, str | bytes) or not arts_in:
            raise AirflowFailException(f"build {self.build_name}/{self.build_number}: artifacts must be a "
                                       f"non-empty list, got {arts_in!r}")
        artifacts = [build_artifact(a, i) for i, a in enumerate(arts_in)]
        props = {str(k): str(v) for k, v in (self.properties or {}).items()}
        ctx = context or {}
        for key in ("dag_id", "run_id"):
            ti = ctx.get("ti") if hasattr(ctx, "get") else None
            value = getattr(ti, key, None) if ti is not None else None
            if isinstance(value, str) and value:
                props.setdefault(f"buildInfo.env.AIRFLOW_CTX_{key.upper()}", value)
        info: dict[str, Any] = {
            "version": "1.0.1", "name": str(self.build_name), "number": str(self.build_number),
            "started": build_timestamp(started),
            "agent": {"name": "airflow-jfrog-provider", "version": __version__},
            "buildAgent": {"name": "Airflow", "version": _airflow_version()},
            "properties": props,
            "modules": [{"id": str(self.module_id or self.build_name), "type": self.module_type,
                         "properties": {str(k): str(v) for k, v in (self.module_properties or {}).items()},
                         "artifacts": artifacts}],
        }
        if self.vcs:
            info["vcs"] = [{k: str(v) for k, v in entry.items() if k in ("url", "revision", "branch", "message")}
                           for entry in self.vcs]
        return info

    def build_ui_url(self, started_ms: int) -> str:
        """The build's page in the Artifactory UI."""
        url = (f"{self.hook.config.platform_url}/ui/builds/{quote(str(self.build_name), safe='')}/"
               f"{quote(str(self.build_number), safe='')}/{started_ms}/published")
        return url + (f"?projectKey={quote(self.project, safe='')}" if self.project else "")

    def execute(self, context: Context) -> dict[str, Any]:
        started = dt.datetime.now(dt.UTC)
        info = self.build_info(started, context)
        checksum = self.hook.publish_build_info(info, project=self.project or None)
        linked = 0
        if self.link_artifacts:
            stamp = {"build.name": info["name"], "build.number": info["number"],
                     "build.timestamp": str(int(started.timestamp() * 1000))}
            for art in info["modules"][0]["artifacts"]:
                if art.get("originalDeploymentRepo"):
                    self.hook.set_item_properties(art["originalDeploymentRepo"], art["path"], stamp)
                    linked += 1
        url = self.build_ui_url(int(started.timestamp() * 1000))
        push_link_url(context, ARTIFACTORY_URL_KEY, url)
        self.log.info("Published build-info %s/%s with %d artifact(s), %d linked", info["name"], info["number"],
                      len(info["modules"][0]["artifacts"]), linked)
        return {"build_name": info["name"], "build_number": info["number"], "started": info["started"],
                "project": self.project, "artifacts": len(info["modules"][0]["artifacts"]), "linked": linked,
                "checksum": checksum, "url": url}


def _airflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apache-airflow")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
