"""Separate local models per role, one load per file, and the model `tandem models use` saved."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from lsprotocol import types

from lsp_server.tools.session import plain
from tests.conftest import Client, start_client
from tests.loopback import embedded_model
from tests.tiny_gguf import write_tiny_fim_model

URI = "file:///tmp/roles_sample.py"
SOURCE = "def area(width, height):\n    return width * height\n"
NO_CLOUD = {"OPENAI_API_KEY": ""}


async def ready_status(client: Client) -> dict[str, Any]:
    """tandem.status once both local models have loaded (or failed)."""
    for _ in range(600):
        result = dict(plain(await client.workspace_execute_command_async(types.ExecuteCommandParams("tandem.status"))))
        if "loading" not in (result["model"]["state"], result["chatModel"]["state"]):
            assert result["model"]["state"] == result["chatModel"]["state"] == "ready", result
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("the models never finished loading")


async def stop(client: Client) -> None:
    await client.shutdown_session()
    await client.stop()


async def test_one_file_for_both_roles_loads_once(tmp_path: Path) -> None:
    model = embedded_model()
    alias = tmp_path / "same-model.gguf"
    alias.symlink_to(model)  # another name for the same file is still the same file
    client = await start_client(
        tmp_path, options={"local": {"modelPath": str(model), "chatModelPath": str(alias)}}, env=NO_CLOUD
    )
    try:
        report = await ready_status(client)
        assert report["modelLoads"] == 1
        assert report["chatModel"] == report["model"]
    finally:
        await stop(client)


async def test_chat_model_runs_explain_when_the_cloud_is_off(tmp_path: Path) -> None:
    chat = write_tiny_fim_model(tmp_path / "tiny-chat.gguf", seed=3)
    options = {
        "local": {"modelPath": str(embedded_model()), "chatModelPath": str(chat), "contextSize": 512},
        "completion": {"maxTokens": 8},
    }
    client = await start_client(tmp_path, options=options, env=NO_CLOUD)
    try:
        report = await ready_status(client)
        assert report["modelLoads"] == 2
        assert (report["model"]["name"], report["chatModel"]["name"]) == ("Gemma 3 270m", "tiny-fim")
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(URI, "python", version=1, text=SOURCE))
        )
        argument = {"uri": URI, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}}
        params = types.ExecuteCommandParams("tandem.explain", [argument])
        result = dict(plain(await client.workspace_execute_command_async(params)))
        assert (result["backend"], result["model"]) == ("local", "tiny-fim")
    finally:
        await stop(client)


async def test_saved_model_is_loaded_and_editor_settings_win(tmp_path: Path) -> None:
    saved = write_tiny_fim_model(tmp_path / "saved.gguf", seed=5)
    (tmp_path / "settings.json").write_text(json.dumps({"local.modelPath": str(saved), "local.contextSize": 512}))
    client = await start_client(tmp_path, env={"TANDEM_MODEL": ""})
    try:
        report = await ready_status(client)
        assert report["model"]["path"] == str(saved)
        assert report["model"]["contextSize"] == 512
    finally:
        await stop(client)
    client = await start_client(tmp_path, options={"local": {"modelPath": str(embedded_model())}})
    try:
        report = await ready_status(client)
        assert report["model"]["path"] == str(embedded_model())
        assert report["model"]["contextSize"] == 512  # what the editor leaves unset still comes from the saved file
    finally:
        await stop(client)
