"""metricsSource prometheus: read the serving metrics from a Prometheus server's HTTP API (``/api/v1/query``).

What to ask and how to read the answers is pure (kultivar.domain.promql); this module only does the HTTP.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kultivar.domain import promql
from kultivar.domain.metrics import Snapshot

log = logging.getLogger(__name__)
QUERY_TIMEOUT = 10.0


class PrometheusError(Exception):
    """The server could not be reached or refused a query."""


def query(base_url: str, expression: str, at: float, timeout: float = QUERY_TIMEOUT) -> list[promql.Sample]:
    """An instant query evaluated at the Unix time ``at``; the result vector."""
    params = urllib.parse.urlencode({"query": expression, "time": f"{at:.3f}"})
    url = f"{base_url.rstrip('/')}/api/v1/query?{params}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: Any = json.loads(response.read())
    except urllib.error.HTTPError as e:  # 400/422/503 come with a JSON error body
        try:
            body = json.loads(e.read())
        except ValueError:
            raise PrometheusError(f"{base_url}: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError) as e:
        raise PrometheusError(f"{base_url}: {e}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise PrometheusError(f"{base_url}: query {expression!r} failed: {error}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"{base_url}: query {expression!r} returned {data.get('resultType')}, not a vector")
    return list(data.get("result") or [])


def snapshots(base_url: str | None, namespace: str, name: str, versions: Iterable[int],
              window_seconds: float | None, *, features: bool = False, feedback: bool = False,
              shadow: bool = False, at: float | None = None) -> dict[int, Snapshot]:
    """Per version, the counts of the window that ends at ``at`` (default now), as domain.metrics Snapshots."""
    if not base_url:  # the CRD requires it with metricsSource prometheus; never fall back to other numbers
        raise PrometheusError("no Prometheus to ask: set spec.strategy.canary.analysis.prometheusUrl")
    wanted = sorted(set(versions))
    at = time.time() if at is None else at
    expressions = promql.queries(namespace, name, wanted, window_seconds, features=features, feedback=feedback,
                                 shadow=shadow)
    if not wanted or not expressions:
        return {v: Snapshot() for v in wanted}
    with ThreadPoolExecutor(max_workers=len(expressions)) as pool:
        answers = dict(zip(expressions, pool.map(lambda e: query(base_url, e, at), expressions.values()),
                           strict=True))
    log.debug("prometheus %s: %s/%s versions %s over %ss", base_url, namespace, name, wanted, window_seconds)
    return promql.snapshots(answers, wanted)
