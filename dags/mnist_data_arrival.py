"""
### MNIST data arrival: a new labelled data version in Artifactory schedules training

A data version is published as a folder `mnist-data-local/mnist/<version>/` holding the four MNIST IDX files
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
`t10k-labels-idx1-ubyte.gz`) and, uploaded last, their `SHA256SUMS`.

1. `wait_for_data_version` (deferrable `ArtifactoryArtifactSensor`) waits in the triggerer for a
   `SHA256SUMS` under `mnist/` that carries no `mnist.data.status`. It returns the oldest such version first,
   so versions are announced in the order they were published. Nothing new within the timeout is a skip,
   and the next run (the DAG runs continuously) starts waiting again.
2. `download_data_version` downloads the files, each checked against Artifactory's sha256 (a file still
   uploading is a failure that retries).
3. `validate_data_version` checks them against SHA256SUMS, the IDX format, record counts and labels. A
   version that fails, or is not one folder `mnist/<name>`, is stamped `mnist.data.status=rejected` with
   the reason in `mnist.data.rejected`, so it never blocks the versions after it.
4. `announce_data_version` emits the `mnist_training_data` Asset event, extra
   `{"data_version", "repo", "folder", "digests": {file: sha256}}`, which schedules `mnist_training`.
5. `mark_announced` stamps the folder (recursively) `mnist.data.status=announced`, so the version is never
   announced twice. Should the stamp fail after the event, the next run finds the event in the Asset's
   history and only stamps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, get_current_context, task
from jfrog_provider.operators.artifactory import ArtifactorySetPropertiesOperator
from jfrog_provider.sensors.artifactory import ArtifactoryArtifactSensor

from include.assets import MNIST_TRAINING_DATA

DATA_REPO = "mnist-data-local"
DATA_PATH = "mnist"
STATUS = "mnist.data.status"  # "announced" or "rejected": either way the sensor looks past the version
# how many of the Asset's newest events to search for a version announced before its stamp was set
HISTORY = 50


def _reject(path: str, reason: str) -> None:
    """Stamp a version (its folder, or a misplaced SHA256SUMS) rejected, then fail the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    ArtifactoryHook().set_item_properties(DATA_REPO, path, {STATUS: "rejected", "mnist.data.rejected": reason[:500]},
                                          recursive=True)
    raise AirflowFailException(f"{DATA_REPO}/{path}: {reason}")


@dag(
    dag_id="mnist_data_arrival",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    description="Wait for a new labelled MNIST data version in Artifactory, validate it, announce it to training",
    doc_md=__doc__,
    tags=["mnist", "data", "jfrog"],
    # Return values are summaries (the XCom tab shows them); each task logs its own one-line result instead.
    default_args={"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30),
                  "show_return_value_in_logs": False},
)
def mnist_data_arrival():
    arrived = ArtifactoryArtifactSensor(
        task_id="wait_for_data_version",
        repo=DATA_REPO,
        path=DATA_PATH,
        pattern="SHA256SUMS",
        skip_if_property=STATUS,
        poll_interval=60,
        timeout=6 * 3600,
        soft_fail=True,
        deferrable=True,
        doc_md="Waits in the triggerer for a `SHA256SUMS` under `mnist/` without `mnist.data.status`; returns the "
        "oldest new version's files. Nothing new within the timeout is a skip.",
    )

    @task(multiple_outputs=False)
    def download_data_version(items: list[dict]) -> dict:
        """Download the oldest new version's four IDX files and SHA256SUMS, each checked against its sha256."""
        import re

        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mnist.data import CHECKSUMS_FILE, MNIST_FILES
        from include.settings import PipelineSettings

        ctx, folder = get_current_context(), items[0]["path"].rsplit("/", 1)[0]
        parent, _, version = folder.rpartition("/")
        if parent != DATA_PATH or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", version):
            _reject(items[0]["path"], f"a data version is one folder {DATA_PATH}/<letters, digits, '.', '_', '-'>")
        directory = PipelineSettings.from_env().run_dir(ctx["dag"].dag_id, ctx["run_id"]) / "data" / version
        hook = ArtifactoryHook()
        for name in [CHECKSUMS_FILE, *(f for pair in MNIST_FILES.values() for f in pair)]:
            hook.download_artifact(DATA_REPO, f"{folder}/{name}", directory / name)
        return {"data_version": version, "repo": DATA_REPO, "folder": folder, "data_dir": str(directory)}

    @task(multiple_outputs=True)  # mark_announced reads its "folder"
    def validate_data_version(downloaded: dict) -> dict:
        """Validate the downloaded files (checksums, IDX format, counts, labels); a bad version fails here."""
        from pathlib import Path

        from include.mnist.data import DatasetError, validate_dataset

        try:
            report = validate_dataset(Path(downloaded["data_dir"]))
        except DatasetError as exc:  # bad data stays bad: no retry; the message names the file and field
            _reject(downloaded["folder"], str(exc).replace(downloaded["data_dir"], downloaded["folder"]))
        print(f"data version {downloaded['data_version']}: {report.counts} records, digests {report.digests}")
        return {**downloaded, "digests": report.digests}

    @task(inlets=[MNIST_TRAINING_DATA], outlets=[MNIST_TRAINING_DATA], multiple_outputs=False)
    def announce_data_version(validated: dict) -> dict:
        """Emit the data event that schedules training, unless this version was announced already."""
        from airflow.sdk.exceptions import AirflowSkipException

        ctx = get_current_context()
        extra = {k: validated[k] for k in ("data_version", "repo", "folder", "digests")}
        history = ctx["inlet_events"][MNIST_TRAINING_DATA].ascending(False).limit(HISTORY)
        if any(dict(event.extra or {}) == extra for event in history):
            raise AirflowSkipException(f"data version {extra['data_version']} was announced before; stamping only")
        ctx["outlet_events"][MNIST_TRAINING_DATA].extra = extra
        print(f"announced data version {extra['data_version']} ({extra['repo']}/{extra['folder']})")
        return extra

    validated = validate_data_version(download_data_version(arrived.output))
    announced = announce_data_version(validated)
    stamped = ArtifactorySetPropertiesOperator(
        task_id="mark_announced",
        repo=DATA_REPO,
        path=validated["folder"],
        properties={STATUS: "announced", "mnist.data.announced_by": "{{ dag.dag_id }}/{{ run_id }}"},
        recursive=True,
        trigger_rule="none_failed_min_one_success",  # also after a skipped (already announced) event
        doc_md="Stamp the version's folder `mnist.data.status=announced` (recursively), so it is never announced "
        "twice. Link: the folder in Artifactory.",
    )
    announced >> stamped


mnist_data_arrival()
