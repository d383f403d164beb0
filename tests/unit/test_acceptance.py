"""The acceptance tracker alone: documents' changes as offsets, a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from lsp_server.acceptance import Acceptance, Change, replacement

URI = "file:///a.py"


class Session:
    """A document, the tracker fed with its edits, the outcomes recorded, and a clock."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.now = 1000.0
        self.rows: dict[str, dict[str, Any]] = {}
        self.tracker = Acceptance(self.record, clock=lambda: self.now)

    def record(self, request_id: str, values: dict[str, Any]) -> None:
        self.rows.setdefault(request_id, {}).update(values)

    def edit(self, start: int, end: int, new: str) -> None:
        self.text = self.text[:start] + new + self.text[end:]
        self.tracker.edited(URI, [(start, end, new)])

    def accept(self, request_id: str, length: int | None = None) -> int | None:
        return self.tracker.accepted(request_id, self.text, length)

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.tracker.check()


def shown(session: Session, text: str, at: int, request_id: str = "r1") -> None:
    session.tracker.shown(request_id, URI, at, text, {"language": "python"})


def test_accepted_then_part_edited_away_retains_exactly_what_is_left() -> None:
    s = Session("def f(x):\n    ")
    at = len(s.text)
    shown(s, "return x + 1", at)
    s.edit(at, at, "return x + 1")  # the editor inserts it, then runs the item's command
    assert s.accept("r1") == at + 12
    assert s.rows["r1"] == {"shown": 1, "language": "python", "accepted": 1, "accepted_chars": 12}
    s.edit(at + 9, at + 12, "2 * x")  # replaces "+ 1": 3 accepted characters gone, 5 typed
    s.edit(0, 0, "# lead\n")  # an edit before it moves it, and costs it nothing
    assert s.tracker.due() == pytest.approx(1030.0)
    s.wait(29.9)
    assert "retained_chars_30s" not in s.rows["r1"]
    s.wait(0.1)
    assert s.rows["r1"]["retained_chars_30s"] == 9
    s.edit(len("# lead\n") + at, len("# lead\n") + at + 6, "yield")  # "return" -> "yield": 6 gone
    s.wait(269.0)
    assert "retained_chars_5m" not in s.rows["r1"]
    s.wait(1.0)
    assert s.rows["r1"]["retained_chars_5m"] == 3
    assert s.rows["r1"].get("reversed") is None
    assert s.tracker.due() is None and not s.tracker.tracking(URI)


def test_text_typed_inside_accepted_text_is_not_accepted() -> None:
    s = Session("")
    shown(s, "abcdef", 0)
    s.edit(0, 0, "abcdef")
    s.accept("r1")
    s.edit(3, 3, "XYZ")  # abcXYZdef: the six accepted characters are all still there
    s.wait(30)
    assert s.rows["r1"]["retained_chars_30s"] == 6


def test_undo_right_after_accept_is_a_reversal() -> None:
    s = Session("x = ")
    shown(s, "compute()", 4)
    s.edit(4, 4, "compute()")
    s.accept("r1")
    s.edit(4, 13, "")
    assert s.rows["r1"]["reversed"] == 1
    s.wait(300)
    assert (s.rows["r1"]["retained_chars_30s"], s.rows["r1"]["retained_chars_5m"]) == (0, 0)


def test_deleting_the_text_later_is_not_a_reversal() -> None:
    s = Session("x = ")
    shown(s, "compute()", 4)
    s.edit(4, 4, "compute()")
    s.accept("r1")
    s.edit(13, 13, "\n")
    s.edit(4, 13, "")
    assert "reversed" not in s.rows["r1"]


def test_partial_accepts_count_what_was_taken() -> None:
    s = Session("")
    shown(s, "total = sum(xs)", 0)
    s.tracker.edited(URI, [(0, 0, "t")])  # typed, one key: not accepted
    s.tracker.edited(URI, [(0, 1, "")])
    assert s.rows["r1"] == {"shown": 1, "language": "python"}
    s.edit(0, 0, "total")  # the editor's accept-word: seen in the change, reported or not
    assert s.rows["r1"]["accepted_chars"] == 5
    assert s.accept("r1", 5) is None  # the client's report agrees; partly: no prefetch
    s.edit(5, 5, " = ")
    assert s.rows["r1"] == {"shown": 1, "language": "python", "accepted_chars": 8}
    s.wait(30)
    assert s.rows["r1"]["retained_chars_30s"] == 8
    s.edit(8, 8, "sum(xs)")  # the rest, then the item's command: accepted whole
    assert s.accept("r1") == 15
    assert s.rows["r1"]["accepted"] == 1 and s.rows["r1"]["accepted_chars"] == 15


def test_a_matching_insertion_after_an_edit_of_the_accepted_part_is_not_an_accept() -> None:
    s = Session("")
    shown(s, "total = sum(xs)", 0)
    s.edit(0, 0, "total")
    s.edit(0, 1, "")  # otal
    s.edit(4, 4, " =")
    assert s.rows["r1"]["accepted_chars"] == 5


def test_only_characters_found_where_it_was_shown_count() -> None:
    s = Session("")
    shown(s, "print(x)", 0)
    s.edit(0, 0, "print(y)")  # the editor put in something else
    s.accept("r1")
    assert s.rows["r1"]["accepted_chars"] == 6


def test_a_newer_suggestion_replaces_the_one_not_accepted() -> None:
    s = Session("a")
    shown(s, "bc", 1, "r1")
    s.edit(1, 1, "b")  # typed its first character: the rest is shown again under the same id
    shown(s, "c", 2, "r1")
    shown(s, "zz", 2, "r2")
    assert s.accept("r1") is None  # no longer tracked: nothing recorded for it but "shown"
    assert s.rows["r1"] == {"shown": 1, "language": "python"}
    s.edit(2, 2, "zz")
    assert s.accept("r2") == 4


def test_closing_the_document_records_every_check_still_due() -> None:
    s = Session("")
    shown(s, "pass", 0)
    s.edit(0, 0, "pass")
    s.accept("r1")
    s.wait(30)
    s.edit(0, 2, "")
    s.tracker.closed(URI)
    assert (s.rows["r1"]["retained_chars_30s"], s.rows["r1"]["retained_chars_5m"]) == (4, 2)
    assert s.tracker.due() is None


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        pytest.param("abc", "abc", (3, 3, ""), id="same"),
        pytest.param("abc", "abXc", (2, 2, "X"), id="insert"),
        pytest.param("abcd", "ad", (1, 3, ""), id="delete"),
        pytest.param("aaa", "aa", (2, 3, ""), id="repeated"),
        pytest.param("", "xy", (0, 0, "xy"), id="from-empty"),
    ],
)
def test_replacement_is_the_one_edit_between_two_texts(old: str, new: str, change: Change) -> None:
    assert replacement(old, new) == change
    start, end, inserted = change
    assert old[:start] + inserted + old[end:] == new
