// The extension against the real `tandem serve`: the extension's own LanguageClient (vscode-
// languageclient over vscode-jsonrpc/node) sends exactly what it sends in VS Code, with the
// `vscode` module replaced by the stand-in in ./stub. Needs the Python environment:
// TANDEM_PYTHON (default ../../.venv/bin/python from editors/vscode) with tandem importable.
import "./stub/register";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { type ExtensionContext } from "vscode";
import type { AssistResult } from "../src/assist";
import { type Tandem, activate, deactivate } from "../src/extension";
import { LAST_WORKING_COMMAND } from "../src/lifecycle";
import type { ServerStatus, UsageReport } from "../src/report";
import { serverKeys, serverSettings } from "../src/settings";
import { ScriptedCloud } from "./cloud";
import { CancellationTokenSource, InlineCompletionTriggerKind, Position, Selection, Uri, harness } from "./stub/vscode";

const EXTENSION = path.resolve(__dirname, "..", "..");
const REPO = path.resolve(EXTENSION, "..", "..");
const PYTHON = process.env.TANDEM_PYTHON || path.resolve(EXTENSION, "../../.venv/bin/python");
const PACKAGE = JSON.parse(fs.readFileSync(path.join(EXTENSION, "package.json"), "utf8"));
const PROPERTIES: Record<string, { default?: unknown }> = PACKAGE.contributes.configuration.properties;

const SOURCE =
  'import os\n\n\ndef list_python_files(folder):\n    """Return the paths of the Python files in folder."""\n';
const URI = "file:///work/sample.py";
const HELPERS =
  "import os\n\n\ndef file_size(path):\n    return os.path.getsize(path)\n\n\ndef average(values):\n    return sum(values) / len(values)\n";
const HELPERS_URI = "file:///work/helpers.py";
const KEY = "sk-test-not-a-real-key";
const COMMAND = [PYTHON, "-m", "lsp_server", "serve"];
const LOGGING_COMMAND = [PYTHON, "-m", "lsp_server", "--log-level", "INFO", "serve"];

interface Item {
  insertText: string;
  range: { start: Position; end: Position };
  command?: { command: string; arguments?: unknown[] };
}

function itemsOf(result: unknown): Item[] {
  if (result === null || result === undefined) {
    return [];
  }
  return (Array.isArray(result) ? result : (result as { items: Item[] }).items) as Item[];
}

function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise<T>((resolve, reject) => {
    const poll = async (): Promise<void> => {
      const value = await probe();
      if (value !== undefined && value !== false) {
        resolve(value);
      } else if (Date.now() > deadline) {
        reject(new Error(`timed out waiting for ${what}`));
      } else {
        setTimeout(() => void poll(), 50);
      }
    };
    void poll();
  });
}

function context(): ExtensionContext {
  const state = new Map<string, unknown>();
  return {
    subscriptions: [],
    globalState: {
      get: (key: string, fallback?: unknown) => (state.has(key) ? state.get(key) : fallback),
      update: (key: string, value: unknown) => Promise.resolve(void state.set(key, value)),
      keys: () => [...state.keys()],
      setKeysForSync: () => undefined,
    },
    extensionUri: Uri.file(EXTENSION),
    extensionPath: EXTENSION,
    extension: { packageJSON: PACKAGE },
    secrets: {
      get: (key: string) => Promise.resolve(harness.secrets.get(key)),
      store: (key: string, value: string) => Promise.resolve(void harness.secrets.set(key, value)),
      delete: (key: string) => Promise.resolve(void harness.secrets.delete(key)),
      onDidChange: () => ({ dispose() {} }),
    },
  } as unknown as ExtensionContext;
}

/** What VS Code does with an extension's subscriptions when it deactivates. */
function dispose(ctx: ExtensionContext): void {
  for (const subscription of ctx.subscriptions.splice(0)) {
    subscription.dispose();
  }
}

/** The selection of whole lines `first` to `last` (0-based) of a document. */
function lines(document: { lineAt(line: number): { text: string } }, first: number, last: number): Selection {
  return new Selection(new Position(first, 0), new Position(last, document.lineAt(last).text.length));
}

/** The 0-based line of a document that starts with `prefix`. */
function lineOf(document: { text: string }, prefix: string): number {
  const index = document.text.split("\n").findIndex((line) => line.startsWith(prefix));
  assert.ok(index >= 0, `no line starts with ${prefix}`);
  return index;
}

async function provide(tandem: Tandem, document: unknown, position: Position): Promise<Item[]> {
  const provider = harness.provider("InlineCompletionItemProvider");
  const token = new CancellationTokenSource().token;
  const context = { triggerKind: InlineCompletionTriggerKind.Invoke, selectedCompletionInfo: undefined };
  assert.ok(tandem.server.client?.isRunning());
  return itemsOf(await provider.provideInlineCompletionItems(document, position, context, token));
}

async function ready(tandem: Tandem): Promise<ServerStatus> {
  return until("the model to load", async () => {
    const status = await tandem.status.serverStatus().catch(() => undefined);
    return status?.model?.state === "ready" ? status : undefined;
  });
}

describe("the extension with the real tandem server", { timeout: 280_000 }, () => {
  let tandem: Tandem;
  let dataDir: string;
  let cloud: ScriptedCloud;
  const ctx = context();

  before(async () => {
    assert.ok(
      fs.existsSync(PYTHON),
      `no Python at ${PYTHON}: run "make test" in the repository (it creates .venv), or set TANDEM_PYTHON`,
    );
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tandem-vscode-"));
    cloud = await ScriptedCloud.start();
    process.env.TANDEM_DATA_DIR = dataDir;
    process.env.PYTHONPATH = [REPO, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
    delete process.env.OPENAI_API_KEY;
    delete process.env.OPENAI_BASE_URL;
    for (const [name, schema] of Object.entries(PROPERTIES)) {
      harness.configuration.set(`default:${name}`, schema.default);
    }
    // what a user writes in settings.json
    harness.configuration.set("tandem.server.command", COMMAND);
    harness.configuration.set("tandem.completion.multiline", "always");
    harness.configuration.set("tandem.completion.maxTokens", 80);
    harness.configuration.set("tandem.cloud.baseUrl", cloud.url);
    tandem = await activate(ctx);
  });

  after(async () => {
    await deactivate();
    dispose(ctx);
    await cloud.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("initializes: inline completion advertised, utf-16 positions, the user's settings sent", async () => {
    const client = tandem.server.client;
    assert.ok(client?.isRunning(), harness.output("tandem").text);
    const capabilities = client?.initializeResult?.capabilities;
    assert.ok(capabilities?.inlineCompletionProvider);
    assert.equal(capabilities?.positionEncoding, "utf-16");
    const status = await ready(tandem);
    // only the settings the user set travel, nested as the server reads them
    assert.deepEqual(
      serverSettings(serverKeys(Object.keys(PROPERTIES)), (key) => harness.configuration.get(`tandem.${key}`)),
      { completion: { multiline: "always", maxTokens: 80 }, cloud: { baseUrl: cloud.url } },
    );
    assert.equal((status as { settings?: { multiline?: string } }).settings?.multiline, "always");
  });

  it("streams ghost text: answers early with the first lines, re-triggers, then serves the whole suggestion", async () => {
    const document = harness.open(URI, "python", SOURCE);
    const cursor = document.positionAt(SOURCE.length);
    harness.executed.length = 0;
    const partial = await provide(tandem, document, cursor);
    assert.equal(partial.length, 1);
    assert.deepEqual([partial[0].range.start, partial[0].range.end], [cursor, cursor]);
    assert.ok(partial[0].insertText.trim(), "the first line of ghost text");
    assert.equal(partial[0].command, undefined, "a partial item: the response has not come yet");
    // the response follows: the extension asks VS Code to query again
    await until("the response", () => (tandem.ghost.streams.size === 0 ? true : undefined));
    assert.ok(harness.executed.some((call) => call.command === "editor.action.inlineSuggest.trigger"));
    const before = await tandem.status.serverStatus();
    const full = await provide(tandem, document, cursor);
    const after = await tandem.status.serverStatus();
    assert.equal(full.length, 1);
    assert.deepEqual([full[0].range.start, full[0].range.end], [cursor, cursor]);
    assert.ok(full[0].insertText.startsWith(partial[0].insertText), `${full[0].insertText} / ${partial[0].insertText}`);
    assert.ok(full[0].insertText.length > partial[0].insertText.length, "the ghost text grew");
    assert.equal(full[0].command?.command, "tandem.accepted");
    assert.equal(after?.counters?.cacheHits, (before?.counters?.cacheHits ?? 0) + 1, "the repeat came from the cache");
    assert.equal(after?.counters?.generations, before?.counters?.generations);
  });

  it("draws the status bar from tandem.status and tandem.usage", async () => {
    const usage = (await tandem.status.usage()) as UsageReport;
    const today = usage.periods?.today;
    assert.ok(today && today.promptTokens > 0, JSON.stringify(usage));
    assert.ok(usage.totals.some((row) => row.kind === "completion" && row.backend === "local"));
    for (const row of usage.totals) {
      for (const field of ["backend", "model", "kind", "requests", "promptTokens", "completionTokens", "costUsd"]) {
        assert.ok(field in row, `usage rows have ${field}`);
      }
    }
    await tandem.status.refresh();
    const status = await tandem.status.serverStatus();
    assert.ok(status?.model?.name);
    assert.equal(typeof status?.backends?.cloud?.configured, "boolean");
    const item = tandem.status.item;
    assert.match(item.text, /^\$\(sparkle\) \S/);
    assert.ok(item.text.includes(" · local · "), item.text);
    assert.match(item.text, / · \d+(\.\d)?k? tok · \$0\.00$/);
    assert.equal(item.command, "tandem.menu");
    const label = item.accessibilityInformation?.label ?? "";
    assert.ok(label.startsWith("tandem: ") && label.includes("tokens today"), label);
    assert.doesNotMatch(label, /[*`\\]|\$\(/, "plain text: no Markdown, no icons");
  });

  it("shows usage and status pages", async () => {
    await harness.commands.get("tandem.showUsage")?.();
    const pages = harness.contentProviders.get("tandem");
    const usage: string = pages.provideTextDocumentContent(Uri.parse("tandem:/usage.md"));
    assert.match(usage, /^# tandem usage/);
    assert.match(usage, /\| local \| .+ \| completion \| \d+ \|/);
    await harness.commands.get("tandem.showStatus")?.();
    const status = JSON.parse(pages.provideTextDocumentContent(Uri.parse("tandem:/status.json")));
    assert.equal(status.model.state, "ready");
    assert.ok(status.counters.inlineRequests >= 2);
  });

  it("pauses completions in the client", async () => {
    const document = harness.documents[0];
    const before = (await tandem.status.serverStatus())?.counters?.inlineRequests;
    await harness.commands.get("tandem.toggle")?.();
    assert.ok(tandem.status.item.text.includes("paused"));
    assert.deepEqual(await provide(tandem, document, document.positionAt(5)), []);
    assert.equal(
      (await tandem.status.serverStatus())?.counters?.inlineRequests,
      before,
      "no request reached the server",
    );
    await harness.commands.get("tandem.toggle")?.();
    assert.ok(!tandem.status.item.text.includes("paused"));
  });

  it("passes the API key from secret storage through the server's environment, never settings", async () => {
    harness.inputs.push(KEY);
    const old = tandem.server.process;
    await harness.commands.get("tandem.setApiKey")?.();
    const pid = tandem.server.process?.pid;
    assert.ok(pid && tandem.server.process !== old);
    const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    assert.ok(environ.includes(`OPENAI_API_KEY=${KEY}`));
    assert.equal(harness.secrets.get("tandem.openaiApiKey"), KEY);
    assert.ok(![...harness.configuration.values()].includes(KEY));
    const status = await ready(tandem);
    assert.equal(status.backends?.cloud?.configured, true);
    await tandem.status.refresh();
    assert.ok(tandem.status.item.text.includes(" · local+cloud · "), tandem.status.item.text);
  });

  it("explains the selection in the cloud, streaming the reply into the Assist channel", async () => {
    const document = harness.open(HELPERS_URI, "python", HELPERS);
    const editor = harness.activeTextEditor;
    assert.ok(editor);
    editor.selection = lines(document, 3, 4);
    const reply = "`file_size` returns the size of the file at `path` in bytes, from `os.path.getsize`.";
    cloud.replies.push(reply);
    const result = (await tandem.assist.run("explain")) as AssistResult;
    assert.equal(result.backend, "cloud");
    assert.equal(result.text, reply);
    assert.equal(cloud.seen.at(-1)?.authorization, `Bearer ${KEY}`);
    assert.ok(cloud.seen.at(-1)?.body.messages?.some((m) => m.content.includes("os.path.getsize(path)")));
    const output = harness.output("tandem: Assist").text;
    assert.ok(output.includes("## Explain — helpers.py:4-5\n\n" + reply), output);
    assert.match(output, /_cloud gpt-4o_/);
    assert.equal(document.text, HELPERS);
    await tandem.status.refresh();
    assert.match(tandem.status.item.text, / · (<\$0\.01|\$0\.\d\d)$/);
    assert.doesNotMatch(tandem.status.item.text, / · \$0\.00$/, "today's cloud cost");
  });

  it("runs a code action's debug command through the same streaming view", async () => {
    const document = harness.documents.find((doc) => doc.uri.toString() === HELPERS_URI);
    assert.ok(document);
    cloud.replies.push("`values` may be empty: guard it before dividing.");
    const range = { start: { line: 7, character: 0 }, end: { line: 8, character: 35 } };
    const diagnostics = ["line 9: error: division by zero when values is empty (test)"];
    const command = harness.commands.get("tandem.debug");
    assert.ok(command, "the language client registers the server's commands");
    const result = (await command({ uri: HELPERS_URI, range, diagnostics })) as AssistResult;
    assert.equal(result.text, "`values` may be empty: guard it before dividing.");
    assert.ok(
      cloud.seen.at(-1)?.body.messages?.some((m) => m.content.includes("division by zero when values is empty")),
    );
    assert.ok(harness.output("tandem: Assist").text.includes("## Debug — helpers.py:8-9\n\n`values` may be empty"));
  });

  it("refactors: the server applies the edit through workspace/applyEdit", async () => {
    const document = harness.documents.find((doc) => doc.uri.toString() === HELPERS_URI);
    assert.ok(document && harness.activeTextEditor?.document === document);
    harness.activeTextEditor.selection = lines(document, 3, 4);
    const code = "def file_size(path):\n    return os.stat(path).st_size";
    cloud.replies.push("```python\n" + code + "\n```");
    harness.inputs.push("use os.stat");
    const version = document.version;
    const result = (await tandem.assist.run("refactor")) as AssistResult;
    assert.equal(result.code?.trimEnd(), code);
    assert.equal(result.applied, true, JSON.stringify(result.notes));
    assert.ok(cloud.seen.at(-1)?.body.messages?.some((m) => m.content.includes("use os.stat")));
    assert.equal(
      document.text,
      HELPERS.replace("    return os.path.getsize(path)", "    return os.stat(path).st_size"),
    );
    assert.ok(document.version > version);
  });

  it("refactors with a diff first when tandem.refactor.showDiff is on: the server does not apply, the user does", async () => {
    harness.configure({ "tandem.refactor.showDiff": true });
    const document = harness.documents.find((doc) => doc.uri.toString() === HELPERS_URI);
    assert.ok(document && harness.activeTextEditor);
    const average = lineOf(document, "def average");
    harness.activeTextEditor.selection = lines(document, average, average + 1);
    const code = "def average(values):\n    return sum(values) / len(values) if values else 0.0";
    cloud.replies.push("```python\n" + code + "\n```");
    harness.inputs.push("return 0.0 for no values");
    harness.choices.push("Apply");
    harness.executed.length = 0;
    const original = document.text;
    const result = (await tandem.assist.run("refactor")) as AssistResult;
    assert.equal(result.applied, false, "apply: false was sent, the server left the document alone");
    const diff = harness.executed.find((call) => call.command === "vscode.diff");
    assert.ok(diff, "a diff was shown");
    const proposal: string = harness.contentProviders.get("tandem").provideTextDocumentContent(diff.args[1] as Uri);
    assert.equal(
      proposal,
      original.replace(
        "    return sum(values) / len(values)",
        `    return sum(values) / len(values) if values else 0.0`,
      ),
    );
    assert.equal(document.text, proposal, "applied by the extension after Apply");
    assert.ok(tandem.server.process, "a client-only setting did not restart the server");
  });

  it("sends other settings to the running server as workspace/didChangeConfiguration, without a restart", async () => {
    const old = tandem.server.process;
    harness.configure({ "tandem.completion.multiline": "never" });
    const status = await until("the new settings", async () => {
      const current = (await tandem.status.serverStatus().catch(() => undefined)) as
        { settings?: { multiline?: string } } | undefined;
      return current?.settings?.multiline === "never" ? current : undefined;
    });
    assert.equal(status.settings?.multiline, "never");
    assert.equal(tandem.server.process, old, "the same server process");
    assert.ok(harness.output("tandem").text.includes("tandem settings changed: sending them to the server"));
  });

  it("does not restart for the API key it already has", async () => {
    const old = tandem.server.process;
    harness.inputs.push(KEY);
    await harness.commands.get("tandem.setApiKey")?.();
    assert.equal(tandem.server.process, old);
    assert.ok(harness.messages.some((m) => m.text === "tandem: API key stored."));
  });

  it("restarts the server when tandem.server.command changes, and remembers the command that worked", async () => {
    const old = tandem.server.process;
    harness.configure({ "tandem.server.command": LOGGING_COMMAND });
    await until("the new server", () =>
      tandem.server.process !== old && tandem.server.client?.isRunning() ? true : undefined,
    );
    assert.deepEqual(tandem.server.process?.spawnargs, LOGGING_COMMAND);
    assert.deepEqual(ctx.globalState.get(LAST_WORKING_COMMAND), LOGGING_COMMAND);
  });

  it("keeps the running server when a new command cannot be found, and says so", async () => {
    const old = tandem.server.process;
    harness.messages.length = 0;
    harness.configure({ "tandem.server.command": ["/nonexistent/bin/tandem", "serve"] });
    const warning = await until("the warning", () => harness.messages.find((m) => m.kind === "warning"));
    assert.equal(
      warning.text,
      `tandem: cannot find the server executable "/nonexistent/bin/tandem"; using the last command that worked: ` +
        `${LOGGING_COMMAND.join(" ")}; the server keeps running.`,
    );
    assert.equal(tandem.server.process, old);
    assert.ok(tandem.server.client?.isRunning());
  });

  it("in a remote window, where VS Code drops the User value of tandem.server.command, keeps the command that worked", async () => {
    const PATH = process.env.PATH;
    harness.remoteName = "ssh-remote";
    // the remote has no `tandem` on its PATH
    process.env.PATH = (PATH ?? "")
      .split(path.delimiter)
      .filter((dir) => !fs.existsSync(path.join(dir, "tandem")))
      .join(path.delimiter);
    try {
      const old = tandem.server.process;
      harness.messages.length = 0;
      // what code-server does when the user adds a setting: the User value of the
      // machine-overridable tandem.server.command is no longer there
      harness.configure({ "tandem.server.command": undefined, "tandem.completion.debounceMs": 100 });
      const warning = await until("the warning", () => harness.messages.find((m) => m.kind === "warning"));
      assert.ok(
        warning.text.startsWith(
          'tandem: cannot find the server executable "tandem" (in a remote window VS Code reads tandem.server.command ' +
            "from the Remote or Workspace settings, not from User settings); using the last command that worked: " +
            LOGGING_COMMAND.join(" "),
        ),
        warning.text,
      );
      await until("the new settings", async () => {
        const status = (await tandem.status.serverStatus()) as { settings?: { debounceMs?: unknown } } | undefined;
        return status?.settings?.debounceMs === 100 ? true : undefined;
      });
      assert.equal(tandem.server.process, old, "no restart");

      await harness.commands.get("tandem.restart")?.();
      assert.ok(tandem.server.process !== old && tandem.server.client?.isRunning(), "tandem: Restart Server");
      assert.deepEqual(tandem.server.process?.spawnargs, LOGGING_COMMAND, "with the last command that worked");

      // a Workspace value is honoured in a remote window: the server restarts with it
      const restarted = tandem.server.process;
      harness.configure({ "workspace:tandem.server.command": COMMAND });
      await until("the Workspace's command", () =>
        tandem.server.process !== restarted && tandem.server.client?.isRunning() ? true : undefined,
      );
      assert.deepEqual(tandem.server.process?.spawnargs, COMMAND);
    } finally {
      harness.remoteName = undefined;
      process.env.PATH = PATH;
      // the User value back, with no change event: no restart
      harness.configuration.delete("workspace:tandem.server.command");
      harness.configuration.set("tandem.server.command", COMMAND);
    }
  });

  it("goes back to the last command that worked when a new one stops before it is ready", async () => {
    const old = tandem.server.process;
    const crash = "import sys; sys.stderr.write('RuntimeError: no such model\\n'); sys.exit(3)";
    harness.messages.length = 0;
    try {
      harness.configure({ "tandem.server.command": [PYTHON, "-c", crash] });
      const warning = await until("the warning", () => harness.messages.find((m) => m.kind === "warning"));
      assert.match(warning.text, /stopped before it was ready \(exit code 3\): RuntimeError: no such model/);
      assert.ok(warning.text.endsWith(`Started the last command that worked instead: ${COMMAND.join(" ")}.`));
      await until("the server", () => (tandem.server.client?.isRunning() ? true : undefined));
      assert.ok(tandem.server.process !== old);
      assert.deepEqual(tandem.server.process?.spawnargs, COMMAND);
      // (vscode-languageclient shows its own "couldn't create connection" error for the failed start)
      assert.ok(
        !harness.messages.some((m) => m.kind === "error" && m.text.startsWith("tandem: ")),
        JSON.stringify(harness.messages),
      );
    } finally {
      harness.configuration.set("tandem.server.command", COMMAND);
    }
  });

  it("restarts the server when it dies, three times, then stops and says why", async () => {
    for (let crash = 1; crash <= 4; crash++) {
      const server = tandem.server.process;
      assert.ok(server?.pid);
      server.kill("SIGKILL");
      if (crash <= 3) {
        await until(`restart ${crash}`, () =>
          tandem.server.process !== server && tandem.server.client?.isRunning() ? true : undefined,
        );
        assert.ok(harness.output("tandem").text.includes(`restarting (${crash} of 3)`));
      }
    }
    await until("the extension to give up", () => (tandem.status.item.text === "$(error) tandem" ? true : undefined));
    const error = harness.messages.find((m) => m.kind === "error" && m.text.includes("will not be restarted"));
    assert.ok(error, JSON.stringify(harness.messages));
    assert.match(error.text, /stopped 4 times in 3 minutes \(killed by SIGKILL\)/);
    assert.equal(tandem.status.item.command, "tandem.showLog");
    assert.deepEqual(error.actions, ["Show Log", "Restart"]);
  });
});

describe("a server that cannot start", { timeout: 60_000 }, () => {
  it("says why, from the server's last words and exit code", async () => {
    const crash = "import sys; sys.stderr.write('RuntimeError: cannot load the model\\n'); sys.exit(3)";
    harness.configuration.set("tandem.server.command", [PYTHON, "-c", crash]);
    harness.messages.length = 0;
    const ctx = context();
    const tandem = await activate(ctx);
    try {
      const error = harness.messages.find(
        (m) => m.kind === "error" && m.text.startsWith("tandem: the server stopped before"),
      );
      assert.ok(error, JSON.stringify(harness.messages));
      assert.match(error.text, /\(exit code 3\): RuntimeError: cannot load the model/);
      assert.equal(tandem.status.item.text, "$(error) tandem");
      assert.equal(tandem.status.item.command, "tandem.showLog");
    } finally {
      await deactivate();
      dispose(ctx);
    }
  });

  it("points to the install instructions when the executable is missing", async () => {
    harness.configuration.set("tandem.server.command", ["/nonexistent/bin/tandem", "serve"]);
    harness.messages.length = 0;
    harness.executed.length = 0;
    harness.choices.push("How to Install");
    const ctx = context();
    const tandem = await activate(ctx);
    try {
      const error = harness.messages.find((m) => m.kind === "error");
      assert.ok(
        error?.text.includes('cannot find the server executable "/nonexistent/bin/tandem"'),
        JSON.stringify(harness.messages),
      );
      assert.deepEqual(error?.actions, ["How to Install", "Open Settings"]);
      assert.equal(tandem.server.process, undefined);
      await until("the README", () => harness.executed.find((call) => call.command === "markdown.showPreview"));
      const readme = harness.executed.find((call) => call.command === "markdown.showPreview")?.args[0] as Uri;
      assert.equal(readme.path, path.join(EXTENSION, "README.md"));
    } finally {
      await deactivate();
      dispose(ctx);
    }
  });
});
