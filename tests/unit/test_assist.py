"""Assist prompts, code extraction, and run_assist over loopback HTTP with a real ledger."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import Script, ScriptedServer

from lsp_server.assist import (
    LOCAL_MAX_TOKENS,
    AssistRequest,
    EchoGuard,
    build_local_messages,
    build_messages,
    extract_code,
    fit_replacement,
    run_assist,
)
from lsp_server.backends.openai_compat import OpenAICompatBackend
from lsp_server.budget import BudgetDecision
from lsp_server.config import Settings
from lsp_server.ledger import Ledger
from lsp_server.prices import Prices
from lsp_server.privacy import AuditLog
from lsp_server.router import Router

KEY = "sk-proj-Ab3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5oQ7s"
SOURCE = f'''\
import os
from pathlib import Path

API_KEY = "{KEY}"


class Store:
    """Keeps items on disk."""

    def __init__(self, root):
        self.root = root

    def save(self, item):
        if item:
            path = os.path.join(self.root, item)
            open(path, "w").write(item)
        return None
'''
DEEP = (
    "class Outer:\n    x = 1\n\n    def method(self):\n"
    + "        self.total += 1  # filler\n" * 30
    + "        return self.total\n"
)
SELECTION = '            path = os.path.join(self.root, item)\n            open(path, "w").write(item)\n'


def request(task: str = "explain", text: str = SOURCE, selection: str = SELECTION, **kw: object) -> AssistRequest:
    start = text.index(selection)
    return AssistRequest(task, "store.py", "python", text, start, start + len(selection), **kw)  # type: ignore[arg-type]


def user_message(req: AssistRequest, budget: int = 12000) -> str:
    system, user = build_messages(req, budget)
    assert system["role"] == "system" and user["role"] == "user"
    return user["content"]


@pytest.mark.parametrize(
    ("req", "budget", "expected"),
    [
        pytest.param(request(), 12000, "File: store.py (language: python)", id="file-and-language"),
        pytest.param(
            request(),
            12000,
            "Code before the selection:\n```python\nimport os\n",
            id="whole-file-fits",
        ),
        pytest.param(
            request(),
            400,
            "Imports:\n```python\nimport os\nfrom pathlib import Path\n```",
            id="imports-outside-the-window",
        ),
        pytest.param(
            request(text=DEEP, selection="        return self.total\n"),
            400,
            "Enclosing definitions:\n```python\nclass Outer:\n    def method(self):\n```",
            id="enclosing-signatures-outside-the-window",
        ),
        pytest.param(
            request(),
            12000,
            f"Selected code (lines 15-16):\n```python\n{SELECTION}```",
            id="selection-lines",
        ),
        pytest.param(
            request(),
            12000,
            "Code after the selection:\n```python\n        return None\n```",
            id="after",
        ),
        pytest.param(
            request("debug", diagnostics=("line 16: warning: file is never closed",)),
            12000,
            "Diagnostics:\n- line 16: warning: file is never closed",
            id="diagnostics",
        ),
        pytest.param(
            request("debug", error_text="Traceback (most recent call last):\nPermissionError: denied"),
            12000,
            "Error output:\n```\nTraceback (most recent call last):\nPermissionError: denied\n```",
            id="error-text",
        ),
        pytest.param(
            request(instruction="why not pathlib?"),
            12000,
            "Question: why not pathlib?",
            id="question",
        ),
        pytest.param(
            request("refactor", instruction="use pathlib"),
            12000,
            "Instruction: use pathlib\nReply with only the replacement for the selected code in one ```python block.",
            id="refactor-demands-one-block",
        ),
        pytest.param(
            request(text="x = 1\ns = '''\n```\n'''\n", selection="s = '''\n```\n'''\n"),
            12000,
            "````python\ns = '''\n```\n'''\n````",
            id="fence-longer-than-code-backticks",
        ),
    ],
)
def test_build_messages(req: AssistRequest, budget: int, expected: str) -> None:
    assert expected in user_message(req, budget)


def test_small_budget_keeps_the_window_near_the_selection() -> None:
    content = user_message(request(), budget=400)
    assert SELECTION in content
    assert "API_KEY" not in content  # too far above for 400 characters
    assert "Imports:" in content and "class Store:" in content


def test_huge_selection_is_truncated_with_a_note() -> None:
    big = "x = 1  # filler\n" * 131072  # 2 MiB
    content = user_message(request(text=big, selection=big))
    assert len(content) < 12000 + 1000
    assert f"(The selection is {len(big):,} characters long; only its first 7,200 are shown.)" in content


def test_long_error_output_keeps_its_end() -> None:
    trace = "frame\n" * 5000 + "ValueError: the real cause"
    content = user_message(request("debug", error_text=trace), budget=4000)
    assert "ValueError: the real cause" in content
    assert len(content) < 4000 + 1000


def test_system_prompt_per_task() -> None:
    systems = {task: build_messages(request(task))[0]["content"] for task in ("explain", "debug", "refactor")}
    assert "explaining" in systems["explain"]
    assert "debugging" in systems["debug"]
    assert "exactly one fenced code block" in systems["refactor"]


@pytest.mark.parametrize(
    ("reply", "language", "expected"),
    [
        pytest.param("Here:\n```python\nx = 1\n```\nDone.", "python", "x = 1", id="fenced-with-language"),
        pytest.param("```\nx = 1\ny = 2\n```", "python", "x = 1\ny = 2", id="fenced-without-language"),
        pytest.param("~~~py\nx = 1\n~~~", "python", "x = 1", id="tilde-fence-alias"),
        pytest.param("```python\nx = 1\nprint(x)", "python", "x = 1\nprint(x)", id="unterminated"),
        pytest.param(
            "```python\na = 1\n```\ntext\n```python\nb = 1\nc = 2\n```",
            "python",
            "b = 1\nc = 2",
            id="largest-block",
        ),
        pytest.param(
            "```bash\npip install a-long-package-name another-one\n```\n```py\nx = 1\n```",
            "python",
            "x = 1",
            id="block-in-the-selection-language",
        ),
        pytest.param(
            "````markdown\n```python\nx\n```\n````",
            "markdown",
            "```python\nx\n```",
            id="nested-fence",
        ),
        pytest.param("  ```js\n  let a = 1;\n  ```", "javascript", "  let a = 1;", id="indented-fence"),
        pytest.param("```python\n```", "python", "", id="empty-block"),
        pytest.param("x = 1 is all you need", "python", None, id="no-fence"),
        pytest.param("Use `x = 1` inline.", "python", None, id="inline-code-only"),
    ],
)
def test_extract_code(reply: str, language: str, expected: str | None) -> None:
    assert extract_code(reply, language) == expected


@pytest.mark.parametrize(
    ("code", "text", "selection", "expected"),
    [
        pytest.param(
            "if x:\n    y()",
            "def f():\n    if x:\n        y()\n",
            "    if x:\n        y()\n",
            "    if x:\n        y()\n",
            id="reindented-and-newline-kept",
        ),
        pytest.param(
            "    z()",
            "def f():\n    z()\n",
            "    z()\n",
            "    z()\n",
            id="already-indented",
        ),
        pytest.param("b + 1", "a = b+1\n", "b+1", "b + 1", id="mid-line-selection"),
        pytest.param("\tx()", "\tif a:\n\t\tx()", "\t\tx()", "\t\tx()", id="tabs"),
    ],
)
def test_fit_replacement(code: str, text: str, selection: str, expected: str) -> None:
    start = text.index(selection)
    assert fit_replacement(code, text, start, start + len(selection)) == expected


PROMPT = [
    "You explain code in plain English.",
    "```python",
    "def total_price(items):",
    "    return sum(i.price for i in items)",
    "```",
    "Explain what this code does.",
]


@pytest.mark.parametrize(
    ("reply", "shown", "stopped"),
    [
        pytest.param(
            " sums the prices.\nIt returns a number.\n",
            "This code sums the prices.\nIt returns a number.\n",
            False,
            id="an-answer-passes",
        ),
        pytest.param(
            " sums the prices.\n```python\ndef total_price(items):\n    return sum(",
            "This code sums the prices.\n",
            True,
            id="code-echo-ends-it-with-the-fence-before-it",
        ),
        pytest.param(
            " sums.\nExplain what this code does. mendatanguser\n",
            "This code sums.\n",
            True,
            id="a-line-that-begins-with-the-question",
        ),
        pytest.param(
            " is called by the user.\n This code is called by the user.\nMore",
            "This code is called by the user.\n",
            True,
            id="a-repeated-line",
        ),
        pytest.param(
            " sums.\n```python\ntotal = 0\n```\n",
            "This code sums.\n```python\ntotal = 0\n```\n",
            False,
            id="a-short-prompt-line-followed-by-new-code-is-shown",
        ),
        pytest.param("\nYou explain code in plain English.\nIt", "This code\n", True, id="echo-of-the-instructions"),
    ],
)
def test_echo_guard(reply: str, shown: str, stopped: bool) -> None:
    for size in (1, 3, len(reply)):  # however the model's text arrives in pieces
        guard = EchoGuard(PROMPT, "This code")
        out = ""
        for i in range(0, len(reply), size):
            out += guard.feed(reply[i : i + size])
            if guard.stopped:
                break
        out += guard.flush()
        assert (out, guard.stopped) == (shown, stopped), size


def test_echo_guard_streams_a_line_once_it_cannot_be_an_echo() -> None:
    guard = EchoGuard(PROMPT, "This code")
    assert guard.feed(" sums") == "This code sums"
    assert guard.feed("\nExplain what") == "\n"  # may become the question: held
    assert guard.feed(" it is") == "Explain what it is"  # cannot any more
    assert guard.feed(" for.\n") == " for.\n"


def test_local_prompt_is_the_code_and_a_short_question() -> None:
    req = request("debug", diagnostics=("line 2: error: division by zero",), error_text="ZeroDivisionError")
    system, user = build_local_messages(req, 4000)
    assert system["role"] == "system" and "sentences" in system["content"]
    assert user["content"].startswith("File: store.py\n```python\n" + SELECTION.rstrip("\n") + "\n```")
    assert "- line 2: error: division by zero" in user["content"] and "ZeroDivisionError" in user["content"]
    assert user["content"].endswith("```\nFind the bug in this code.")
    assert "Code before the selection" not in user["content"]


@pytest.fixture
def cloud_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def local_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite3", Prices.load())
    yield ledger
    ledger.close()


def make_router(
    tmp_path: Path,
    cloud_server: ScriptedServer | None,
    local_server: ScriptedServer,
    ledger: Ledger,
    settings: Settings | None = None,
    budget: BudgetDecision | None = None,
) -> Router:
    cloud = (
        OpenAICompatBackend(model="gpt-4o", base_url=cloud_server.url, api_key="sk-test", max_retries=0)
        if cloud_server
        else None
    )
    local = OpenAICompatBackend(
        model="fleet-coder", base_url=local_server.url, api_key=None, name="endpoint", chat_api=False
    )
    return Router(
        settings or Settings(),
        local,
        cloud,
        None if budget is None else (lambda *_: budget),
        str(tmp_path),
        ledger=ledger,
        audit=AuditLog(tmp_path / "audit.jsonl"),
    )


def rows(ledger: Ledger) -> list[tuple[str, str, str]]:
    ledger.flush()
    return [(r["task"], r["backend"], r["outcome"]) for r in ledger.rows()]


async def test_explain_on_the_cloud_redacts_streams_records_and_audits(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    text = SOURCE.replace("import os\n", 'import os\nDB = "postgres://app:pa55w0rd@db/app"\n')
    cloud_server.scripts.append(Script("It joins a path and writes the item."))
    chunks: list[str] = []
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    result = await run_assist(request(text=text), router, chunks.append, threading.Event())
    assert result.outcome == "ok" and result.backend == "cloud" and result.model == "gpt-4o"
    assert "".join(chunks) == result.text == "It joins a path and writes the item."
    assert cloud_server.usage is not None
    assert result.usage.prompt_tokens == cloud_server.usage["prompt_tokens"] and not result.usage.estimated
    assert "Redacted before sending: connection_string, openai_key." in result.notes
    sent = json.dumps(cloud_server.seen[0].body)
    assert KEY not in sent and "pa55w0rd" not in sent and "<<SECRET_1>>" in sent
    assert str(tmp_path) not in sent  # the prompt names the file relative to the workspace
    assert rows(ledger) == [("explain", "cloud", "ok")]
    audit = (tmp_path / "audit.jsonl").read_text()
    assert KEY not in audit and "pa55w0rd" not in audit
    assert json.loads(audit)["redacted"] == ["connection_string", "openai_key"]
    assert not local_server.seen


async def test_refactor_restores_secrets_and_indentation(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    selection = f'API_KEY = "{KEY}"\n'
    cloud_server.scripts.append(
        Script('Here you go:\n```python\nAPI_KEY = os.environ.get("API_KEY", "<<SECRET_1>>")\n```')
    )
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    req = request("refactor", selection=selection, instruction="read it from the environment")
    result = await run_assist(req, router, lambda _: None, threading.Event())
    assert result.outcome == "ok"
    assert result.code == f'API_KEY = os.environ.get("API_KEY", "{KEY}")\n'
    assert KEY not in json.dumps(cloud_server.seen[0].body)


async def test_refactor_reply_without_code_is_an_error_result(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    cloud_server.scripts.append(Script("I would use pathlib here."))
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    result = await run_assist(request("refactor"), router, lambda _: None, threading.Event())
    assert result.outcome == "error" and result.code is None
    assert "no code block; nothing was changed" in result.text
    assert rows(ledger) == [("refactor", "cloud", "ok")]


async def test_cloud_failure_before_text_falls_back_to_local(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    cloud_server.scripts.append(Script(status=401))
    local_server.scripts.append(Script(" returns the average."))
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    notices: list[str] = []
    secret_line = f'API_KEY = "{KEY}"\n'
    result = await run_assist(request(selection=secret_line), router, lambda _: None, threading.Event(), notices.append)
    assert result.outcome == "fallback" and result.backend == "endpoint" and result.model == "fleet-coder"
    assert result.text == "This code returns the average."  # the reply's start written into the prompt, shown
    assert result.reason is not None and "The cloud failed" in result.reason and "(401)" in result.reason
    assert notices == [result.reason]
    prompt = local_server.seen[0].body["prompt"]
    assert prompt.startswith("### System\n") and prompt.endswith("### Assistant\nExplanation: This code")
    assert KEY in prompt  # the local model sees the code as it is
    assert rows(ledger) == [("explain", "cloud", "error"), ("explain", "endpoint", "fallback")]


async def test_denied_file_never_reaches_the_cloud(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    req = dataclasses.replace(request(), path=str(tmp_path / "secrets.py"))
    result = await run_assist(req, router, lambda _: None, threading.Event())
    assert result.backend == "endpoint" and result.outcome == "fallback"
    assert result.reason is not None and "'secrets.*'" in result.reason
    assert not cloud_server.seen and local_server.seen


async def test_over_budget_refused(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    settings = dataclasses.replace(Settings(), over_budget="refuse")
    over = BudgetDecision(False, "Cloud budget reached: $5.00 of $5.00 spent today.")
    router = make_router(tmp_path, cloud_server, local_server, ledger, settings, over)
    result = await run_assist(request(), router, lambda _: None, threading.Event())
    assert result.outcome == "over_budget" and result.code is None
    assert result.text == over.message == result.reason
    assert not cloud_server.seen and not local_server.seen
    assert rows(ledger) == [("explain", "cloud", "over_budget")]


async def test_cancel_mid_reply(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    cloud_server.scripts.append(Script("word " * 40, delay_s=0.05))
    cancel = threading.Event()
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    result = await run_assist(request("refactor"), router, lambda _: cancel.set(), cancel)
    assert result.outcome == "cancelled" and result.code is None
    assert result.text == "word w"  # the first chunk only
    assert rows(ledger) == [("refactor", "cloud", "cancelled")]
    assert not local_server.seen


async def test_huge_refactor_is_refused_before_any_request(
    tmp_path: Path, cloud_server: ScriptedServer, local_server: ScriptedServer, ledger: Ledger
) -> None:
    big = "x = 1\n" * 350_000
    router = make_router(tmp_path, cloud_server, local_server, ledger)
    result = await run_assist(request("refactor", text=big, selection=big), router, lambda _: None, threading.Event())
    assert result.outcome == "error" and "too large to refactor" in result.text
    assert not cloud_server.seen and not local_server.seen


async def test_no_key_runs_locally_within_its_context(
    tmp_path: Path, local_server: ScriptedServer, ledger: Ledger
) -> None:
    local_server.scripts.append(Script("Fine."))
    settings = dataclasses.replace(Settings(), context_size=2048)
    router = make_router(tmp_path, None, local_server, ledger, settings)
    big = "y = 2\n" * 5000
    result = await run_assist(request(text=big + SOURCE), router, lambda _: None, threading.Event())
    assert result.outcome == "ok" and result.backend == "endpoint"
    assert result.reason is not None and "No cloud API key" in result.reason
    body = local_server.seen[0].body
    assert body["max_tokens"] == LOCAL_MAX_TOKENS["explain"]
    assert len(body["prompt"]) < (2048 - 2048 // 3) * 2 + 2000
