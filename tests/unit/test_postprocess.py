"""Post-processing of raw completions into ghost text, one table per step."""

from __future__ import annotations

import pytest

from lsp_server.completion.postprocess import (
    cut_loop,
    cut_outer_closer,
    cut_stutter,
    drop_repeated_following,
    drop_suffix_overlap,
    ends_in_loop,
    first_line,
    is_block_start,
    postprocess,
    repeats_nearby,
    strip_trailing_whitespace,
    trim_to_block,
)


@pytest.mark.parametrize(
    ("line_prefix", "previous_line", "line_suffix", "expected"),
    [
        pytest.param("    ", "def f(x):", "", True, id="py-def-colon"),
        pytest.param("  ", "function f(a) {", "", True, id="js-brace"),
        pytest.param("  ", "const f = (a: number) =>", "", True, id="ts-arrow"),
        pytest.param("\t", "import (", "", True, id="go-import-paren"),
        pytest.param("  ", "const xs = [", "", True, id="js-bracket"),
        pytest.param("  ", "if x > 0 then", "", True, id="lua-then"),
        pytest.param("  ", "items.each do", "", True, id="ruby-do"),
        pytest.param("", "x = 1", "", True, id="empty-line-after-statement"),
        pytest.param("    ", "def f(x):", "  \r", True, id="whitespace-after-cursor"),
        pytest.param("    ", "    x = 1", "", False, id="indented-blank-after-statement"),
        pytest.param("    ret", "def f(x):", "", False, id="text-before-cursor"),
        pytest.param("    ", "def f(x):", "pass", False, id="text-after-cursor"),
        pytest.param("  ", "x = undo", "", False, id="do-inside-a-word"),
    ],
)
def test_is_block_start(line_prefix: str, previous_line: str, line_suffix: str, expected: bool) -> None:
    assert is_block_start(line_prefix, previous_line, line_suffix) is expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        pytest.param("x + 1\nreturn y", "x + 1", id="keeps-first-line"),
        pytest.param("\nreturn y", "", id="starts-with-newline"),
        pytest.param("x + 1", "x + 1", id="single-line-unchanged"),
    ],
)
def test_first_line(completion: str, expected: str) -> None:
    assert first_line(completion) == expected


@pytest.mark.parametrize(
    ("completion", "line_prefix", "expected"),
    [
        pytest.param(
            "return x\n\ndef g():\n    pass",
            "    ",
            "return x\n",
            id="py-dedent-to-parent-def",
        ),
        pytest.param(
            "for i in xs:\n        total += i\n    return total\nprint(1)",
            "    ",
            "for i in xs:\n        total += i\n    return total",
            id="py-sibling-statement-kept-dedent-cut",
        ),
        pytest.param(
            "\n    return x\n\ndef g():\n    pass",
            "def f(x):",
            "\n    return x\n",
            id="py-sibling-def-after-body",
        ),
        pytest.param(
            "if x:\n        a()\n    else:\n        b()\nz = 1",
            "    ",
            "if x:\n        a()\n    else:\n        b()",
            id="py-else-continues-block",
        ),
        pytest.param(
            "return a + b;\n}\n\nfunction g() {",
            "  ",
            "return a + b;\n}",
            id="js-closing-brace-at-parent-kept",
        ),
        pytest.param(
            "\n  return a;\n}\n\nfunction g() {\n}",
            "function f(a) {",
            "\n  return a;\n}",
            id="js-block-closed-at-base",
        ),
        pytest.param(
            "if (a) {\n    b();\n  } else {\n    c();\n  }\n  d();",
            "  ",
            "if (a) {\n    b();\n  } else {\n    c();\n  }",
            id="ts-else-then-close",
        ),
        pytest.param(
            "if err != nil {\n\t\treturn err\n\t}\n\treturn nil\n}",
            "\t",
            "if err != nil {\n\t\treturn err\n\t}",
            id="go-tabs-if-block",
        ),
        pytest.param(
            "switch x {\n\tcase 1:\n\t\ta()\n\tcase 2:\n\t\tb()\n\t}",
            "\t",
            "switch x {\n\tcase 1:\n\t\ta()\n\tcase 2:\n\t\tb()\n\t}",
            id="go-switch-cases-kept",
        ),
        pytest.param("urn x\n\ndef g():", "    ret", "urn x\n", id="py-mid-word"),
        pytest.param("\n\n", "", "\n\n", id="blank-only-unchanged"),
    ],
)
def test_trim_to_block(completion: str, line_prefix: str, expected: str) -> None:
    assert trim_to_block(completion, line_prefix) == expected


@pytest.mark.parametrize(
    ("completion", "following", "expected"),
    [
        pytest.param("return x;\n}", "}\n", "return x;", id="js-closing-brace-repeated"),
        pytest.param(
            "a = 1\nb = 2\nc = 3",
            "\nb = 2\nc = 3\nd = 4\n",
            "a = 1",
            id="py-lines-repeated-after-blank",
        ),
        pytest.param(
            "a = 1\nb = 2\nc = 3",
            "b = 2\nc = 4\n",
            "a = 1\nb = 2\nc = 3",
            id="diverges-after-one-line",
        ),
        pytest.param(
            "a = 1\nreturn tot",
            "return total\n",
            "a = 1",
            id="truncated-last-line",
        ),
        pytest.param(
            "x\ny\nz",
            "y = 2\n",
            "x\ny\nz",
            id="full-line-is-not-a-repeat-of-longer-line",
        ),
        pytest.param(
            "if (a) {\n    b();\n  }\n  return c;",
            "}\n",
            "if (a) {\n    b();\n  }\n  return c;",
            id="ts-inner-brace-differs-by-indent",
        ),
        pytest.param("\treturn nil\n}", "}\r\n", "\treturn nil", id="go-crlf-following"),
        pytest.param("a\nb", "", "a\nb", id="nothing-follows"),
    ],
)
def test_drop_repeated_following(completion: str, following: str, expected: str) -> None:
    assert drop_repeated_following(completion, following) == expected


@pytest.mark.parametrize(
    ("completion", "line_suffix", "expected"),
    [
        pytest.param("a, g(b))", ")", "a, g(b)", id="py-outer-paren-in-suffix"),
        pytest.param("'hi');", ");", "'hi'", id="js-call-closed-by-suffix"),
        pytest.param("1, 2]", "]", "1, 2", id="bracket-in-suffix"),
        pytest.param("a, g(b))", "", "a, g(b))", id="suffix-empty-keeps-closer"),
        pytest.param("x }", ")", "x }", id="other-closer-not-in-suffix"),
        pytest.param("\n  a,\n  b\n)", ")", "\n  a,\n  b\n", id="multiline-args"),
    ],
)
def test_cut_outer_closer(completion: str, line_suffix: str, expected: str) -> None:
    assert cut_outer_closer(completion, line_suffix) == expected


@pytest.mark.parametrize(
    ("completion", "line_suffix", "expected"),
    [
        pytest.param("foo(x))", ")", "foo(x)", id="py-extra-paren"),
        pytest.param("foo(x)", ")", "foo(x)", id="own-closer-kept"),
        pytest.param("foo();", ";", "foo()", id="js-semicolon"),
        pytest.param('hello"', '"', "hello", id="closing-quote"),
        pytest.param(" && y {", " {", " && y ", id="go-brace-repeated"),
        pytest.param("x = 1)", ")  # note", "x = 1", id="suffix-with-comment"),
        pytest.param(")", ")", "", id="only-the-suffix"),
        pytest.param("value", "", "value", id="no-suffix"),
    ],
)
def test_drop_suffix_overlap(completion: str, line_suffix: str, expected: str) -> None:
    assert drop_suffix_overlap(completion, line_suffix) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        pytest.param("a  \nb\t\n\n  \n", "a\nb", id="trailing-spaces-and-blank-lines"),
        pytest.param("a\r\nb\r\n", "a\nb", id="crlf"),
        pytest.param("  a", "  a", id="leading-space-kept"),
        pytest.param(" \n\t", "", id="whitespace-only"),
    ],
)
def test_strip_trailing_whitespace(completion: str, expected: str) -> None:
    assert strip_trailing_whitespace(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        pytest.param(
            "self.items.get(self.items.get_value(self.items.get_value(self.items.get_value(",
            "self.items.get(self.items.get_value",
            id="call-chain-loop-seen-on-gemma",
        ),
        pytest.param("total += 1\ntotal += 1\ntotal += 1\ntotal += 1\n", "total += 1\n", id="line-loop"),
        pytest.param("# " + "-" * 40, "# " + "-" * 40, id="a-rule-is-not-a-loop"),
        pytest.param("x = [0, 0, 0, 0, 0, 0, 0, 0]", "x = [0, 0, 0, 0, 0, 0, 0, 0]", id="zeros-are-not-a-loop"),
        pytest.param("a = 1\nb = 2\na = 1\n", "a = 1\nb = 2\na = 1\n", id="twice-is-not-a-loop"),
        pytest.param("return value", "return value", id="no-repetition"),
    ],
)
def test_cut_loop(completion: str, expected: str) -> None:
    assert cut_loop(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        pytest.param(
            "esponse, User, UserSession, UserSessionSession, UserSessionSess",
            "esponse,",
            id="import-list-stutter-seen-on-gemma",
        ),
        pytest.param("del, Model, ModelType, ModelTypeType, ModelTypeTypeType", "del,", id="stutter-family-goes"),
        pytest.param("Model, ModelType, ModelTypeType", "Model,", id="the-word-at-the-cursor-stays"),
        pytest.param("a, b, bb\nnext", "a,", id="later-lines-go-too"),
        pytest.param("Item, ItemList, ItemListResponse", "Item, ItemList, ItemListResponse", id="names-growing-apart"),
        pytest.param("Foo, Bar, Baz", "Foo, Bar, Baz", id="plain-list"),
        pytest.param("f(x, xx, xxx), y", "f(x, xx, xxx), y", id="inside-brackets"),
        pytest.param("x = 1\nUser, UserUser", "x = 1\nUser, UserUser", id="first-line-only"),
    ],
)
def test_cut_stutter(completion: str, expected: str) -> None:
    assert cut_stutter(completion) == expected


@pytest.mark.parametrize(
    ("completion", "line_prefix", "line_suffix", "following", "multiline", "expected"),
    [
        pytest.param("urn x", "    ret", "", "", False, "urn x", id="py-mid-word"),
        pytest.param("urn x\n\ndef g():\n    pass", "    ret", "", "", True, "urn x", id="py-mid-word-multi"),
        pytest.param(
            "return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
            "    ",
            "",
            "\ndef main():\n",
            True,
            "return a + b",
            id="py-body-then-next-def",
        ),
        pytest.param("x + 1\n    return y", "    y = ", "", "", False, "x + 1", id="py-single-line-mode"),
        pytest.param("foo(x))", "print(", ")", "", False, "foo(x)", id="py-repeated-paren"),
        pytest.param("foo(x)", "print(", ")", "", False, "foo(x)", id="py-balanced-call"),
        pytest.param(")", "print(x", ")", "", False, "", id="equals-suffix"),
        pytest.param("   \n\t\n", "    ", "", "", True, "", id="whitespace-only"),
        pytest.param("", "x = ", "", "", False, "", id="empty"),
        pytest.param(
            "del, Model, ModelType, ModelTypeType", "from x import BaseMo", "", "", False, "del,", id="py-stutter"
        ),
        pytest.param(
            "const total = items.reduce((a, b) => a + b, 0);\n  return total;\n}\n",
            "  ",
            "",
            "}\n",
            True,
            "const total = items.reduce((a, b) => a + b, 0);\n  return total;",
            id="js-brace-already-in-document",
        ),
        pytest.param("'done');  \n", "  console.log(", ");", "", False, "'done'", id="js-log-call"),
        pytest.param(
            "name: string;\n  age: number;\n}\n\nexport interface Other {",
            "  ",
            "",
            "",
            True,
            "name: string;\n  age: number;\n}",
            id="ts-interface-fields",
        ),
        pytest.param(
            "if err != nil {\n\t\treturn err\n\t}\n\treturn nil\n}",
            "\t",
            "",
            "\treturn nil\n}\n",
            True,
            "if err != nil {\n\t\treturn err\n\t}",
            id="go-error-check",
        ),
        pytest.param("fmt.Println(msg))", "\t", ")", "", False, "fmt.Println(msg)", id="go-extra-paren"),
        pytest.param(
            "\n\treturn a + b\n}\n\nfunc Sub(a, b int) int {",
            "func Add(a, b int) int {",
            "",
            "",
            True,
            "\n\treturn a + b\n}",
            id="go-func-body",
        ),
    ],
)
def test_postprocess(
    completion: str,
    line_prefix: str,
    line_suffix: str,
    following: str,
    multiline: bool,
    expected: str,
) -> None:
    result = postprocess(
        completion,
        line_prefix=line_prefix,
        line_suffix=line_suffix,
        following=following,
        multiline=multiline,
    )
    assert result == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("x(self.items.get_value(self.items.get_value(self.items.get_va", False, id="mid-third-unit"),
        pytest.param("x(self.items.get_value(self.items.get_value(self.items.get_value(", True, id="third-unit-done"),
        pytest.param("# " + "=" * 60, False, id="a-rule"),
        pytest.param("return sum(item.price for item in items)", False, id="ordinary-code"),
    ],
)
def test_ends_in_loop(text: str, expected: bool) -> None:
    assert ends_in_loop(text) is expected


@pytest.mark.parametrize(
    ("completion", "line_prefix", "preceding", "following", "expected"),
    [
        pytest.param("turn value", "    re", "    x = 1\n    return value", "", True, id="copies-line-above"),
        pytest.param("self.close()", "    ", "", "\n    self.close()\n", True, id="copies-next-line"),
        pytest.param("self.open()", "    ", "    a = 1", "    self.close()", False, id="new-line"),
        pytest.param("ss", "    pa", "    pass", "", False, id="short-lines-repeat-legitimately"),
        pytest.param("return value", "    ", "    return value\n    a = 1", "", False, id="only-the-adjacent-line"),
        pytest.param(
            "self._events = events",
            "        ",
            "    def __init__(self, events):",
            "\nclass Other:\n    def __init__(self, events):\n        self._events = events\n",
            False,
            id="boilerplate-a-few-lines-away",
        ),
    ],
)
def test_repeats_nearby(completion: str, line_prefix: str, preceding: str, following: str, expected: bool) -> None:
    assert repeats_nearby(completion, line_prefix, preceding, following) is expected
