"""The local kubelet's stand-in for cluster DNS: Service URLs in a server's environment become the proxy's."""

from __future__ import annotations

from kultivar.devcluster.serviceproxy import ServiceProxy


def test_service_urls_are_rewritten_and_nothing_else() -> None:
    proxy = ServiceProxy(api=None)  # type: ignore[arg-type]  # rewriting asks the API server nothing
    try:
        base = f"http://127.0.0.1:{proxy.port}"
        assert proxy.rewrite("http://iris-shadow.team-a.svc") == f"{base}/team-a/iris-shadow"
        assert proxy.rewrite("http://iris-shadow.team-a.svc.cluster.local:80/v2/models/iris/infer") == \
            f"{base}/team-a/iris-shadow/v2/models/iris/infer"
        for value in ("iris", "file:///store/v1/model.skops", "http://example.com/x", "https://iris.team-a.svc",
                      "http://iris.team-a.svc:8080"):
            assert proxy.rewrite(value) == value
    finally:
        proxy.close()
