"""Cost of typing at the end of a long document: 20 keystrokes at the end of a 50 MB file.

Times the plain-string functions (`apply_change` and `offset_at` on the whole text, as the server
calls them today) and `Document`'s own methods, which keep the text as lines.
Run: python benchmarks/edits.py [utf-8|utf-16|utf-32] [MB]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run as a script from a checkout, the package is beside this folder rather than installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lsp_server.documents import Document, apply_change, offset_at, units

KEYSTROKES = 20
LINE = "def helper(value):  # Grüße 😀\n    return value * 2\n\n"


def main() -> None:
    encoding = sys.argv[1] if len(sys.argv) > 1 else "utf-16"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    text = LINE * (size * 2**20 // len(LINE)) + "def main():\n    "
    last = text.count("\n")
    column = units(text[text.rfind("\n") + 1 :], encoding)
    print(f"{len(text) / 2**20:.0f} M characters, {last + 1} lines, {KEYSTROKES} keystrokes at the end, {encoding}")

    started = time.perf_counter()
    for i in range(KEYSTROKES):
        text = apply_change(text, "x", (last, column + i), (last, column + i), encoding)
        offset_at(text, last, column + i + 1, encoding)  # the completion request's cursor
    strings = time.perf_counter() - started
    print(f"  plain strings (apply_change + offset_at): {strings:.3f} s")

    doc = Document("file:///long.py", "python", 1, text)
    doc.offset_at(last, 0, encoding)  # split into lines once, as the first edit after didOpen does
    started = time.perf_counter()
    for i in range(KEYSTROKES):
        doc.apply_change("y", (last, column + KEYSTROKES + i), (last, column + KEYSTROKES + i), encoding)
        doc.offset_at(last, column + KEYSTROKES + i + 1, encoding)
    lines = time.perf_counter() - started
    print(f"  Document.apply_change + Document.offset_at: {lines * 1000:.3f} ms")
    assert doc.text == text + "y" * KEYSTROKES

    started = time.perf_counter()
    doc.snapshot()
    print(f"  one Document.snapshot(): {(time.perf_counter() - started) * 1000:.1f} ms")
    doc.apply_change("z", (last, 0), (last, 0), encoding)
    started = time.perf_counter()
    _ = doc.text
    print(f"  one Document.text after an edit (the join): {(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
