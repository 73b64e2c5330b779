"""The service's own OpenAPI schema (/docs.json): every endpoint documented with examples, and a fuzz run
of schemathesis against it that finds no 5xx (the server fixture also fails on any 5xx in its log)."""

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.e2e

ENDPOINTS = ("/predict", "/predict_batch", "/predict_json", "/health")
EXAMPLES = 20  # per endpoint and mode (valid, invalid): well under a minute in all


@pytest.fixture(scope="module")
def docs(server) -> dict:
    r = requests.get(f"{server}/docs.json", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_every_endpoint_is_documented_with_examples(docs):
    for route in ENDPOINTS:
        post = docs["paths"][route]["post"]
        assert post["description"].strip(), route
        answer = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["example"]["model"] and answer["example"]["version"], route
    for route in ("/predict", "/predict_batch", "/predict_json"):
        assert "Example:" in docs["paths"][route]["post"]["description"], route
    body = docs["paths"]["/predict_json"]["post"]["requestBody"]["content"]["application/json"]
    fields = body["schema"]["properties"]
    assert fields.keys() == {"input"}
    assert all("example" in f and f["description"] for f in fields.values())
    upload = docs["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["properties"]["file"]["format"] == "binary"


def test_the_documented_examples_work(server, docs):
    fields = docs["paths"]["/predict_json"]["post"]["requestBody"]["content"]["application/json"]
    example = fields["schema"]["properties"]["input"]["example"]
    r = requests.post(f"{server}/predict_json", json={"input": example}, timeout=60)
    assert r.status_code == 200, (example, r.text)


def test_fuzzed_requests_never_get_a_server_error(server):
    """Valid and invalid requests generated from the schema, a bounded number per endpoint and mode.

    Driven through hypothesis directly: schemathesis' pytest fixture mode does not run on pytest 9."""
    api = schemathesis.openapi.from_url(f"{server}/docs.json").include(
        path_regex="^/(predict|predict_batch|predict_json|health)$"
    )
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} == set(ENDPOINTS)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            def fuzz(case):
                case.call_and_validate(checks=[not_a_server_error], timeout=60)

            fuzz()
