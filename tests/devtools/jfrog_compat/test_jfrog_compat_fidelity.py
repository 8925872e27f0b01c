"""Where real Artifactory is less kind than a simple stand-in, the local server is too (plain requests, no hook)."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
import requests

from devtools.jfrog_compat.server import parse_matrix_params

REPO, RELEASE = "ml-models-local", "ml-models-release"


def art(server, path: str) -> str:
    return f"{server.url}/artifactory{path}"


def props_of(api, server, repo: str, path: str) -> dict:
    return api.get(art(server, f"/api/storage/{repo}/{path}?properties")).json()["properties"]


def aql(api, server, query: str) -> requests.Response:
    return api.post(art(server, "/api/search/aql"), data=query, headers={"Content-Type": "text/plain"})


# -- deploy matrix params: escaped, comma-separated multi-values -------------------------------------------


@pytest.mark.parametrize("matrix,expected", [
    (["k=a,b"], {"k": ["a", "b"]}),
    (["k=a%2Cb"], {"k": ["a", "b"]}),  # decoded first: an encoded comma still separates
    (["k=a%5C%2Cb"], {"k": ["a,b"]}),  # an escaped comma does not
    (["k=a", "k=b"], {"k": ["a", "b"]}),  # a repeated key adds a value (jfrog-client-go sends it so)
    (["k=p%5C%3Bq%5C%7Cr%5C%3Ds%5C%5Ct"], {"k": ["p;q|r=s\\t"]}),
])
def test_matrix_params_are_unescaped_multi_values(matrix, expected):
    assert parse_matrix_params(matrix) == expected


def test_a_comma_joined_string_is_stored_as_several_values(jfrog_server, api):
    digests = "a" * 64 + "%2C" + "b" * 64
    assert api.put(art(jfrog_server, f"/{REPO}/m/1/model.pt;dataset.sha256={digests}"), data=b"m").status_code == 201
    assert props_of(api, jfrog_server, REPO, "m/1/model.pt") == {"dataset.sha256": ["a" * 64, "b" * 64]}


def test_deploy_to_a_path_the_repository_excludes_is_refused(jfrog_server, api):
    api.put(art(jfrog_server, "/api/repositories/strict-local"),
            json={"rclass": "local", "packageType": "generic", "excludesPattern": "**/*.tmp"}).raise_for_status()
    assert api.put(art(jfrog_server, "/strict-local/a/b.tmp"), data=b"x").status_code == 403
    assert api.put(art(jfrog_server, "/strict-local/a/b.pt"), data=b"x").status_code == 201


# -- "Direct Cloud Storage Download": 302 to a signed URL on another host, no checksum headers ------------


@pytest.fixture
def redirecting_repo(jfrog_server, api) -> str:
    api.put(art(jfrog_server, "/api/repositories/cloud-local"),
            json={"rclass": "local", "packageType": "generic", "downloadRedirect": True}).raise_for_status()
    assert api.put(art(jfrog_server, "/cloud-local/m/model.pt"), data=b"weights").status_code == 201
    return "cloud-local"


def test_download_redirects_to_signed_storage_without_checksum_headers(jfrog_server, api, redirecting_repo):
    first = api.get(art(jfrog_server, f"/{redirecting_repo}/m/model.pt"), allow_redirects=False)
    assert first.status_code == 302 and "X-Checksum-Sha256" not in first.headers
    location = first.headers["Location"]
    assert urlsplit(location).hostname == "localhost" != urlsplit(jfrog_server.url).hostname
    final = requests.get(location)  # no credentials: the signature is the authorisation
    assert final.content == b"weights"
    assert not [h for h in final.headers if h.lower().startswith("x-checksum")]
    # the stored checksum is still what the storage API reports
    info = api.get(art(jfrog_server, f"/api/storage/{redirecting_repo}/m/model.pt")).json()
    assert info["checksums"]["sha256"] == hashlib.sha256(b"weights").hexdigest()


def test_signed_storage_refuses_a_forwarded_authorization_header_and_a_bad_signature(jfrog_server, api,
                                                                                    redirecting_repo):
    location = api.get(art(jfrog_server, f"/{redirecting_repo}/m/model.pt"), allow_redirects=False).headers["Location"]
    forwarded = requests.get(location, headers={"Authorization": f"Bearer {jfrog_server.token}"})
    assert forwarded.status_code == 400 and "Only one auth mechanism allowed" in forwarded.text
    tampered = requests.get(location.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert tampered.status_code == 403


def test_other_repositories_still_answer_with_checksum_headers(jfrog_server, api):
    api.put(art(jfrog_server, f"/{REPO}/m/model.pt"), data=b"weights").raise_for_status()
    direct = api.get(art(jfrog_server, f"/{REPO}/m/model.pt"), allow_redirects=False)
    assert direct.status_code == 200 and direct.headers["X-Checksum-Sha256"] == hashlib.sha256(b"weights").hexdigest()


# -- AQL: OSS refuses sort; properties vanish with sort/limit; virtual_repos --------------------------------


@pytest.fixture
def items(jfrog_server, api):
    for version in ("1", "2"):
        api.put(art(jfrog_server, f"/{REPO}/m/{version}/model.pt;model.version={version}"),
                data=version.encode()).raise_for_status()


def test_oss_edition_refuses_any_sort(jfrog_server, api, items):
    query = 'items.find({"name":"model.pt"}).include("path","created").sort({"$desc":["created"]})'
    assert aql(api, jfrog_server, query).status_code == 200
    jfrog_server.edition = "oss"
    refused = aql(api, jfrog_server, query)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["message"] == "Sorting is not supported by AQL in the open source version"
    assert len(aql(api, jfrog_server, 'items.find({"name":"model.pt"}).limit(1)').json()["results"]) == 1


@pytest.mark.parametrize("tail", ['.sort({"$asc":["name"]})', ".limit(5)", ".offset(1)"])
def test_properties_are_left_out_when_include_meets_sort_or_paging(jfrog_server, api, items, tail):
    base = 'items.find({"name":"model.pt"}).include("path","property")'
    assert all(r["properties"] for r in aql(api, jfrog_server, base).json()["results"])
    rows = aql(api, jfrog_server, base + tail).json()["results"]
    assert rows and all("properties" not in r for r in rows)


def test_including_one_property_key_drops_the_items_without_it(jfrog_server, api, items):
    api.put(art(jfrog_server, f"/{REPO}/m/3/model.pt"), data=b"3").raise_for_status()  # no properties
    keyed = aql(api, jfrog_server, 'items.find({"name":"model.pt"}).include("path","@model.version")').json()
    assert sorted(r["path"] for r in keyed["results"]) == ["m/1", "m/2"]
    every = aql(api, jfrog_server, 'items.find({"name":"model.pt"}).include("path")').json()
    assert sorted(r["path"] for r in every["results"]) == ["m/1", "m/2", "m/3"]


def test_virtual_repos_is_an_includable_field(jfrog_server, api, items):
    rows = aql(api, jfrog_server, 'items.find({"name":"model.pt"}).include("name","virtual_repos")').json()
    assert [r["virtual_repos"] for r in rows["results"]] == [[], []]
    assert aql(api, jfrog_server, 'items.find({}).include("no_such_field")').status_code == 400


# -- File List with listFolders -----------------------------------------------------------------------------


def test_file_list_shows_folders_only_with_list_folders(jfrog_server, api):
    for path in ("d/a.bin", "d/sub/b.bin", "d/sub/deeper/c.bin"):
        api.put(art(jfrog_server, f"/{REPO}/{path}"), data=path.encode()).raise_for_status()
    url = art(jfrog_server, f"/api/storage/{REPO}/d?list")

    def listing(extra: str) -> list[tuple[str, bool, str]]:
        return [(f["uri"], f["folder"], f["size"]) for f in api.get(url + extra).json()["files"]]

    assert listing("") == [("/a.bin", False, "7")]
    assert listing("&listFolders=1") == [("/a.bin", False, "7"), ("/sub", True, "-1")]
    assert listing("&deep=1&listFolders=1") == [
        ("/a.bin", False, "7"), ("/sub", True, "-1"), ("/sub/b.bin", False, "11"), ("/sub/deeper", True, "-1"),
        ("/sub/deeper/c.bin", False, "18")]


# -- copy / move: lower-case levels, an error inside a 200, failFast, suppressLayouts ------------------------


@pytest.fixture
def strict_target(jfrog_server, api) -> str:
    api.put(art(jfrog_server, "/api/repositories/strict-release"),
            json={"rclass": "local", "packageType": "generic", "excludesPattern": "**/*.tmp"}).raise_for_status()
    for path in ("f/a.tmp", "f/b.pt", "f/c.pt"):
        api.put(art(jfrog_server, f"/{REPO}/{path}"), data=path.encode()).raise_for_status()
    return "strict-release"


def test_a_refused_item_is_a_lower_case_error_in_a_200_and_fail_fast_stops(jfrog_server, api, strict_target):
    url = art(jfrog_server, f"/api/copy/{REPO}/f")
    stopped = api.post(url, params={"to": f"/{strict_target}/fast", "failFast": 1})
    assert stopped.status_code == 200
    assert [m["level"] for m in stopped.json()["messages"]] == ["error"]
    assert api.get(art(jfrog_server, f"/{strict_target}/fast/b.pt")).status_code == 404
    carried_on = api.post(url, params={"to": f"/{strict_target}/all", "failFast": 0, "suppressLayouts": 1})
    assert [m["level"] for m in carried_on.json()["messages"]] == ["error", "info", "info"]
    assert api.get(art(jfrog_server, f"/{strict_target}/all/b.pt")).content == b"f/b.pt"


def test_a_move_that_failed_part_way_keeps_what_it_did_not_move(jfrog_server, api, strict_target):
    moved = api.post(art(jfrog_server, f"/api/move/{REPO}/f"), params={"to": f"/{strict_target}/m"})
    assert [m["level"] for m in moved.json()["messages"]] == ["error", "info", "info"]
    assert api.get(art(jfrog_server, f"/{REPO}/f/a.tmp")).status_code == 200
    assert api.get(art(jfrog_server, f"/{REPO}/f/b.pt")).status_code == 404


def test_copy_flags_must_be_zero_or_one(jfrog_server, api, strict_target):
    bad = api.post(art(jfrog_server, f"/api/copy/{REPO}/f/b.pt"), params={"to": f"/{RELEASE}/b.pt",
                                                                         "suppressLayouts": "maybe"})
    assert bad.status_code == 400 and "suppressLayouts" in bad.json()["errors"][0]["message"]


# -- Build Promotion: INFO / WARN / ERROR --------------------------------------------------------------------


def _build(api, server, name: str, *artifacts: tuple[str, bytes]) -> None:
    arts = []
    for path, data in artifacts:
        sums = api.put(art(server, f"/{REPO}/{path}"), data=data).json()["checksums"]
        arts.append({"name": path.rsplit("/", 1)[-1], "path": path, **sums})
    api.put(art(server, "/api/build"), json={"name": name, "number": "1", "started": "2026-05-01T12:00:00.000+0000",
                                             "modules": [{"id": "m", "artifacts": arts}]}).raise_for_status()


def test_promotion_levels_are_info_warn_and_error(jfrog_server, api, strict_target):
    _build(api, jfrog_server, "empty")
    empty = api.post(art(jfrog_server, "/api/build/promote/empty/1"), json={"status": "s", "targetRepo": RELEASE})
    assert [m["level"] for m in empty.json()["messages"]] == ["WARN"]
    _build(api, jfrog_server, "mixed", ("p/a.tmp", b"tmp"), ("p/b.pt", b"pt"))
    mixed = api.post(art(jfrog_server, "/api/build/promote/mixed/1"),
                     json={"status": "s", "targetRepo": strict_target, "copy": True, "failFast": False})
    assert [m["level"] for m in mixed.json()["messages"]] == ["ERROR", "INFO"]
