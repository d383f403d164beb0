"""Greedy decoding on a loaded llama.cpp model: token healing, prompt-lookup drafts, and the model's own tokens
that the KV cache holds past a prompt, served again when the next prompt would choose them too."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsp_server.backends import TextPrompt
from lsp_server.backends.healing import Constraint, Healing, Sampling, TokenIndex, heal, pieces_of


@dataclass
class Held:
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


@dataclass(frozen=True)
class Reuse:
    """What of the KV cache a prompt keeps."""

    held: Held
    """The prompt, and the part of the cache's greedy continuation a generation after it would choose again."""
    keep: int
    """Cached tokens kept; the prompt's and held tokens after them are evaluated (none when it is all of them)."""

    @property
    def evaluated(self) -> int:
        """Prompt tokens evaluated."""
        return max(0, len(self.held.prompt) - self.keep)


def reuse(healing: Healing, cached: list[int], held: Held | None, logits_at: int) -> Reuse:
    """What a generation after `healing` keeps of the KV cache's tokens `cached`, given the greedy continuation
    `held` past the cache's last prompt and the cache length `logits_at` that the logits at hand belong to."""
    served = _served(healing, cached, held)
    sequence = served.prompt + served.tokens
    keep = common_prefix(cached, sequence)
    if keep == len(sequence) == len(cached) and logits_at == keep:
        return Reuse(served, keep)
    return Reuse(served, min(keep, len(sequence) - 1))  # at least the last token, for its logits


def _served(healing: Healing, cached: list[int], old: Held | None) -> Held:
    """The part of the KV cache's greedy continuation that a generation after `healing` would choose again;
    the healing constraint is advanced over it.

    A greedy choice depends only on the tokens before it, so it stands when the user typed exactly what
    the model chose, as long as it was chosen freely (or under this very constraint) and meets this
    prompt's constraint; a masked token's log-probability stays the one over the set it was chosen from."""
    tokens = healing.tokens
    fresh = Held(tokens, healing.removed, [], [], constraint=healing.constraint)
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
    return Held(tokens, healing.removed, reused, old.logprobs[skip:], constrained, constraint)


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


@dataclass
class Pass:
    """What one pass of the decoding loop did."""

    prompt_tokens: int
    evaluated: int = 0
    """Prompt tokens evaluated; the others were in the KV cache."""
    served: int = 0
    """Tokens of the greedy continuation the KV cache held for this prompt, served without decoding."""
    decoded: int = 0
    """Tokens the KV cache gained past the prompt and those served (drafts kept included)."""
    logprobs: list[float] = field(default_factory=list)
    """Log-probability of each token passed on."""
    first_token_at: float | None = None
    """`time.perf_counter()` when the first token was chosen, even one that ends the generation."""
    interrupted: bool = False
    """Whether `interrupt` stopped the loop."""
    drafted: int = 0
    drafts_kept: int = 0
    error: Exception | None = None
    """What the C library raised; nothing held is trusted after it."""


class Decoder:
    """Greedy decoding with a llama-cpp-python `Llama`, used only by the thread that owns it."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._index = TokenIndex(pieces_of(llm.detokenize, llm.n_vocab()))  # about a second
        self._held: Held | None = None  # what the KV cache holds past the last prompt
        self._logits: Any = None  # the logits after the KV cache's last token (a view into llama.cpp's)
        self._logits_at = -1  # the KV length they belong to; -1 when there are none
        self._drafts = [0, 0]  # tokens drafted by prompt lookup, and of those kept, since loading

    def run(
        self,
        prompt: TextPrompt,
        emit: Callable[[str], None],
        interrupt: Callable[[str], bool],
        logprobs: list[float] | None = None,
    ) -> Pass:
        """Decode greedily after the prompt, passing each token's text to `emit`, until the end of generation,
        a stop string (its text cut there), `prompt.max_tokens`, or `interrupt` says so given the text so far.
        Each token's log-probability is appended to `logprobs` (the pass's own) before its text is emitted.
        A token the loop stops at is left unevaluated: a generation after the same prompt chooses it again from
        the logits held."""
        import llama_cpp

        healing = self._tokens(prompt)
        text = _Text(self._llm, healing)
        vocab = self._llm._model.vocab
        done = Pass(len(healing.tokens), logprobs=[] if logprobs is None else logprobs)
        drafts = list(self._drafts)
        try:
            held, done.evaluated = self._position(healing)
            done.served = len(held.tokens)
            for token, logprob in self._greedy(held):
                if done.first_token_at is None:
                    done.first_token_at = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                done.logprobs.append(logprob)
                piece = text.add(token)
                stop_at = _first_stop(text.text, prompt.stop)
                if stop_at is not None:
                    if stop_at > len(text.text) - len(piece):
                        emit(text.text[len(text.text) - len(piece) : stop_at])
                    break
                if piece:
                    emit(piece)
                if interrupt(text.text):
                    done.interrupted = True
                    break
                if len(done.logprobs) >= prompt.max_tokens:
                    break
            done.decoded = len(held.tokens) - done.served
        except Exception as exc:  # the C library's errors arrive as many types; the caller reports them
            self._forget()
            done.error = exc
        done.drafted, done.drafts_kept = self._drafts[0] - drafts[0], self._drafts[1] - drafts[1]
        return done

    def _tokens(self, prompt: TextPrompt) -> Healing:
        """The prompt's tokens as the model evaluates them: cut to fit the context, healed."""
        llm = self._llm
        tokens = llm.tokenize(prompt.text.encode("utf-8"), add_bos=True, special=True)
        room = llm.n_ctx() - prompt.max_tokens
        if len(tokens) > room:
            tokens = tokens[:1] + tokens[len(tokens) - room + 1 :]
        return heal(tokens, self._index)

    def _position(self, healing: Healing) -> tuple[Held, int]:
        """Make the KV cache hold the healed prompt and what of its greedy continuation this prompt would choose
        again; that continuation, and how many prompt tokens had to be evaluated."""
        llm = self._llm
        kept = reuse(healing, llm.input_ids[: llm.n_tokens].tolist(), self._held, self._logits_at)
        self._held = kept.held
        sequence = kept.held.prompt + kept.held.tokens
        if kept.keep < len(sequence):
            self._logits_at = -1
            llm.n_tokens = kept.keep
            llm.eval(sequence[kept.keep :])
            self._logits, self._logits_at = self._row(-1), llm.n_tokens
        return kept.held, kept.evaluated

    def _greedy(self, held: Held) -> Iterator[tuple[int, float]]:
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


def common_prefix(a: Any, b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for stop in stops if (i := text.find(stop)) >= 0]
    return min(found) if found else None
