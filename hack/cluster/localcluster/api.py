"""A minimal API client: urllib and the admin client certificate (standard library only)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class Api:
    def __init__(self, server: str, pki: Path) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        timeout: float = 5.0,
        content_type: str = "application/json",
    ) -> Any:
        """Send JSON, return the decoded JSON answer (of any shape, hence Any)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()

    def apply(self, path: str, body: dict[str, Any], manager: str = "localcluster") -> Any:
        """Server-side apply of one object at its path."""
        return self.request(
            "PATCH", f"{path}?fieldManager={manager}&force=true", body, content_type="application/apply-patch+yaml"
        )

    def ok(self, path: str) -> bool:
        try:
            self.request("GET", path, timeout=2.0)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def items(self, path: str) -> list[dict[str, Any]]:
        """Items of a list, or [] while the API server cannot answer."""
        try:
            found: list[dict[str, Any]] = self.request("GET", path)["items"]
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            return []
        return found
