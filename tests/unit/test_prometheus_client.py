"""The Prometheus HTTP API client (k8s.prometheus) against a small local stand-in that answers like Prometheus:
what it sends, how answers become Snapshots, and that every failure is a PrometheusError with the reason."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kultivar.domain import promql
from kultivar.k8s.prometheus import PrometheusError, query, snapshots

Answer = Callable[[str], tuple[int, Any]]


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, str]], list[Answer]]]:
    asked: list[dict[str, str]] = []
    answer: list[Answer] = [lambda q: (200, {"status": "success", "data": {"resultType": "vector", "result": []}})]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            asked.append({"path": url.path, **params})
            status, body = answer[0](params.get("query", ""))
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", asked, answer
    httpd.shutdown()
    httpd.server_close()


def vector(*samples: tuple[dict[str, str], float]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1700000000.0, str(value)]} for labels, value in samples]}}


def test_snapshots_ask_every_query_at_one_time_and_read_the_answers(server) -> None:
    url, asked, answer = server

    def respond(q: str) -> tuple[int, Any]:
        if "kultivar_inference_requests_total" in q:
            return 200, vector(({"version": "1", "outcome": "success"}, 40), ({"version": "2", "outcome": "error"}, 2),
                               ({"version": "2", "outcome": "success"}, 18))
        if "kultivar_inference_latency_seconds_bucket" in q:
            return 200, vector(({"version": "2", "le": "0.01"}, 15), ({"version": "2", "le": "+Inf"}, 20))
        return 200, vector()

    answer[0] = respond
    snaps = snapshots(url, "team-a", "iris", [2, 1], 30.5, at=1700000000.25)
    assert snaps[1].requests == {"success": 40.0} and snaps[2].total == 20
    assert snaps[2].latency == {0.01: 15.0, float("inf"): 20.0}
    expected = promql.queries("team-a", "iris", [1, 2], 30.5)
    assert sorted(a["query"] for a in asked) == sorted(expected.values())
    assert {a["path"] for a in asked} == {"/api/v1/query"} and {a["time"] for a in asked} == {"1700000000.250"}


def test_no_versions_or_no_window_asks_nothing(server) -> None:
    url, asked, _ = server
    assert snapshots(url, "ns", "iris", [], 60) == {}
    assert snapshots(url, "ns", "iris", [1], None)[1].total == 0
    assert asked == []


@pytest.mark.parametrize(("status", "body", "message"), [
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}, "parse error at char 3"),
    (503, b"<html>unavailable</html>", "HTTP 503"),
    (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix, not a vector"),
    (200, b"not json", "Expecting value"),
])
def test_failures_are_prometheus_errors(server, status, body, message) -> None:
    url, _, answer = server
    answer[0] = lambda q: (status, body)
    with pytest.raises(PrometheusError, match=message):
        query(url, "up", 0.0)


def test_unreachable_or_missing_server_is_a_prometheus_error() -> None:
    with pytest.raises(PrometheusError, match=r"http://127\.0\.0\.1:9"):
        query("http://127.0.0.1:9", "up", 0.0, timeout=2)
    with pytest.raises(PrometheusError, match="prometheusUrl"):
        snapshots(None, "ns", "iris", [1], 60)
