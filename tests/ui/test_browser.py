"""The operator's view in a real browser: Debian's Chromium driven by Playwright against the local stack.

The stack is the one scripts/pipeline starts (scripts/local_env.sh: login with roles, JFrog stand-in, MLflow UI
behind basic auth, LocalExecutor, no job scheduling), in a temporary MLOPS_HOME on free ports. The test logs in
through the form, triggers a quick `mnist_training` run from the trigger form, follows every extra link to the
object it names, runs `mnist_drift` on one batch for the Evidently report link, and opens the Model releases
view and the JFrog connection form. Its screenshots go to docs/screenshots/ for the README.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.local_stack import REPO_ROOT, LocalStack

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# The quick trial run mnist_training's docs describe: about 0.94 test accuracy, above this min_accuracy.
QUICK_RUN = {"max_train_samples": "10000", "max_test_samples": "2000", "min_accuracy": "0.9"}
TRAINING_RUN = "manual__browser_quick_run"
VIEWPORT = {"width": 1280, "height": 800}


def chromium_path() -> str:
    """Debian's Chromium; installed with apt when missing and this user is root, else the test is skipped."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Chromium is not installed and this user cannot install it: run `apt-get install -y chromium` "
                    "as root (Debian's package; Playwright drives it through executable_path)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    result = subprocess.run(install, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"`apt-get install -y chromium` failed (exit {result.returncode}): {result.stderr[-500:]}")
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("browser-stack"))
    try:
        local.start()
        local.wait_for_dags(["mnist_training", "mnist_drift"])
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        # Chromium's sandbox refuses to run as root; as any other user it stays on.
        launched = playwright.chromium.launch(executable_path=executable,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, stack):
    """A page logged in as admin through Airflow's login form."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(stack.airflow_url)
    page.wait_for_url("**/auth/login**")  # anonymous visitors land on the login form
    page.locator("input[name=username]").fill("admin")
    page.locator("input[type=password]").fill(stack.password("admin"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    yield page
    context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state("load")  # not "networkidle": the MLflow UI and Airflow's grid keep polling
    page.wait_for_timeout(500)  # let the last rendered data settle
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


@pytest.fixture(scope="module")
def training_run(page, stack) -> str:
    """A quick mnist_training run triggered from the UI's trigger form with Params; its run id once it succeeded."""
    page.goto(f"{stack.airflow_url}/dags")
    page.get_by_text("mnist_training").first.wait_for()
    shot(page, "dag-list")
    page.goto(f"{stack.airflow_url}/dags/mnist_training")
    page.get_by_role("button", name="Trigger").click()
    form = page.get_by_role("dialog")
    for name, value in QUICK_RUN.items():
        form.locator(f"input[name=element_{name}]").fill(value)
    form.get_by_text("Advanced Options").click()
    form.locator("input[name=dagRunId]").fill(TRAINING_RUN)
    form.get_by_role("button", name="Trigger").click()
    page.wait_for_url(f"**/dags/mnist_training/runs/{TRAINING_RUN}")
    state = stack.wait_for_run("mnist_training", TRAINING_RUN, timeout=600)
    tasks = stack.api(f"dags/mnist_training/dagRuns/{TRAINING_RUN}/taskInstances")["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tasks}
    conf = stack.api(f"dags/mnist_training/dagRuns/{TRAINING_RUN}")["conf"]
    assert {k: str(conf[k]) for k in QUICK_RUN} == QUICK_RUN  # the form's Params reached the run
    page.goto(f"{stack.airflow_url}/dags/mnist_training/runs/{TRAINING_RUN}")
    page.get_by_text("set_champion").first.wait_for()
    shot(page, "training-run")
    return TRAINING_RUN


def extra_links(stack: LocalStack, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
    """The task instance's links as the UI asks for them (GET .../links answers 200 or raises)."""
    path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links?map_index={map_index}"
    return stack.api(path)["extra_links"]


def mlflow_api(stack: LocalStack, path: str) -> dict:
    """MLflow's REST API as its UI admin."""
    import base64
    import json
    import urllib.request

    auth = base64.b64encode(f"admin:{stack.mlflow_password}".encode()).decode()
    request = urllib.request.Request(f"{stack.mlflow_url}/api/2.0/mlflow/{path}", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def open_link(browser, url: str, credentials: dict, expected: list[str], screenshot: str | None = None) -> None:
    """Open `url` in a fresh context logged in with `credentials`: it answers 200 and shows every `expected` text."""
    context = browser.new_context(viewport=VIEWPORT, http_credentials=credentials)
    try:
        page = context.new_page()
        response = page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        for text in expected:
            page.get_by_text(text).first.wait_for(timeout=60_000)
        if screenshot:
            shot(page, screenshot)
    finally:
        context.close()


def test_each_extra_link_of_the_training_run_opens_its_object(browser, page, stack, training_run):
    jfrog = {"username": "admin", "password": stack.jfrog_token}
    mlflow = {"username": "admin", "password": stack.mlflow_password}
    links = {task: extra_links(stack, "mnist_training", training_run, task) for task in (
        "register_model", "publish_model", "generate_sbom", "scan_model", "promote_model", "release_model",
        "set_champion")}
    ui, tree = stack.jfrog_url + "/ui", stack.jfrog_url + "/ui/repos/tree/General"
    assert links["publish_model"] == {"Artifactory": f"{tree}/ml-models-local/mnist-cnn/1/model.safetensors"}
    assert links["generate_sbom"] == {"Artifactory": f"{tree}/ml-models-local/mnist-cnn/1/sbom.cdx.json"}
    assert links["promote_model"] == {"Artifactory": f"{tree}/ml-models-local/mnist-cnn/1/evidence"}
    assert links["release_model"] == {"Artifactory": f"{tree}/ml-models-release/mnist-cnn/1/model.safetensors"}
    [scan_url] = links["scan_model"].values()
    assert scan_url.startswith(f"{ui}/scans-list/graph/")
    run_id = mlflow_api(stack, "model-versions/get?name=mnist-cnn&version=1")["model_version"]["run_id"]
    experiment = mlflow_api(stack, f"runs/get?run_id={run_id}")["run"]["info"]["experiment_id"]
    version_url = f"{stack.mlflow_url}/#/models/mnist-cnn/versions/1"
    assert links["register_model"] == {"MLflow run": f"{stack.mlflow_url}/#/experiments/{experiment}/runs/{run_id}",
                                       "MLflow model version": version_url}
    assert links["set_champion"] == {"MLflow model version": version_url}

    # The UI shows them on the task instance's Details tab.
    page.goto(f"{stack.airflow_url}/dags/mnist_training/runs/{training_run}/tasks/register_model/details")
    for name, url in links["register_model"].items():
        assert page.get_by_role("link", name=name).get_attribute("href") == url
    shot(page, "extra-links")

    open_link(browser, links["publish_model"]["Artifactory"], jfrog,
              ["ml-models-local/mnist-cnn/1/model.safetensors", "model.version", "signature.sha256"], "jfrog-artifact")
    open_link(browser, links["generate_sbom"]["Artifactory"], jfrog, ["ml-models-local/mnist-cnn/1/sbom.cdx.json"])
    open_link(browser, links["promote_model"]["Artifactory"], jfrog, ["manifest.json"])
    open_link(browser, links["release_model"]["Artifactory"], jfrog,
              ["ml-models-release/mnist-cnn/1/model.safetensors"])
    open_link(browser, scan_url, jfrog, [f"Xray scan {scan_url.rsplit('/', 1)[-1]}", "No vulnerabilities found."],
              "xray-scan")
    open_link(browser, links["register_model"]["MLflow run"], mlflow, [run_id])
    open_link(browser, version_url, mlflow, ["Version 1"], "mlflow-model-version")


def test_model_releases_view_shows_the_champion(page, stack, training_run):
    page.goto(f"{stack.airflow_url}/plugin/model-releases")
    view = page.frame_locator("iframe")
    view.get_by_text("Model releases: mnist-cnn").wait_for()
    row = view.locator("tr", has_text="v1").first
    assert "champion" in row.inner_text()
    # the audit trail as rows: the champion move of v1, by the user who triggered the run, with its time
    moved = view.locator("#audit tr", has_text="champion.set")
    cells = [cell.strip() for cell in moved.locator("td").all_inner_texts()]
    assert cells[0] == "v1" and cells[1].endswith("UTC") and cells[2:5] == ["champion.set", "champion", "admin"]
    shot(page, "model-releases")


def test_jfrog_connection_form_shows_its_fields(page, stack):
    page.goto(f"{stack.airflow_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    form = page.get_by_role("dialog")
    form.get_by_role("combobox").first.fill("jfrog")
    page.get_by_role("option", name="JFrog Platform").click()
    form.get_by_text("Extra Fields", exact=True).click()
    for label in ("Platform URL", "User (optional, Basic auth)", "Access token", "Timeout (s)", "Verify TLS",
                  "Max retries", "Max total wait (s)", "Artifactory URL", "Xray URL"):
        form.get_by_text(label, exact=True).first.wait_for()
    shot(page, "jfrog-connection")


def test_a_drift_run_links_each_batch_to_its_evidently_report(browser, stack, training_run):
    landing = Path(stack.home) / "landing"
    subprocess.run([sys.executable, "-m", "include.mnist.batches", "--scenario", "clean", "--size", "1000",
                    "--seed", "7", "--out", str(landing), "--name", "day1_clean"],
                   env=stack.env, cwd=REPO_ROOT, check=True, capture_output=True)
    stack.api("dags/mnist_drift", "PATCH", {"is_paused": False})
    run_id = stack.api("dags/mnist_drift/dagRuns", "POST", {"dag_run_id": "manual__browser_drift",
                                                            "logical_date": None})["dag_run_id"]
    assert stack.wait_for_run("mnist_drift", run_id, timeout=600) == "success"
    [measured] = stack.api(f"dags/mnist_drift/dagRuns/{run_id}/taskInstances?task_id=measure_batch"
                           )["task_instances"]
    assert measured["rendered_map_index"] == "day1_clean"
    links = extra_links(stack, "mnist_drift", run_id, "measure_batch", measured["map_index"])
    report = links["Evidently drift report"]
    assert report.startswith(f"{stack.mlflow_url}/#/experiments/")
    assert report.endswith("/artifactPath/evidently/drift_report.html")
    open_link(browser, report, {"username": "admin", "password": stack.mlflow_password}, ["drift_report.html"],
              "evidently-report")
