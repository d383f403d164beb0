"""End to end: settings changed while the real server runs (workspace/didChangeConfiguration) rebuild only what
they touch; `tandem.status` → `modelLoads` counts the model loads of the process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsprotocol import types

from tests.conftest import Client, start_client, until
from tests.e2e.test_completion import SOURCE, complete, end_position, open_doc, status


def reconfigure(client: Client, settings: dict[str, Any]) -> None:
    """Change the client's `tandem` settings and say so, as VS Code does."""
    client.set_configuration(settings, section="tandem")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))


async def ready(client: Client, **expected: Any) -> dict[str, Any]:
    """`tandem.status` once the model is ready with the `expected` values (e.g. contextSize=768)."""
    report: dict[str, Any] = {}

    async def matches() -> bool:
        report.update(await status(client))
        model = report["model"]
        return bool(model["state"] == "ready" and all(model.get(k) == v for k, v in expected.items()))

    await until(matches, timeout_s=120)
    return report


async def test_a_budget_change_keeps_the_model(client: Client, editor: str) -> None:
    open_doc(client, SOURCE)
    assert (await ready(client))["modelLoads"] == 1
    # Nothing in tandem.status shows the budget: the debounce, changed with it, shows the change was applied.
    reconfigure(client, {"cloud": {"dailyBudgetUsd": 0.5}, "completion": {"debounceMs": 10}})

    async def applied() -> bool:
        return bool((await status(client))["settings"]["debounceMs"] == 10)

    await until(applied)
    report = await status(client)
    assert report["modelLoads"] == 1 and report["model"]["state"] == "ready"
    assert await complete(client, end_position(SOURCE, editor))


async def test_a_context_size_change_reloads_the_model_once(editor: str, tmp_path: Path) -> None:
    client = await start_client(tmp_path, editor, options={"local": {"contextSize": 1024}})
    try:
        open_doc(client, SOURCE)
        assert (await ready(client, contextSize=1024))["modelLoads"] == 1
        assert await complete(client, end_position(SOURCE, editor))
        reconfigure(client, {"local": {"contextSize": 768}})
        report = await ready(client, contextSize=768)
        assert report["modelLoads"] == 2 and report["counters"]["generations"] >= 1  # the process's counters stay
        assert await complete(client, end_position(SOURCE, editor))
        assert (await status(client))["modelLoads"] == 2
    finally:
        await client.shutdown_session()
        await client.stop()
