"""Text printed to stderr or stdout outside logging (gunicorn's ``Error:`` lines, a traceback)
comes out as JSON log lines; the log lines themselves pass through unchanged."""

from __future__ import annotations

import io
import json
import logging
import sys
import traceback
from typing import Any

import pytest

from bridge.observability.logging import (
    StrayOutput,
    capture_stray_output,
    configure_logging,
)


def stray() -> tuple[StrayOutput, io.StringIO]:
    sink = io.StringIO()
    return StrayOutput(sink, "stderr", logging.WARNING), sink


def lines(sink: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_a_log_line_passes_through_unchanged() -> None:
    stream, sink = stray()
    line = '{"time": "t", "level": "INFO", "message": "hello"}\n'
    stream.write(line)
    stream.write(line[:10])  # in pieces, as some writers do
    stream.write(line[10:])
    assert sink.getvalue() == line * 2


def test_printed_text_becomes_one_line_per_line_at_the_streams_level() -> None:
    stream, sink = stray()
    print("\nError: '' is not a valid port number.", file=stream)
    print("!!!", file=stream)
    print("!!! WARNING: something to know", file=stream)
    print("!!!\n", file=stream)
    stream.write("writes in ")
    stream.write("pieces\n")
    entries = lines(sink)
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("ERROR", "stderr", "Error: '' is not a valid port number."),
        ("WARNING", "stderr", "!!! WARNING: something to know"),
        ("WARNING", "stderr", "writes in pieces"),
    ]


def test_a_printed_traceback_is_one_line_with_exc_info() -> None:
    stream, sink = stray()
    try:
        raise ValueError("the cause")
    except ValueError:
        traceback.print_exc(file=stream)
    print("after it", file=stream)
    first, after = lines(sink)
    assert first["level"] == "ERROR" and first["message"] == "ValueError: the cause"
    assert first["exc_info"].startswith("Traceback (most recent call last):\n")
    assert "raise ValueError" in first["exc_info"]
    assert after["message"] == "after it"


def test_flush_lets_out_a_line_without_its_newline() -> None:
    stream, sink = stray()
    stream.write("no newline yet")
    assert sink.getvalue() == ""
    stream.flush()
    assert [e["message"] for e in lines(sink)] == ["no newline yet"]


def test_printed_secrets_are_redacted() -> None:
    stream, sink = stray()
    print("connecting to redis://user:hunter2-secret@db:6379/0", file=stream)
    assert "hunter2-secret" not in sink.getvalue()


def test_it_stands_in_for_the_stream_otherwise() -> None:
    stream, _ = stray()
    assert stream.isatty() is False and stream.closed is False
    stream.writelines(["one\n", "two\n"])
    assert stream.getvalue().count("\n") == 2


@pytest.mark.parametrize("json_logs", [True, False])
def test_captured_only_with_json_logs(json_logs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", json=json_logs)
        capture_stray_output()
        assert isinstance(sys.stderr, StrayOutput) is json_logs
        assert isinstance(sys.stdout, StrayOutput) is json_logs
    finally:
        root.handlers[:] = kept[0]
        root.setLevel(kept[1])
