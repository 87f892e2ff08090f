"""Responses match the schemas in api/ml.openapi.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from constants import AUTH

SPEC_FILE = Path(__file__).resolve().parents[2] / "api" / "ml.openapi.yaml"
SPEC_URI = "urn:trine:ml-openapi"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text())
    return loaded


def validate(spec: dict[str, Any], schema_name: str, instance: object) -> None:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}, registry=registry
    )
    validator.validate(instance)


def test_spec_covers_the_routes(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/healthz",
        "/rag/query",
        "/collections",
        "/collections/{name}",
        "/collections/{name}/documents",
        "/collections/{name}/documents/{id}",
    }
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    scheme = spec["components"]["securitySchemes"]["internalToken"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-Trine-Internal-Token"}


def test_responses_match_schemas(spec: dict[str, Any], client: TestClient) -> None:
    validate(spec, "Health", client.get("/healthz").json())
    request = {"query": "Who checks keys?", "documents": ["The gateway checks keys.", "Fruit."]}
    validate(spec, "RagQueryRequest", request)
    ok = client.post("/rag/query", headers=AUTH, json=request)
    assert ok.status_code == 200
    validate(spec, "RagQueryResponse", ok.json())
    for response in (
        client.post("/rag/query", json=request),
        client.post("/rag/query", headers=AUTH, json={"query": ""}),
        client.get("/missing"),
    ):
        assert response.status_code >= 400
        validate(spec, "ErrorEnvelope", response.json())


def test_schema_rejects_what_the_service_rejects(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate(spec, "RagQueryRequest", {"query": "q", "documents": []})
    with pytest.raises(ValidationError):
        validate(spec, "RagQueryRequest", {"query": "q", "documents": ["a"], "top_k": 51})


def test_collection_responses_match_schemas(spec: dict[str, Any], client: TestClient) -> None:
    ingest = {"documents": [{"id": "a", "text": "Keys are checked.", "metadata": {"k": "v"}}]}
    validate(spec, "IngestRequest", ingest)
    stored = client.post("/collections/kb/documents", headers=AUTH, json=ingest)
    validate(spec, "IngestResponse", stored.json())
    validate(spec, "CollectionList", client.get("/collections", headers=AUTH).json())
    validate(spec, "Collection", client.get("/collections/kb", headers=AUTH).json())
    request = {"query": "keys", "collection": "kb", "filter": {"k": {"in": ["v"]}}}
    validate(spec, "RagQueryRequest", request)
    answer = client.post("/rag/query", headers=AUTH, json=request)
    assert answer.status_code == 200
    validate(spec, "CollectionQueryResponse", answer.json())
    for response in (
        client.get("/collections/nope", headers=AUTH),
        client.get("/collections/Bad", headers=AUTH),
        client.delete("/collections/kb/documents/zzz", headers=AUTH),
    ):
        assert response.status_code in (400, 404)
        validate(spec, "ErrorEnvelope", response.json())
    with pytest.raises(ValidationError):
        validate(spec, "RagQueryRequest", {"query": "q", "collection": "Bad Name"})
    with pytest.raises(ValidationError):
        validate(spec, "RagQueryRequest", {"query": "q", "collection": "c", "mode": "fuzzy"})


def test_validate_only_is_declared(spec: dict[str, Any]) -> None:
    header = spec["components"]["parameters"]["ValidateOnly"]
    assert (header["name"], header["in"]) == ("X-Trine-Validate-Only", "header")
    for path in ("/rag/query", "/collections/{name}/documents"):
        operation = spec["paths"][path]["post"]
        refs = [p.get("$ref") for p in operation.get("parameters", [])]
        assert "#/components/parameters/ValidateOnly" in refs, path
        assert "204" in operation["responses"], path
