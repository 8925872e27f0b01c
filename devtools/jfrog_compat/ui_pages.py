"""Small HTML pages for the JFrog UI paths the provider's links store, so they open something on the local server.

JFrog's UI shows an artifact at /ui/repos/tree/General/<repo>/<path> and a graph scan under /ui/scans-list/
(the Artifactory and Xray UIs; the provider builds those URLs). This local server answers the same paths with a
page built from its own state: an item's checksums and properties with a download link, a folder's children, a
scan's components and findings. Same credentials as the REST API: a browser gets Basic-auth's login prompt
(any user, the access token as password). Dev only, like the rest of devtools/jfrog_compat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import quote

# Pages carry no script and load nothing: inline styles only.
CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
TREE_PREFIX = "/ui/repos/tree/General/"
SCAN_PREFIX = "/ui/scans-list/"

_STYLE = ("body{font:14px sans-serif;margin:1.5em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
          "code{font-size:13px}.note{color:#666}")


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}"
            "<p class='note'>JFrog-compatible LOCAL server (devtools/jfrog_compat), not JFrog.</p>"
            "</body></html>").encode()


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _tree_link(repo: str, path: str, label: str) -> str:
    return f"<a href='{TREE_PREFIX}{quote(repo, safe='')}/{quote(path)}'>{escape(label)}</a>"


def tree_page(store: Any, repo: str, path: str, artifactory_base: str) -> tuple[int, bytes]:
    """An artifact (checksums, properties, download) or a folder (its direct children) of one repository."""
    path = path.strip("/")
    if store.repo(repo) is None:
        return 404, _page("Not found", f"<p>No repository <code>{escape(repo)}</code>.</p>")
    item = store.item(repo, path) if path else None
    if item is not None:
        props = store.props(repo, path)
        download = f"{artifactory_base}/{quote(repo, safe='')}/{quote(path)}"
        parent = path.rpartition("/")[0]
        facts = [
            ("Repository", escape(repo)), ("Path", f"<code>{escape(path)}</code>"),
            ("Size", f"{item['size']:,} bytes"), ("SHA-256", f"<code>{escape(item['sha256'])}</code>"),
            ("SHA-1", f"<code>{escape(item['sha1'])}</code>"), ("MD5", f"<code>{escape(item['md5'])}</code>"),
            ("Created", f"{escape(item['created'])} by {escape(item['created_by'])}"),
            ("Modified", f"{escape(item['modified'])} by {escape(item['modified_by'])}"),
            ("Download", f"<a href='{escape(download)}'>{escape(download)}</a>"),
            ("Folder", _tree_link(repo, parent, f"{repo}/{parent}")),
        ]
        prop_rows = [(k, "<br>".join(escape(v) for v in values)) for k, values in sorted(props.items())]
        body = _rows(facts) + "<h2>Properties</h2>" + (_rows(prop_rows) if prop_rows else "<p>none</p>")
        return 200, _page(f"{repo}/{path}", body)
    if not store.is_folder(repo, path):
        return 404, _page("Not found", f"<p>Nothing at <code>{escape(repo)}/{escape(path)}</code>.</p>")
    prefix = f"{path}/" if path else ""
    children: dict[str, bool] = {}  # direct child name -> is a folder
    for row in store.items_under(repo, path):
        head, sep, _ = row["path"][len(prefix):].partition("/")
        children[head] = children.get(head, False) or bool(sep)
    items = "".join(f"<li>{_tree_link(repo, prefix + name, name + ('/' if folder else ''))}</li>"
                    for name, folder in sorted(children.items()))
    return 200, _page(f"{repo}/{path}" if path else repo, f"<ul>{items}</ul>")


def scan_page(result: dict[str, Any] | None, scan_id: str) -> tuple[int, bytes]:
    """A graph scan: its root component, context and the vulnerabilities it found (from the scan's 200 body)."""
    if result is None:
        return 404, _page("Not found", f"<p>No scan <code>{escape(scan_id)}</code>.</p>")
    findings = result.get("vulnerabilities", [])
    rows = "".join(
        f"<tr><td>{escape(v['issue_id'])}</td><td>{escape(v['severity'])}</td>"
        f"<td>{escape(', '.join(sorted(v['components'])))}</td>"
        f"<td>{escape(', '.join(c['cve'] for c in v['cves'] if c['cve']))}</td>"
        f"<td>{escape(v['summary'])}</td></tr>" for v in findings)
    table = ("<table><tr><th>Issue</th><th>Severity</th><th>Components</th><th>CVEs</th><th>Summary</th></tr>"
             f"{rows}</table>") if findings else "<p>No vulnerabilities found.</p>"
    facts = [("Scan id", f"<code>{escape(scan_id)}</code>"), ("Component", escape(result["component_id"])),
             ("Status", escape(result["status"])), ("Vulnerabilities", str(len(findings))),
             ("Violations", str(len(result.get("violations", []))) if "violations" in result else "no policy context")]
    return 200, _page(f"Xray scan {scan_id}", _rows(facts) + "<h2>Vulnerabilities</h2>" + table)


def render(store: Any, path: str, artifactory_base: str,
           scan_result: Callable[[str, dict[str, Any]], dict[str, Any]]) -> tuple[int, bytes]:
    """The page for a decoded /ui/ path; `scan_result(scan_id, data)` builds a finished scan's 200 body."""
    if path.startswith(TREE_PREFIX):
        repo, _, rest = path[len(TREE_PREFIX):].partition("/")
        return tree_page(store, repo, rest, artifactory_base)
    if path.startswith(SCAN_PREFIX):
        # /ui/scans-list/graph/<id> (and JFrog's other scan lists by their last segment)
        scan_id = path.rstrip("/").rpartition("/")[2]
        with store.lock:  # read without counting a poll
            row = store.db.execute("SELECT data FROM scans WHERE id=?", (scan_id,)).fetchone()
        return scan_page(scan_result(scan_id, json.loads(row["data"])) if row else None, scan_id)
    return 404, _page("Not found", f"<p>This local server has no UI page at <code>{escape(path)}</code>.</p>")
