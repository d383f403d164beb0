"""A message said once stays said once when only its countdown changes (a minute later)."""

from lsp_server.server import gist_of


def test_a_countdown_does_not_make_another_message() -> None:
    first = "Cloud budget reached: $0.00 spent today; it resets at 2026-12-04 00:00 local time (in 3 h 8 min)."
    later = first.replace("3 h 8 min", "3 h 7 min")
    assert gist_of(first) == gist_of(later) != gist_of(first.replace("today", "this month"))
    assert gist_of("reset (in 5 min).") == gist_of("reset (in 4 min).")
