"""The HTTP benchmark: the service against a floor app, a naive FastAPI + torch baseline and in-process ORT.

`python -m bench [--quick]` builds a model repository in a temporary directory (a shipped digits model and a
synthetic 784-feature MLP), starts each server itself on loopback, drives it with wrk, and prints one table
(also written to `artifacts/bench/`).
"""

__all__: list[str] = []
