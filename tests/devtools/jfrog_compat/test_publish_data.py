"""The data-version publisher: the listed files first, SHA256SUMS last, under <repo>/<path>/<version>/."""

from __future__ import annotations

import hashlib

import pytest

from devtools.jfrog_compat.publish_data import main, publish_data_version


@pytest.fixture
def source(tmp_path):
    files = {"a.gz": b"alpha", "b.gz": b"beta"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    return tmp_path


def test_publishes_the_listed_files_then_the_checksums(jfrog_conn, jfrog_server, source, capsys):
    assert main(["--version", "v7", "--source", str(source)]) == 0
    puts = [p.rsplit("/", 1)[-1] for _, p, b in jfrog_server.requests_matching("PUT", r"/mnist/v7/") if b]
    assert puts == ["a.gz", "b.gz", "SHA256SUMS"]
    assert "published mnist-data-local/mnist/v7/SHA256SUMS" in capsys.readouterr().out


def test_refuses_a_version_that_is_not_one_folder_name(source):
    with pytest.raises(ValueError, match="one folder name"):
        publish_data_version(source, "../v7")
