"""Fuzzing the HTTP API from its own OpenAPI description with schemathesis: no answer is a 5xx, and every
error is JSON. Bounded (a few examples per operation) so that it runs in `make test` and in CI.

The app runs in-process (ASGI); its data holds a user with a box, a file, a share and a link, so that
generated ids and names sometimes hit real things. Requests carry a valid token, so the fuzzing
reaches past authentication; the attack suite covers requests without one.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from server_min.api import create_app
from server_min.wiring import service_for_data

MAX_EXAMPLES = 25
STATE: dict[str, Any] = {}


def _seeded_app() -> Any:
    """The app on a fresh data folder (removed at exit) holding a box, a file, a share and a link."""
    folder = Path(tempfile.mkdtemp(prefix="box-fuzz-"))
    atexit.register(shutil.rmtree, folder, True)
    app = create_app(service_for_data(folder / "data"))
    service = app.state.service
    token = service.add_user("fuzzer")
    service.add_user("friend")
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {token}"}
        box = client.post("/v1/boxes", json={"name": "fuzzbox"}, headers=auth).json()["id"]
        data = b"fuzz file"
        digest = hashlib.sha256(data).hexdigest()
        client.put(f"/v1/blocks/{digest}", content=data, headers=auth | {"X-Box-Codec": "raw"})
        client.post(f"/v1/boxes/{box}/commits", headers=auth, json={"message": "seed", "changes": [
            {"path": "dir/file.txt", "op": "put", "kind": "file", "size": len(data), "blocks": [digest]}]})
        client.post(f"/v1/boxes/{box}/members", headers=auth, json={"user": "friend", "path": "dir"})
        link = client.post(f"/v1/boxes/{box}/links", headers=auth, json={"path": "dir"}).json()
    STATE.update(token=token, box=box, link=link["url_path"], app=app)
    return app


# Built at import: schemathesis' lazy fixture loader does not work with this pytest yet.
schema = schemathesis.openapi.from_asgi("/openapi.json", _seeded_app())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case: Any) -> None:
    if case.path.endswith("/wait"):  # a long poll: never let the fuzzer make it wait
        case.query = {**(case.query or {}), "timeout": 0}
    response = case.call(headers={"Authorization": f"Bearer {STATE['token']}"})
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
    if response.status_code >= 400:
        kind = response.headers.get("content-type") or [""]
        kind = kind[0] if isinstance(kind, list) else kind
        assert kind.startswith("application/json"), (case.method, case.formatted_path, response.headers)


@pytest.mark.parametrize("real_token", [True, False])
def test_link_pages_never_answer_5xx(real_token: bool) -> None:
    """The link pages are not in the OpenAPI (they are HTML): fuzz their paths and queries directly."""
    client = TestClient(STATE["app"])
    base = STATE["link"] if real_token else "/l/" + "A" * 43
    segment = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)

    @given(st.lists(segment, max_size=4), st.sampled_from(["", "?dl=1", "?dl=2", "?dl=x", "?dl=1&dl=0"]))
    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def probe(parts: list[str], query: str) -> None:
        path = base + "".join("/" + quote(p, safe="") for p in parts) + query
        response = client.get(path)
        assert response.status_code < 500, (path, response.text[:300])
        assert b"fuzz file" not in response.content or (real_token and "dl=1" in query), path
        if response.status_code >= 400:  # a path no route matches (say, with a line break) is the router's 404
            assert "text/html" in response.headers["content-type"] or response.status_code in (404, 422), path

    probe()
