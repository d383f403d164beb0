"""A team's completion server (`local.endpoint`): llama-server through its native API, any other server (vLLM,
Ollama, `llama_cpp.server`) through the OpenAI one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import openai

from lsp_server.backends import Ahead, BackendError, TextPrompt, Usage
from lsp_server.backends.openai_compat import OpenAICompatBackend, capped_tokens
from lsp_server.completion.prompt import FimTemplate
from lsp_server.privacy import hide_passwords

Kind = Literal["auto", "llama-server", "openai"]
USER_HEADER = "X-Tandem-User"
"""Names the user to a balancer, which keeps each user on one replica (their prompt stays in its KV cache)."""
KEY_HINT = "set local.endpointApiKey or TANDEM_ENDPOINT_API_KEY"
SERVER_FIM = FimTemplate("llama-server", "", "", "")
"""The server lays out fill-in-the-middle with its model's own tokens: prompts go as parts (`Infill`)."""
MULTILINE_PREDICT_MS = 2500
"""llama-server's `t_max_predict_ms` for a block: past it, generation ends at the next line's end."""
TYPED_SINCE_WARMED = 256
"""Characters a prompt may have lost from the end of the last one warmed and still count as warm: what was typed
since is evaluated by the request at the pause, the rest is in the server's cache."""


class EndpointBackend(OpenAICompatBackend):
    """The OpenAI-compatible backend, speaking llama-server's own API when the server is llama-server.

    llama-server's `/infill` applies the model's FIM tokens (context chunks in `input_extra`); a model without
    them gets `/completion`. Both keep the prompt cached (`cache_prompt`) and leave the slot to the server, which
    gives each request the slot whose cached prompt shares the most with it. While the user types, the server
    evaluates the prompt ahead, once per window (`prefill`).
    """

    resumes = True

    def __init__(self, *, base_url: str, kind: Kind, api_key: str | None, user: str, timeout_s: float = 60.0) -> None:
        super().__init__(
            model="",
            base_url=base_url,
            api_key=api_key,
            name="endpoint",
            # Chat goes as plain turns, as to a local model without a chat template: a team's coder model may lack one.
            chat_api=False,
            timeout_s=timeout_s,
            headers={USER_HEADER: user},
            key_hint=KEY_HINT,
        )
        self.kind: Kind = kind
        """auto until the first request to the server learns which it is."""
        self._fim = False
        """llama-server's model has FIM tokens."""
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/")
        self._root = urlunsplit(parts._replace(path=path.removesuffix("/v1"), query="", fragment=""))
        """The server's URL without the OpenAI API's `/v1`, where llama-server's own endpoints are."""
        self._warmed = ""
        """The beginning of the last prompt the server was asked to evaluate ahead (`_head`)."""
        self._warming: asyncio.Task[None] | None = None

    async def template(self) -> FimTemplate | None:
        """llama-server: FIM laid out by the server when its model has the tokens; otherwise the name's family."""
        await self.resolve_model()
        if self.kind == "llama-server":
            return SERVER_FIM if self._fim else None
        return await super().template()

    def status(self) -> dict[str, object]:
        """The OpenAI backend's status, the API spoken and, for llama-server, whether it fills in the middle."""
        status = {**super().status(), "kind": self.kind}
        if self.kind == "llama-server":
            status["fim"] = SERVER_FIM.family if self._fim else None  # as the in-process model reports it
        return status

    async def _first_model(self) -> str:
        """Learn what the server is (llama-server answers `/props`) and the model it serves."""
        if self.kind == "openai":
            return await super()._first_model()
        try:
            props = await self._call("get", "/props")
        except openai.NotFoundError as exc:  # vLLM, Ollama, llama_cpp.server
            if self.kind == "llama-server":
                root = hide_passwords(self._root)
                raise BackendError(f"{root} is not llama-server (no /props): check local.endpointKind") from exc
            self.kind = "openai"
            return await super()._first_model()
        except openai.APIError as exc:
            raise self._classify(exc, mid_stream=False)[0] from exc
        self.kind = "llama-server"
        try:
            # n_predict 0 evaluates a prompt of three tokens and generates nothing; a model without FIM tokens is
            # refused (501).
            await self._call("post", "/infill", {"input_prefix": "", "input_suffix": "", "n_predict": 0})
            self._fim = True
        except openai.APIStatusError as exc:
            if exc.status_code != 501:
                raise self._classify(exc, mid_stream=False)[0] from exc
            self._fim = False
        except openai.APIError as exc:
            raise self._classify(exc, mid_stream=False)[0] from exc
        path = str(props.get("model_path") or "")
        return str(props.get("model_alias") or path.rsplit("/", 1)[-1] or "llama-server")

    def prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None] = lambda text: None,
        logprobs: list[float] | None = None,
    ) -> None:
        """llama-server: have the server evaluate a prompt whose beginning it has not been given yet (a file just
        opened, a window that moved, another place), generating nothing, so that the request at the pause finds
        it in the slot's cache and evaluates only what was typed since. Once per window, not per key: the server
        is shared. Other servers: nothing (their caches are their own business)."""
        head = self._head(prompt)
        cached = bool(self._warmed) and head.startswith(self._warmed[: len(self._warmed) - TYPED_SINCE_WARMED])
        if self.kind != "llama-server" or cached:
            return
        self._warmed = head
        path, body = native_request(prompt, self._fim)

        async def warm() -> None:
            try:
                reply = await self._call("post", path, {**body, "n_predict": 0, "stream": False})
            except openai.APIError:  # the request at the pause meets the same failure and reports it
                self._warmed = ""
                return
            timings = reply.get("timings") if isinstance(reply, dict) else None
            evaluated = timings.get("prompt_n") if isinstance(timings, dict) else None
            done(Ahead(evaluated if isinstance(evaluated, int) else 0, 0))

        self._warming = asyncio.ensure_future(warm())

    def _head(self, prompt: TextPrompt) -> str:
        """What of a prompt the server's cache keeps from one key to the next: all of it but what follows the
        cursor (for `/infill` the context chunks, then the prefix)."""
        infill = prompt.infill
        if infill is None or not self._fim:
            return prompt.text
        return "".join(f"{name}\n{text}\n" for name, text in infill.extra) + infill.prefix

    async def aclose(self) -> None:
        """Stop evaluating ahead and close the connections."""
        if self._warming is not None:
            self._warming.cancel()
        await super().aclose()

    async def _call(self, method: Literal["get", "post"], path: str, body: dict[str, Any] | None = None) -> Any:
        """One JSON request to llama-server's own API."""
        client = self._client
        assert client is not None, "an endpoint always has a client"
        if method == "get":
            return await client.get(self._root + path, cast_to=object)
        return await client.post(self._root + path, cast_to=object, body=body)

    def _open_text(self, client: openai.AsyncOpenAI, prompt: TextPrompt) -> Awaitable[Any]:
        """llama-server: `/infill` or `/completion`, streamed; otherwise the OpenAI API's `/v1/completions`."""
        if self.kind != "llama-server":
            return super()._open_text(client, prompt)
        path, body = native_request(prompt, self._fim)
        warming = self._warming

        async def open_stream() -> Any:
            if warming is not None and not warming.done() and self._head(prompt).startswith(self._warmed):
                # The server is evaluating this very prompt: sent now, the request would take another slot, cold.
                await asyncio.shield(warming)
            return await client.post(
                self._root + path, cast_to=object, body=body, stream=True, stream_cls=openai.AsyncStream[object]
            )

        return open_stream()

    def _read_text(self, chunk: Any) -> tuple[str, bool, Usage | None]:
        """A llama-server event: its text, whether it is the last, and the tokens counted so far."""
        if self.kind != "llama-server" or not isinstance(chunk, dict):
            return super()._read_text(chunk)
        text = chunk.get("content")
        done = chunk.get("stop") is True
        timings = chunk.get("timings") or {}
        usage = None
        if isinstance(timings.get("prompt_n"), int):  # in every event (`timings_per_token`): a reply closed early too
            cached = int(timings.get("cache_n") or 0)
            predicted = chunk.get("tokens_predicted", timings.get("predicted_n", 0))
            usage = Usage(timings["prompt_n"] + cached, int(predicted), cached)
        return (text if isinstance(text, str) else ""), done, usage


def native_request(prompt: TextPrompt, fim: bool) -> tuple[str, dict[str, Any]]:
    """The llama-server endpoint and body for `prompt`: the single- or multi-line policy in the server's terms."""
    body: dict[str, Any] = {
        "n_predict": capped_tokens(prompt),
        "stream": True,
        "cache_prompt": True,
        "top_k": 1,  # greedy, as the in-process model
        "stop": list(prompt.stop),
        "timings_per_token": True,
    }
    infill = prompt.infill
    if infill is not None and "\n" not in prompt.stop:
        # A block: it ends where the code returns left of the cursor's line, or once it runs long at a line's end.
        line = infill.prefix[infill.prefix.rfind("\n") + 1 :]
        body["n_indent"] = len(line) - len(line.lstrip(" \t"))
        body["t_max_predict_ms"] = MULTILINE_PREDICT_MS
    if infill is None or not fim:
        return "/completion", {**body, "prompt": prompt.text}
    cut = infill.prefix.rfind("\n") + 1
    extra = [{"filename": name, "text": text} for name, text in infill.extra]
    # The cursor's line goes in `prompt`, as llama.vscode sends it; the server appends it to the prefix.
    fields = {
        "input_prefix": infill.prefix[:cut],
        "prompt": infill.prefix[cut:] + infill.written,
        "input_suffix": infill.suffix,
    }
    return "/infill", {**body, **fields, "input_extra": extra}
