import "./stub/register";
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { provideStreaming } from "../src/ghostText";
import { GhostStreams, type GhostTextParams, ghostKey } from "../src/ghost";
import { CancellationTokenSource, InlineCompletionItem, Position, Range, TextDocument, Uri } from "./stub/vscode";

const URI = "file:///work/a.py";
const AT = { line: 3, character: 4 };
const KEY = ghostKey(URI, 7, AT);

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(error: unknown): void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function note(text: string, version = 7, position = AT, uri = URI): GhostTextParams {
  return { uri, version, position, text };
}

describe("GhostStreams", () => {
  it("answers with the response when it comes first", async () => {
    const refreshed: string[] = [];
    const streams = new GhostStreams((key) => refreshed.push(key));
    const response = deferred<string[]>();
    const outcome = streams.request(
      KEY,
      response.promise,
      (r) => r.length > 0,
      () => assert.fail("not detached"),
    );
    response.resolve(["x = 1"]);
    assert.deepEqual(await outcome, { kind: "final", result: ["x = 1"] });
    assert.deepEqual(refreshed, []);
    assert.equal(streams.size, 0);
  });

  it("answers early with the first partial text, then refreshes as more comes and when the response does", async () => {
    const refreshed: string[] = [];
    const streams = new GhostStreams((key) => refreshed.push(key));
    const response = deferred<string[]>();
    let detached = false;
    const outcome = streams.request(
      KEY,
      response.promise,
      (r) => r.length > 0,
      () => {
        detached = true;
      },
    );
    streams.notify(note("for name in os.listdir(folder):"));
    assert.deepEqual(await outcome, { kind: "partial", text: "for name in os.listdir(folder):" });
    assert.ok(detached);
    assert.equal(streams.streaming(KEY), "for name in os.listdir(folder):");
    streams.notify(note("for name in os.listdir(folder):")); // the same text again: nothing new to show
    assert.deepEqual(refreshed, []);
    streams.notify(note("for name in os.listdir(folder):\n    yield name"));
    assert.deepEqual(refreshed, [KEY]);
    assert.equal(streams.streaming(KEY), "for name in os.listdir(folder):\n    yield name");
    response.resolve(["for name in os.listdir(folder):\n    yield name\n"]);
    await tick();
    assert.deepEqual(refreshed, [KEY, KEY], "the final text is fetched again, from the server's cache");
    assert.equal(streams.streaming(KEY), undefined);
    assert.equal(streams.size, 0);
  });

  it("does not refresh after an early answer when the request ends empty (superseded) or fails", async () => {
    const refreshed: string[] = [];
    const streams = new GhostStreams((key) => refreshed.push(key));
    for (const end of ["empty", "error"]) {
      const response = deferred<string[]>();
      const outcome = streams.request(
        KEY,
        response.promise,
        (r) => r.length > 0,
        () => undefined,
      );
      streams.notify(note("x"));
      assert.equal((await outcome).kind, "partial");
      if (end === "empty") {
        response.resolve([]);
      } else {
        response.reject(new Error("cancelled"));
      }
      await tick();
    }
    assert.deepEqual(refreshed, []);
    assert.equal(streams.size, 0);
  });

  it("ignores notifications for another version, position or document", async () => {
    const streams = new GhostStreams(() => undefined);
    const response = deferred<string[]>();
    const outcome = streams.request(
      KEY,
      response.promise,
      () => true,
      () => undefined,
    );
    streams.notify(note("a", 6));
    streams.notify(note("b", 7, { line: 3, character: 5 }));
    streams.notify(note("c", 7, AT, "file:///work/b.py"));
    streams.notify({ uri: URI, version: 7, position: AT, text: "" });
    response.resolve(["final"]);
    assert.deepEqual(await outcome, { kind: "final", result: ["final"] });
  });

  it("passes a failure through when nothing was shown yet", async () => {
    const streams = new GhostStreams(() => undefined);
    const response = deferred<string[]>();
    const outcome = streams.request(
      KEY,
      response.promise,
      () => true,
      () => undefined,
    );
    response.reject(new Error("connection closed"));
    await assert.rejects(outcome, /connection closed/);
  });
});

describe("the inline-completion middleware", () => {
  type Next = Parameters<typeof provideStreaming>[5];

  function setup(paused = false) {
    const streams = new GhostStreams(() => undefined);
    const busy: number[] = [];
    const hooks = { paused: () => paused, busy: (delta: 1 | -1) => busy.push(delta), streams };
    const document = new TextDocument(Uri.parse(URI), "python", "import os\n\n\ndef f(folder):\n");
    document.version = 7;
    const position = new Position(AT.line, AT.character);
    const context = { triggerKind: 1, selectedCompletionInfo: undefined } as unknown as vscode.InlineCompletionContext;
    return {
      streams,
      busy,
      hooks,
      document: document as unknown as vscode.TextDocument,
      position,
      at: position as unknown as vscode.Position,
      context,
    };
  }

  it("returns the partial text at the cursor, stops following VS Code's cancellation, answers a repeat locally", async () => {
    const { streams, busy, hooks, document, position, at, context } = setup();
    const response = deferred<InlineCompletionItem[]>();
    const sent: vscode.CancellationToken[] = [];
    const next: Next = (_d, _p, _c, token) => {
      sent.push(token);
      return response.promise as unknown as vscode.ProviderResult<vscode.InlineCompletionItem[]>;
    };
    const vscodeToken = new CancellationTokenSource();
    const first = provideStreaming(hooks, document, at, context, vscodeToken.token, next);
    streams.notify(note("for name in folder:"));
    const items = (await first) as unknown as InlineCompletionItem[];
    assert.equal(items.length, 1);
    assert.equal(items[0].insertText, "for name in folder:");
    assert.deepEqual(items[0].range, new Range(position, position));
    vscodeToken.cancel(); // VS Code moved on from its call: the request keeps streaming
    assert.equal(sent[0].isCancellationRequested, false);
    const repeat = await provideStreaming(hooks, document, at, context, new CancellationTokenSource().token, next);
    assert.equal(sent.length, 1, "no second request while the first streams");
    assert.equal((repeat as unknown as InlineCompletionItem[])[0].insertText, "for name in folder:");
    response.resolve([new InlineCompletionItem("for name in folder:\n    pass")]);
    await tick();
    assert.deepEqual(busy, [1, -1]);
  });

  it("cancels the request when VS Code cancels before anything was shown", async () => {
    const { hooks, document, at, context } = setup();
    const sent: vscode.CancellationToken[] = [];
    const response = deferred<InlineCompletionItem[]>();
    const next: Next = (_d, _p, _c, token) => {
      sent.push(token);
      return response.promise as unknown as vscode.ProviderResult<vscode.InlineCompletionItem[]>;
    };
    const vscodeToken = new CancellationTokenSource();
    const result = provideStreaming(hooks, document, at, context, vscodeToken.token, next);
    vscodeToken.cancel();
    assert.equal(sent[0].isCancellationRequested, true);
    response.resolve([]);
    assert.deepEqual(await result, []);
  });

  it("extends the selected completion-list item, over its range", async () => {
    const { streams, hooks, document, position, at } = setup();
    const selected = { range: new Range(new Position(3, 0), position), text: "os.listdir" };
    const context = { triggerKind: 1, selectedCompletionInfo: selected } as unknown as vscode.InlineCompletionContext;
    const response = deferred<InlineCompletionItem[]>();
    const next: Next = () => response.promise as unknown as vscode.ProviderResult<vscode.InlineCompletionItem[]>;
    const result = provideStreaming(hooks, document, at, context, new CancellationTokenSource().token, next);
    streams.notify(note("(folder)"));
    const [item] = (await result) as unknown as InlineCompletionItem[];
    assert.equal(item.insertText, "os.listdir(folder)");
    assert.equal(item.range, selected.range);
  });

  it("asks nothing of the server while paused", async () => {
    const { hooks, document, at, context } = setup(true);
    const next: Next = () => assert.fail("no request while paused");
    assert.equal(await provideStreaming(hooks, document, at, context, new CancellationTokenSource().token, next), null);
  });
});
