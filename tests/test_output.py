"""The --json documents: indented UTF-8 JSON that scripts parse, whatever the values inside."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from boxctl.output import emit_json


def test_a_document_reads_back_as_what_json_dumps_would_have_written(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"added": ["caf\u00e9/\U0001f600.txt", "a b"], "seq": 7, "ratio": 0.25, "none": None,
            "when": dt.datetime(2026, 12, 2, 15, 0, 0), "where": Path("/tmp/x"), 3: "an int key", "empty": []}
    emit_json(data)
    printed = capsys.readouterr().out
    assert printed.endswith("}\n") and printed.startswith("{\n  ")  # indented, one document per line end
    assert json.loads(printed) == json.loads(json.dumps(data, default=str))


def test_text_written_before_the_document_comes_first(capsys: pytest.CaptureFixture[str]) -> None:
    print("note", end=" ")
    emit_json({"ok": True})
    assert capsys.readouterr().out == 'note {\n  "ok": true\n}\n'
