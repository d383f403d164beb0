"""Fixtures shared by the test tiers: the real server over stdio with a real LSP client."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from lsp_server.tools.session import plain

if TYPE_CHECKING:
    from tests.loopback import FaultProxy

REPO = Path(__file__).resolve().parent.parent

# The capabilities real editors send: VS Code speaks utf-16 positions, Neovim 0.11 utf-8.
EDITORS = ["visual-studio-code", "neovim@v0.11.0"]


class Client(LanguageClient):
    """pytest-lsp's client, also collecting tandem's ghost-text notifications."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ghost_text: list[dict[str, Any]] = []
        self.server_capabilities: types.ServerCapabilities | None = None


def _client_factory() -> Client:
    client = Client()

    @client.feature("tandem/ghostText")
    def ghost_text(client: Client, params: Any) -> None:
        client.ghost_text.append(plain(params))

    from pytest_lsp.client import register_lsp_features

    register_lsp_features(client)
    return client


async def start_client(
    data_dir: Path,
    editor: str = "visual-studio-code",
    options: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    server: tuple[str, ...] = ("-m", "lsp_server", "serve"),
) -> Client:
    """Start `tandem serve` (or another `python` command line, `server`) as a subprocess and initialize it as
    `editor` would. Every suggestion is shown unless `options` set `completion.minConfidence`: whether the model
    is sure of its suggestion at a test's spot is not what tests are about, except those of that setting."""
    completion = (options or {}).get("completion", {})
    options = {**(options or {}), "completion": {"minConfidence": 0, **completion}}
    config = ClientServerConfig(
        server_command=[sys.executable, *server],
        server_env={**os.environ, "TANDEM_DATA_DIR": str(data_dir), **(env or {})},
        client_factory=_client_factory,
    )
    client = await config.start()
    assert isinstance(client, Client)
    result = await client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(editor),
            initialization_options=options,
            root_uri=REPO.as_uri(),
        )
    )
    client.server_capabilities = result.capabilities
    return client


@contextlib.asynccontextmanager
async def serving(
    data_dir: Path,
    editor: str = "visual-studio-code",
    options: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """`start_client`, shut down cleanly when the block ends."""
    client = await start_client(data_dir, editor, options, env)
    try:
        yield client
    finally:
        await client.shutdown_session()
        await client.stop()


@pytest.fixture(params=EDITORS)
def editor(request: pytest.FixtureRequest) -> str:
    """Each end-to-end test runs with VS Code's and Neovim's capabilities."""
    return str(request.param)


@pytest_asyncio.fixture
async def client(editor: str, tmp_path: Path) -> AsyncIterator[Client]:
    """A real tandem server on the embedded default model, initialized as `editor`."""
    async with serving(tmp_path, editor) as client:
        yield client


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """One real OpenAI-compatible server (`python -m llama_cpp.server`, the embedded model) for the run."""
    from tests.loopback import embedded_model, llama_server

    with llama_server(embedded_model()) as url:
        yield url


@pytest.fixture(scope="module")
def module_proxy(upstream: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of `upstream`, for one test module."""
    from tests.loopback import FaultProxy

    proxy = FaultProxy(upstream)
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(module_proxy: FaultProxy) -> FaultProxy:
    """The upstream as tandem sees it: the proxy, passing requests through, nothing seen yet."""
    module_proxy.reset()
    return module_proxy


Start = Callable[..., Awaitable[Client]]


@pytest_asyncio.fixture
async def start_on(tmp_path: Path) -> AsyncIterator[Start]:
    """Start `tandem serve` on `local.endpoint` (more `local` settings, then completion settings as keywords),
    with no cloud key; each server is stopped after the test."""
    started: list[Client] = []

    async def run(endpoint: str, local: dict[str, Any] | None = None, **completion: Any) -> Client:
        options = {"local": {"endpoint": endpoint.removesuffix("/v1"), **(local or {})}, "completion": completion}
        client = await start_client(tmp_path, "visual-studio-code", options, {"OPENAI_API_KEY": ""})
        started.append(client)
        return client

    yield run
    for client in started:
        await client.shutdown_session()
        await client.stop()


async def command(client: Client, name: str, *arguments: Any) -> dict[str, Any]:
    """Run a `workspace/executeCommand` and give back its result as plain JSON."""
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(arguments))
    )
    return dict(plain(result))


async def until(predicate: Callable[[], Any], timeout_s: float = 60.0) -> None:
    """Wait until `predicate()` (awaited when it is a coroutine) is true; fail the test after `timeout_s`."""
    for _ in range(int(timeout_s / 0.02)):
        result = predicate()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out waiting")
