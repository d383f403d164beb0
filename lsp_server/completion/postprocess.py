"""Turn a raw model completion into ghost text that fits at the cursor."""

from __future__ import annotations

import re

_CLOSER_OF = {"(": ")", "[": "]", "{": "}"}
_BLOCK_OPENER = re.compile(r"(?:[:{(\[]|=>|\bthen|\bdo)$")
_CLOSING_LINE = re.compile(r"(?:[)\]}]|end\b)[)\]};,.\s]*")
_CONTINUATION = re.compile(r"(?:[)\]}]|(?:else|elif|except|finally|catch|case|default)\b)")


def _indent(line: str) -> int:
    return len(line[: len(line) - len(line.lstrip())].expandtabs(4))


def _opens_block(line: str) -> bool:
    return _BLOCK_OPENER.search(line.rstrip()) is not None


def is_block_start(line_prefix: str, previous_line: str, line_suffix: str) -> bool:
    """True when multi-line ghost text fits: a blank line after a block opener, or an empty line."""
    if line_prefix.strip() or line_suffix.strip():
        return False
    return line_prefix == "" or _opens_block(previous_line)


def first_line(completion: str) -> str:
    """The completion up to its first line break."""
    return completion.split("\n", 1)[0]


def trim_to_block(completion: str, line_prefix: str) -> str:
    """The completion up to the end of the block it starts in, judged by indentation."""
    lines = completion.split("\n")
    landed = [line_prefix + lines[0], *lines[1:]]
    reference = next((line for line in landed if line.strip()), None)
    if reference is None:
        return completion
    base = _indent(reference)
    went_deeper = False
    for i in range(1, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        indent = _indent(line)
        closing = _CLOSING_LINE.fullmatch(line.strip()) is not None
        if indent < base or (indent == base and went_deeper and closing):
            # A closer at the parent level ends the block and belongs to it.
            return "\n".join(lines[: i + 1] if closing else lines[:i])
        if indent > base:
            went_deeper = True
        elif went_deeper and _opens_block(line) and not _CONTINUATION.match(line.strip()):
            # Back at the starting level after a body, opening another block: a sibling definition.
            return "\n".join(lines[:i])
    return completion


def drop_repeated_following(completion: str, following: str) -> str:
    """The completion cut where its later lines repeat the lines after the cursor line."""
    lines = completion.split("\n")
    next_lines = [line.rstrip() for line in following.split("\n", len(lines))[: len(lines)] if line.strip()]
    if not next_lines:
        return completion
    for i in range(1, len(lines)):
        if not lines[i].strip():
            continue
        rest = [line.rstrip() for line in lines[i:] if line.strip()]
        n = min(len(rest), len(next_lines))
        last, expected = rest[n - 1], next_lines[n - 1]
        # The completion's own last line may have been cut off by the token limit.
        last_repeats = last == expected or (n == len(rest) and expected.startswith(last))
        if rest[: n - 1] == next_lines[: n - 1] and last_repeats:
            return "\n".join(lines[:i])
    return completion


def _open_brackets(text: str) -> list[str]:
    stack: list[str] = []
    for char in text:
        if char in _CLOSER_OF:
            stack.append(char)
        elif stack and char == _CLOSER_OF[stack[-1]]:
            stack.pop()
    return stack


def cut_outer_closer(completion: str, line_suffix: str) -> str:
    """The completion cut before closing a bracket opened before the cursor that the line closes."""
    stack: list[str] = []
    for i, char in enumerate(completion):
        if char in _CLOSER_OF:
            stack.append(char)
        elif stack and char == _CLOSER_OF[stack[-1]]:
            stack.pop()
        elif not stack and char in ")]}" and char in line_suffix:
            return completion[:i]
    return completion


def drop_suffix_overlap(completion: str, line_suffix: str) -> str:
    """The completion without a tail that repeats the start of the text after the cursor."""
    text = completion.rstrip()
    after = line_suffix.strip()
    if not text or not after:
        return completion
    if text == after:
        return ""
    opened = _open_brackets(text)
    for size in range(min(len(after), len(text)), 0, -1):
        head = text[:-size]
        kept = _open_brackets(head)
        # A tail that closes a bracket the completion opened is not a repeat of the suffix.
        if text.endswith(after[:size]) and opened[: len(kept)] == kept:
            return head
    return completion


def strip_trailing_whitespace(completion: str) -> str:
    """Each line without trailing whitespace, and no trailing blank lines."""
    return "\n".join(line.rstrip() for line in completion.split("\n")).rstrip()


_LOOP = re.compile(r"(.{8,80}?)\1{2,}", re.DOTALL)


def cut_loop(completion: str) -> str:
    """End a completion where a small model starts repeating itself (the same span three times)."""
    for loop in _LOOP.finditer(completion):
        if len(set(loop.group(1).strip())) > 2:  # a rule of dashes or a row of zeros is not a loop
            return completion[: loop.start() + len(loop.group(1))]
    return completion


def _top_level_items(line: str) -> list[str]:
    """`line` split after each comma outside brackets, commas kept."""
    items: list[str] = []
    depth = start = 0
    for i, char in enumerate(line):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(line[start : i + 1])
            start = i + 1
    return [*items, line[start:]]


def cut_stutter(completion: str) -> str:
    """End a completion before a list whose items grow by repeating their own ending (`User, UserSession,
    UserSessionSession`): a small model listing names it cannot know (measured on `tandem eval` imports)."""
    items = _top_level_items(first_line(completion))
    names = [item.strip(" ,") for item in items]
    for i in range(1, len(names) - 1):
        grown, added = names[i + 1], names[i + 1][len(names[i]) :]
        if names[i] and grown.startswith(names[i]) and added and names[i].endswith(added):
            start = i
            while start > 1 and names[start - 1] and names[start].startswith(names[start - 1]):
                start -= 1  # the family of names the stutter grew from goes too, all but the word at the cursor
            return "".join(items[:start]).rstrip()
    return completion


def ends_in_loop(text: str) -> bool:
    """True when `text` ends with the same span three times: cheap enough to ask after every token."""
    for size in range(8, min(80, len(text) // 3) + 1):
        unit = text[-size:]
        if text.endswith(unit * 3) and len(set(unit.strip())) > 2:
            return True
    return False


def repeats_nearby(completion: str, line_prefix: str, preceding: str, following: str, lines: int = 1) -> bool:
    """True when the completed line is a copy of one of the `lines` non-blank lines above or below it.

    A small model that has nothing to say often copies the line above, or the next line, which the
    user then has twice. Short lines (`pass`, `else:`, closers) legitimately repeat and are kept; so
    do lines a few lines away (boilerplate classes repeat `self._x = x` three lines apart: measured).
    """
    landed = (line_prefix + first_line(completion)).strip()
    return len(landed) >= 8 and landed in _nearby(preceding, following, lines)


def may_repeat_nearby(completion: str, line_prefix: str, preceding: str, following: str) -> bool:
    """True when the line written so far is the start of the non-blank line above or below: once finished it may
    be a copy that `repeats_nearby` drops, so none of it should be shown yet."""
    landed = (line_prefix + first_line(completion)).strip()
    return any(line.startswith(landed) for line in _nearby(preceding, following, 1))


def _nearby(preceding: str, following: str, lines: int) -> list[str]:
    above = [line.strip() for line in preceding.split("\n") if line.strip()][-lines:]
    below = [line.strip() for line in following.split("\n", 2 * lines) if line.strip()][:lines]
    return above + below


def postprocess(completion: str, *, line_prefix: str, line_suffix: str, following: str, multiline: bool) -> str:
    """Clean a raw model completion for display as ghost text at the cursor."""
    completion = cut_stutter(cut_loop(completion))
    if multiline:
        text = drop_repeated_following(trim_to_block(completion, line_prefix), following)
    else:
        text = first_line(completion)
    text = drop_suffix_overlap(cut_outer_closer(text, line_suffix), line_suffix)
    text = strip_trailing_whitespace(text)
    if not text.strip() or text.strip() == line_suffix.strip():
        return ""
    return text
