"""Talking to the API server (stdlib only: the harness must not need the kubernetes client to boot)."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any


class ApiClient:
    """A minimal JSON client authenticated with the admin client certificate."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))

    def request(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout)
        try:
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return response.status, raw.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def readyz(self) -> tuple[bool, str]:
        try:
            status, body = self.get("/readyz")
        except (OSError, http.client.HTTPException) as exc:
            return False, str(exc)
        return status == 200, str(body)
