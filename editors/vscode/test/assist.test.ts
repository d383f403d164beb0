import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type AssistResult,
  Transcript,
  assistArgs,
  assistId,
  codeActionTarget,
  problemLines,
  replaceRange,
  serverCommand,
  taskOf,
} from "../src/assist";

const RANGE = { start: { line: 3, character: 0 }, end: { line: 4, character: 32 } };
const URI = "file:///work/helpers.py";

function result(change: Partial<AssistResult> = {}): AssistResult {
  return {
    text: "It returns the size.",
    code: null,
    backend: "cloud",
    model: "gpt-4o",
    reason: null,
    outcome: "ok",
    notes: [],
    ...change,
  };
}

describe("command arguments", () => {
  it("are {uri, range, id} plus what the user gave", () => {
    assert.deepEqual(assistArgs(URI, RANGE, "vscode-1"), { uri: URI, range: RANGE, id: "vscode-1" });
    assert.deepEqual(
      assistArgs(URI, RANGE, "vscode-2", { errorText: " ZeroDivisionError \n", diagnostics: ["line 9: error: x"] }),
      { uri: URI, range: RANGE, id: "vscode-2", errorText: "ZeroDivisionError", diagnostics: ["line 9: error: x"] },
    );
    assert.deepEqual(assistArgs(URI, RANGE, "vscode-3", { instruction: "", errorText: " ", diagnostics: [] }), {
      uri: URI,
      range: RANGE,
      id: "vscode-3",
    });
  });

  it("ask the server not to apply a refactor the user wants to see first", () => {
    assert.equal(assistArgs(URI, RANGE, "r", { instruction: "use os.stat", preview: true }).apply, false);
    assert.equal("apply" in assistArgs(URI, RANGE, "r", { instruction: "use os.stat", preview: false }), false);
  });

  it("map tasks to server commands and back", () => {
    assert.equal(serverCommand("refactor"), "tandem.refactor");
    assert.deepEqual(["tandem.explain", "tandem.debug", "tandem.refactor", "tandem.status", "explain"].map(taskOf), [
      "explain",
      "debug",
      "refactor",
      undefined,
      undefined,
    ]);
    assert.notEqual(assistId(1, 1), assistId(1, 2));
  });

  it("read a code action's argument", () => {
    assert.deepEqual(codeActionTarget([{ uri: URI, range: RANGE }]), { uri: URI, range: RANGE });
    assert.deepEqual(codeActionTarget([{ uri: URI, range: RANGE, diagnostics: ["line 9: error: x", 3] }]), {
      uri: URI,
      range: RANGE,
      diagnostics: ["line 9: error: x"],
    });
    assert.equal(codeActionTarget([]), undefined);
    assert.equal(codeActionTarget([{ uri: URI }]), undefined);
  });

  it("send problems as 1-based lines", () => {
    assert.deepEqual(problemLines([{ line: 8, severity: "error", message: " division by zero ", source: "pyright" }]), [
      "line 9: error: division by zero (pyright)",
    ]);
  });

  it("replace a range by offsets", () => {
    assert.equal(replaceRange("abcdef", 2, 4, "XY Z"), "abXY Zef");
  });
});

describe("transcript", () => {
  it("streams its own chunks, then a footer saying how it was served", () => {
    const transcript = new Transcript("vscode-7", "explain");
    assert.equal(transcript.heading("helpers.py", RANGE), "\n## Explain — helpers.py:4-5\n\n");
    assert.equal(transcript.chunk({ id: "vscode-7", task: "explain", uri: URI, text: "It returns " }), "It returns ");
    assert.equal(transcript.chunk({ id: "other", task: "explain", uri: URI, text: "nope" }), "");
    assert.equal(transcript.chunk({ id: "vscode-7", task: "explain", uri: URI, text: "the size." }), "the size.");
    assert.equal(transcript.finish(result()), "\n\n_cloud gpt-4o_\n");
  });

  it("shows the reply when nothing streamed, and the rest when the stream stopped short", () => {
    assert.equal(
      new Transcript("a", "debug").finish(
        result({ text: "Guard it.", backend: "local", model: "gemma", reason: "no API key" }),
      ),
      "Guard it.\n\n_local gemma — no API key_\n",
    );
    const short = new Transcript("b", "explain");
    short.chunk({ id: "b", task: "explain", uri: URI, text: "It returns" });
    assert.equal(short.finish(result()), " the size.\n\n_cloud gpt-4o_\n");
  });

  it("shows the notice before the reply, not again in the footer", () => {
    const transcript = new Transcript("n", "explain");
    const notice = "No cloud API key is set (OPENAI_API_KEY). Explain runs on the local model.";
    assert.equal(transcript.chunk({ id: "n", task: "explain", uri: URI, text: "", notice }), `> ${notice}\n\n`);
    assert.equal(transcript.chunk({ id: "n", task: "explain", uri: URI, text: "It sums." }), "It sums.");
    const done = result({ text: "It sums.", backend: "local", model: "gemma", reason: notice });
    assert.equal(transcript.finish(done), "\n\n_local gemma_\n");
  });

  it("names the lines of a selection as VS Code does", () => {
    const heading = (start: [number, number], end: [number, number]) =>
      new Transcript("h", "explain").heading("inventory.py", {
        start: { line: start[0], character: start[1] },
        end: { line: end[0], character: end[1] },
      });
    assert.equal(heading([0, 0], [5, 0]), "\n## Explain — inventory.py:1-5\n\n");
    assert.equal(heading([0, 0], [4, 16]), "\n## Explain — inventory.py:1-5\n\n");
    assert.equal(heading([2, 0], [3, 0]), "\n## Explain — inventory.py:3\n\n");
    assert.equal(heading([2, 4], [2, 4]), "\n## Explain — inventory.py:3\n\n");
  });

  it("says when the command did not succeed, and lists the notes", () => {
    const transcript = new Transcript("c", "refactor");
    assert.equal(
      transcript.heading("a.py", { start: { line: 0, character: 0 }, end: { line: 0, character: 3 } }),
      "\n## Refactor — a.py:1\n\n",
    );
    assert.equal(
      transcript.finish(result({ text: "", outcome: "over_budget", notes: ["Daily budget reached."] })),
      "\n\n_over_budget · cloud gpt-4o_\n\n> Daily budget reached.\n",
    );
  });
});
