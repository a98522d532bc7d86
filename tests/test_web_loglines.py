"""The dashboard's log lines: complete lines only, readable, each with the offset after it; a resent or
out-of-step chunk never shows a line twice or glues two halves of different lines."""

from __future__ import annotations

import json

from aiwg_service.web.loglines import Lines


def test_lines_across_chunks_carry_their_end_offsets() -> None:
    said = {"type": "assistant", "message": {"content": [{"type": "text", "text": "héllo"}]}}
    log = "plain one\n" + json.dumps(said) + "\nthree"
    raw = log.encode()
    lines = Lines(0)
    cut = 14  # inside the JSON line
    got = lines.feed(raw[:cut].decode(), cut) + lines.feed(raw[cut:].decode(), len(raw))
    assert got == [(10, "plain one"), (raw.index(b"\nthree") + 1, "héllo")]
    assert lines.flush(len(raw)) == [(len(raw), "three")]


def test_a_chunk_out_of_step_starts_afresh() -> None:
    lines = Lines(0)
    assert lines.feed("a\nhalf", 6) == [(2, "a")]
    # the stream resumed elsewhere (a gap): the half line is dropped, not glued to this one
    assert lines.feed("x\ny\n", 104) == [(102, "x"), (104, "y")]


def test_stream_json_noise_is_left_out() -> None:
    lines = Lines(0)
    text = json.dumps({"type": "system", "subtype": "hook"}) + "\n"
    assert lines.feed(text, len(text.encode())) == []
    assert lines.pos == len(text.encode())
