"""The inference server (``kultivar serve``): one registered model over the Open Inference Protocol V2.

Modules, from the wire inwards:

* :mod:`.server` - the Starlette app and its uvicorn process: V2 REST routes, the V1 ``:predict`` route, health,
  readiness and ``/metrics``; loads the model in the background so liveness answers while it loads.
* :mod:`.payload` - V2/V1 request parsing and validation into per-feature columns; precise 400 messages.
* :mod:`.batching` - the micro-batcher that turns concurrent single-row requests into one ``predict`` call.
* :mod:`.model` - loading (sha256-verified skops via :func:`kultivar.workloads.artifact.load_model`), the
  model's feature contract from its manifest, and batched prediction.
* :mod:`.monitoring` - Prometheus metrics, with per-feature input counts bucketed on the training profile.
* :mod:`.config` - settings from ``KULTIVAR_*`` environment variables.

Runs in the runtime image without operator code: nothing here imports kopf, kubernetes or the controllers.
"""
