"""Validates a gateway's /openapi.json with a real validator (openapi-spec-validator),
then makes real calls and validates each request body and answer against the schemas
the document publishes for them; a body the node refuses (expected status 400) must be
refused by its schema too. Usage: check_openapi.py GATEWAY_URL CALLS_JSON
(CALLS_JSON: [[path, body, expected status], ...]). Exit 0 when all hold."""

import json
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def fetch(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def pointer(*parts):
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def errors_of(doc, ref, instance):
    # The whole document is the root, so `#/components/schemas/...` references resolve.
    validator = Draft202012Validator({**doc, "$ref": ref})
    return sorted(validator.iter_errors(instance), key=lambda e: e.path)


def check(doc, ref, instance, what):
    errors = errors_of(doc, ref, instance)
    if errors:
        raise SystemExit(f"{what} does not match its schema {ref}: {errors[0].message}\n{json.dumps(instance)}")


def main():
    base, calls = sys.argv[1], json.loads(sys.argv[2])
    status, doc = fetch(base + "/openapi.json")
    assert status == 200, status
    validate(doc)
    print(f"valid OpenAPI {doc['openapi']}: {len(doc['paths'])} paths, {len(doc['components']['schemas'])} schemas")
    for path, body, expected in calls:
        request = pointer("paths", path, "post", "requestBody", "content", "application/json", "schema")
        if expected == 400:
            if not errors_of(doc, request, body):
                raise SystemExit(f"the document allows a request body of {path} that the node refuses: {body}")
        else:
            check(doc, request, body, f"the request body of {path}")
        status, answer = fetch(base + path, body)
        if status != expected:
            raise SystemExit(f"{path}: status {status}, expected {expected}: {answer}")
        response = str(status) if str(status) in doc["paths"][path]["post"]["responses"] else "default"
        check(doc, pointer("paths", path, "post", "responses", response, "content", "application/json", "schema"),
              answer, f"the answer of {path} ({status})")
        print(f"{path}: {status}, request and answer match the schemas")


main()
