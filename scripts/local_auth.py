"""Local-mode login: named users with generated passwords (owner-only file), and API tokens for the scripts.

    python scripts/local_auth.py ensure PASSWORDS_FILE USER...   create missing passwords; print new ones once
    python scripts/local_auth.py token URL PASSWORDS_FILE USER     print a JWT from Airflow's /auth/token
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.request
from pathlib import Path


def ensure(path: Path, users: list[str]) -> None:
    """Give every user a random password in a 0600 file; print only the ones created now."""
    known = json.loads(path.read_text()) if path.exists() else {}
    created = {user: secrets.token_urlsafe(18) for user in users if user not in known}
    if not created:
        return
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({**known, **created}, handle, indent=2)
    os.replace(path.with_suffix(".tmp"), path)
    for user, password in created.items():
        print(f"Airflow login created: user {user!r} password {password!r} (kept in {path}, owner-only; shown once)")


def token(url: str, path: Path, user: str) -> str:
    """An access token for `user`, as the UI's login form gets one (SimpleAuthManager's POST /auth/token)."""
    body = json.dumps({"username": user, "password": json.loads(path.read_text())[user]}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "ensure":
        ensure(Path(args[0]), args[1:])
    elif command == "token":
        print(token(args[0], Path(args[1]), args[2]))
    else:
        sys.exit(__doc__)
