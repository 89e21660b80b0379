"""AE_OPENTELEMETRY: FastAPI's native request spans reach a configured tracer provider only when it is on.

Run in a child process: a tracer provider is process-global and set once, and the rest of the suite must not
trace into it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import FIXTURE_MODELS

_CHILD = """
import json, sys
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.settings import Settings

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
spans = {}
for on in (False, True):
    exporter.clear()
    with TestClient(create_app(Settings(models_dir=sys.argv[1], opentelemetry=on))) as client:
        r = client.post("/encode", json={"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]})
        assert r.status_code == 200, r.text
    spans[str(on)] = [s.name for s in exporter.get_finished_spans()]
print(json.dumps(spans))
"""


def test_request_spans_only_when_opentelemetry_is_on() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(FIXTURE_MODELS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    spans = json.loads(done.stdout.strip().splitlines()[-1])
    assert spans["False"] == []
    assert any("/encode" in name for name in spans["True"]), spans["True"]
