"""Performance plumbing end to end: the prompt evaluated ahead during the debounce, the token and stage counts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from lsp_server.backends import Ahead, Generation, TextPrompt
from lsp_server.backends.local import LocalBackend, embedded_model_path
from lsp_server.config import Settings, cache_dir
from tests.conftest import Client, serving
from tests.e2e.test_completion import SOURCE, complete, end_position, open_doc, status


async def _line(backend: LocalBackend, text: str) -> tuple[str, Generation]:
    report = Generation()
    out = ""
    async for chunk in backend.stream(TextPrompt(text, 16, ("\n",)), threading.Event(), report):
        out += chunk
    return out, report


async def _ahead(backend: LocalBackend, prompt: TextPrompt) -> Ahead:
    done: asyncio.Queue[Ahead] = asyncio.Queue()
    backend.prefill(prompt, done.put_nowait)
    return await asyncio.wait_for(done.get(), 120)  # ends by itself: nothing else was asked


async def test_a_line_the_kv_cache_already_holds_is_reported_written_when_decoded_ahead() -> None:
    # The user types the first character the model chose: the line decoded ahead for the key before is the
    # rest of this one, nothing is evaluated or decoded, and the engine must still hear that it is written
    # (it shows it then; it waited out the whole debounce when this was not reported).
    backend = LocalBackend(Settings(), lambda: str(embedded_model_path(cache_dir())))
    await backend.start()
    try:
        prompt = SOURCE + "    return len(text."
        first = await _ahead(backend, TextPrompt(prompt, 16, ("\n",)))
        line, _ = await _line(backend, prompt)
        assert first.finished and len(line) > 2
        again = await _ahead(backend, TextPrompt(prompt + line[:1], 16, ("\n",)))
        assert (again.evaluated, again.decoded, again.finished) == (0, 0, True)
    finally:
        backend.close()


async def test_prompt_evaluated_and_decoded_ahead_is_what_generation_would_do() -> None:
    path = str(embedded_model_path(cache_dir()))
    ahead, fresh = LocalBackend(Settings(), lambda: path), LocalBackend(Settings(), lambda: path)
    await asyncio.gather(ahead.start(), fresh.start())
    try:
        prompt = SOURCE + "    return len(text."
        done = await _ahead(ahead, TextPrompt(prompt, 16, ("\n",)))
        assert done.evaluated > 10 and done.decoded > 0  # the whole idle time went to the line after the prompt
        line, report = await _line(ahead, prompt)
        expected, _ = await _line(fresh, prompt)
        assert line == expected and line
        assert report.usage.cached_tokens == report.usage.prompt_tokens  # nothing left to evaluate
        assert report.ahead_tokens == done.decoded  # the decoded tokens were served, not decoded again
        # The user types the first characters the model chose (inside a token, so token healing applies):
        # the next prompt finds them in the KV cache and its line is the rest of the same line.
        typed = prompt + line[:2]
        line2, report2 = await _line(ahead, typed)
        expected2, _ = await _line(fresh, typed)
        assert line2 == expected2 == line[2:]
        assert report2.ahead_tokens > 0 and report2.usage.cached_tokens == report2.usage.prompt_tokens
        # Something else typed: nothing held is reused, and the answer is the fresh model's.
        other = prompt + "zz"
        line3, report3 = await _line(ahead, other)
        assert (line3, report3.ahead_tokens) == ((await _line(fresh, other))[0], 0)
    finally:
        ahead.close()
        fresh.close()


async def test_decoding_ahead_of_a_block_stops_after_its_first_line() -> None:
    backend = LocalBackend(Settings(), lambda: str(embedded_model_path(cache_dir())))
    await backend.start()
    try:
        prompt = SOURCE + "    words = text.split()\n"
        decoded = (await _ahead(backend, TextPrompt(prompt, 48))).decoded
        report = Generation()
        chunks = [chunk async for chunk in backend.stream(TextPrompt(prompt, 48), threading.Event(), report)]
        assert "".join(chunks).strip().count("\n") >= 1  # a block of more than one line
        assert 0 < decoded == report.ahead_tokens < report.usage.completion_tokens
        ahead = "".join(chunks[:decoded])  # one chunk per token here (plain ASCII code)
        assert ahead.strip() and "\n" not in ahead.lstrip("\n") and "\n" in chunks[decoded]  # the first line
    finally:
        backend.close()


REPEATING = (
    SOURCE
    + """    return len(text.split())


UNITS = {
    "b": 1,
    "kb": 1024,
    "mb": 1024 * 1024,
    "gb": 1024 * 1024 * 1024,
}


def parse_size(text):
    number, unit = text.split()
    return int(number) * UNITS[unit.lower()]


UNITS = {
    "b": 1,
"""
)


async def test_tokens_drafted_from_earlier_text_are_the_models_own_greedy_tokens() -> None:
    """Prompt lookup: where the text repeats, tokens drafted from the earlier occurrence are checked in one batch
    and kept only where the model chooses them too, so the text is llama-cpp-python's own one-token-at-a-time
    greedy text (every choice here wins by more than 2 logits: no near-tie for batching to tip)."""
    import llama_cpp

    path = str(embedded_model_path(cache_dir()))
    backend = LocalBackend(Settings(), lambda: path)
    await backend.start()
    try:
        report = Generation()
        chunks = [chunk async for chunk in backend.stream(TextPrompt(REPEATING, 24), threading.Event(), report)]
    finally:
        backend.close()
    llm = llama_cpp.Llama(model_path=path, n_ctx=2048, verbose=False)
    reference = []
    for token in llm.generate(llm.tokenize(REPEATING.encode(), add_bos=True), temp=0.0, top_k=1, repeat_penalty=1.0):
        if len(reference) == 24:
            break
        reference.append(token)
    assert "".join(chunks) == llm.detokenize(reference).decode() and '"kb": 1024,' in "".join(chunks)
    assert 0 < report.drafts_kept <= report.drafted  # drafted and kept: fewer steps than tokens
    assert report.usage.completion_tokens == 24


async def test_status_counts_model_tokens_and_stage_times(client: Client, editor: str) -> None:
    open_doc(client, SOURCE)
    items = await complete(client, end_position(SOURCE, editor), invoked=False)  # typed: debounced
    assert items
    report = await status(client)
    counters, timing = report["counters"], report["lastTiming"]
    assert counters["promptTokensEvaluated"] > 10 and counters["generatedTokens"] > 0
    assert timing["model"] > 0 and timing["debounce"] >= 100
    assert timing["total"] >= timing["debounce"] + timing["model"]
    assert timing["server"] > timing["total"]  # read before the engine starts, written after it ends


async def test_status_counts_tokens_drafted_and_kept(client: Client, editor: str) -> None:
    open_doc(client, REPEATING)
    items = await complete(client, end_position(REPEATING, editor))
    assert items and '"kb": 1024,' in str(items[0].insert_text)
    counters = (await status(client))["counters"]
    assert 0 < counters["draftedTokensKept"] <= counters["draftedTokens"]
    assert counters["draftedTokensKept"] < counters["generatedTokens"]  # kept drafts are generated tokens


async def test_first_line_is_shown_word_by_word_and_only_ever_extended(client: Client, editor: str) -> None:
    """A single line streams before it is finished, a whole word at a time: each notification of the request is
    the start of the next one and of the answer, so nothing shown is ever taken back."""
    text = SOURCE + "counts = {}\n    for word in text.split():\n        counts[word] = "
    open_doc(client, text)
    items = await complete(client, end_position(text, editor))
    assert items
    final = items[0].insert_text
    assert isinstance(final, str) and "\n" not in final, final
    shown = [params["text"] for params in client.ghost_text]
    assert shown, f"nothing streamed before the answer {final!r}"
    assert len(shown[0]) < len(final), (shown, final)  # shown before the line was finished
    for text_so_far, later in zip(shown, [*shown[1:], final], strict=True):
        assert later.startswith(text_so_far), (text_so_far, later)


async def test_decode_ahead_off_leaves_the_model_idle_during_the_debounce(tmp_path: Path, editor: str) -> None:
    options = {"completion": {"decodeAhead": "off", "debounceMs": 3000}}  # a long wait, with nothing done in it
    async with serving(tmp_path, editor, options) as client:
        text = SOURCE + "counts = {}\n    for word in text.split():\n        counts[word] = "
        open_doc(client, text)
        items = await complete(client, end_position(text, editor), invoked=False)  # typed: debounced
        assert items
        counters = (await status(client))["counters"]
        assert counters["aheadTokens"] == 0 and counters["generations"] == 1
        assert counters["aheadTokensUsed"] == 0 and counters["generatedTokens"] > 0
