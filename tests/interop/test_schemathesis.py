"""Contract fuzzing: schemathesis drives every operation of the app's OpenAPI schema against a live server.

No 5xx, every status is documented, every answer matches its documented content type, headers and schema.
The server serves the shipped models (the schema's examples name them) plus the tiny fixtures, so valid
requests reach real inference as well as the 404 path. Bounded: a few examples per operation.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.core.result import Ok

from service.app import create_app
from service.settings import Settings
from tests.fixtures.make_models import FIXTURE_MODELS
from tests.live import ROOT, LiveServer

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# Generated names are almost never real models: half the time, aim the case at one that is.
MODEL_NAMES = st.sampled_from([None, None, None, "tiny", "tiny-vae", "digits-plain", "digits-vae"])
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
RESULTS = list(SCHEMA.get_all_operations())
OPERATIONS = {r.ok().label: r.ok() for r in RESULTS if isinstance(r, Ok)}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    repository = tmp_path_factory.mktemp("models")
    for source in [*sorted((ROOT / "models").iterdir()), *sorted(FIXTURE_MODELS.iterdir())]:
        if source.is_dir():
            shutil.copytree(source, repository / source.name)
    with LiveServer(repository) as server:
        yield server


def test_schemathesis_sees_every_route() -> None:
    assert {
        "POST /encode",
        "POST /reconstruction-error",
        "GET /models",
        "POST /v2/models/{name}/infer",
    } <= set(OPERATIONS)
    documented = sum(len(ops) for ops in SCHEMA.raw_schema["paths"].values())
    assert len(OPERATIONS) == len(RESULTS) == documented, [r for r in RESULTS if not isinstance(r, Ok)]


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_schemathesis_contract(label: str, fuzz_server: LiveServer) -> None:
    operation = OPERATIONS[label]

    cases = st.one_of(operation.as_strategy(), *operation.get_strategies_from_examples())

    @given(case=cases, model=MODEL_NAMES, version=st.sampled_from([None, "1"]))
    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case[Any], model: str | None, version: str | None) -> None:
        if model is not None:
            if "name" in (case.path_parameters or {}):
                case.path_parameters = {**(case.path_parameters or {}), "name": model}
            if isinstance(case.body, dict) and "model" in case.body:
                case.body = {**case.body, "model": model}
            if isinstance(case.query, dict) and "model" in case.query:
                case.query = {**case.query, "model": model}
        if version is not None and "version" in (case.path_parameters or {}):
            case.path_parameters = {**(case.path_parameters or {}), "version": version}
        case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=10)

    run()
