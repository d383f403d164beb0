// The extension: starts the server, draws the status bar, runs the commands. Thin by design:
// completions, routing, budgets and the ledger live in the server.
import * as fs from "node:fs";
import * as path from "node:path";
import type { ChildProcess } from "node:child_process";
import * as vscode from "vscode";
import {
  CloseAction,
  type CloseHandlerResult,
  ExecuteCommandRequest,
  type LanguageClient,
  State,
} from "vscode-languageclient/node";
import {
  type AssistChunk,
  type AssistResult,
  type Extra,
  type Problem,
  type Task,
  Transcript,
  assistArgs,
  assistId,
  codeActionTarget,
  problemLines,
  replaceRange,
  serverCommand as assistCommand,
} from "./assist";
import { createClient } from "./client";
import { findExecutable } from "./executable";
import { GhostStreams, ghostKey } from "./ghost";
import { type ServerStatus, type UsageReport, type View, statusBar, usageMarkdown } from "./report";
import { type Exit, RestartPolicy, giveUpMessage, startFailedMessage } from "./restart";
import { SECTION, serverCommand, serverEnv, serverKeys, serverSettings } from "./settings";

const API_KEY_SECRET = "tandem.openaiApiKey";
const PAGES = "tandem";
const REFRESH_MS = 60_000;
const LOADING_POLL_MS = 2_000;
const SETTLE_MS = 5_000;

let instance: Tandem | undefined;

/** Called by VS Code on startup. */
export async function activate(context: vscode.ExtensionContext): Promise<Tandem> {
  instance = new Tandem(context);
  context.subscriptions.push(instance);
  await instance.start();
  return instance;
}

/** Called by VS Code on shutdown: stop the server cleanly. */
export async function deactivate(): Promise<void> {
  await instance?.stop();
  instance = undefined;
}

/** Read-only virtual documents: usage, status, refactor proposals. */
class Pages implements vscode.TextDocumentContentProvider {
  private readonly texts = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.path) ?? "";
  }

  set(pagePath: string, text: string): vscode.Uri {
    const uri = vscode.Uri.from({ scheme: PAGES, path: pagePath });
    this.texts.set(uri.path, text);
    this.changed.fire(uri);
    return uri;
  }

  dispose(): void {
    this.changed.dispose();
  }
}

/** The extension's state: one language client, the status bar item, the output channels. */
export class Tandem implements vscode.Disposable {
  readonly streams: GhostStreams;
  client: LanguageClient | undefined;
  private readonly log: vscode.LogOutputChannel;
  private readonly assistOutput: vscode.OutputChannel;
  private readonly pages = new Pages();
  private paused = false;
  private readonly item: vscode.StatusBarItem;
  private readonly restarts = new RestartPolicy();
  private readonly disposables: vscode.Disposable[] = [];
  private readonly transcripts = new Map<string, Transcript>();
  private view: View = { phase: "starting", paused: false, busy: false };
  private busyCount = 0;
  private child: ChildProcess | undefined;
  private exit: { exit: Exit; stderr: string[] } | undefined;
  private exitWaiters: (() => void)[] = [];
  private refreshTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private assists = 0;
  /** The server keys among the contributed settings (`local.modelPath`, …). */
  private readonly keys: string[];

  constructor(private readonly context: vscode.ExtensionContext) {
    this.keys = serverKeys(Object.keys(context.extension.packageJSON.contributes.configuration.properties));
    this.log = vscode.window.createOutputChannel("tandem", { log: true });
    this.assistOutput = vscode.window.createOutputChannel("tandem: Assist", "markdown");
    this.item = vscode.window.createStatusBarItem("tandem.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "tandem";
    this.item.show();
    this.streams = new GhostStreams((key) => this.retrigger(key));
    const commands: [string, () => unknown][] = [
      ["tandem.explainSelection", () => this.assist("explain")],
      ["tandem.debugSelection", () => this.assist("debug")],
      ["tandem.refactorSelection", () => this.assist("refactor")],
      ["tandem.showUsage", () => this.showUsage()],
      ["tandem.showStatus", () => this.showStatus()],
      ["tandem.setApiKey", () => this.setApiKey()],
      ["tandem.toggle", () => this.toggle()],
      ["tandem.showLog", () => this.log.show()],
      ["tandem.restart", () => this.restart()],
      ["tandem.menu", () => this.menu()],
    ];
    this.disposables.push(
      this.log,
      this.assistOutput,
      this.item,
      this.pages,
      vscode.workspace.registerTextDocumentContentProvider(PAGES, this.pages),
      ...commands.map(([id, run]) => vscode.commands.registerCommand(id, run)),
      vscode.workspace.onDidChangeConfiguration((event) => this.configurationChanged(event)),
    );
    this.render();
  }

  /** Start the server, or say why it cannot start. */
  async start(): Promise<void> {
    const config = vscode.workspace.getConfiguration(SECTION);
    const parsed = serverCommand(config.get("server.command"));
    if ("problem" in parsed) {
      this.fail(parsed.problem, ["Open Settings"]);
      return;
    }
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const env = serverEnv(process.env, await this.context.secrets.get(API_KEY_SECRET));
    const [executable] = parsed.command;
    if (findExecutable(executable, env, cwd ?? process.cwd()) === undefined) {
      this.fail(
        `cannot find the server executable "${executable}". Install tandem (pip install -e '.[default-model]' ` +
          `in a checkout, or make demo) and point the setting tandem.server.command at it.`,
        ["How to Install", "Open Settings"],
      );
      return;
    }
    this.setView({ phase: "starting", problem: undefined, status: undefined });
    this.log.info(`starting ${parsed.command.join(" ")}`);
    const client = createClient({
      command: parsed.command,
      env,
      cwd,
      outputChannel: this.log,
      streams: this.streams,
      settings: () => serverSettings(this.keys, (key) => userValue(vscode.workspace.getConfiguration(SECTION), key)),
      paused: () => this.paused,
      busy: (delta) => this.busy(delta),
      assistChunk: (params) => this.assistChunk(params),
      assistCommand: (task, args) => this.codeAction(task, args),
      spawned: (child) => {
        this.child = child;
        this.exit = undefined;
      },
      exited: (exit, stderr) => {
        this.exit = { exit, stderr };
        for (const wake of this.exitWaiters.splice(0)) {
          wake();
        }
      },
      closed: () => this.closed(),
    });
    this.client = client;
    client.onDidChangeState((event) => {
      if (event.newState === State.Running) {
        this.setView({ phase: "running", problem: undefined });
        void this.refresh();
      } else if (event.newState === State.Stopped && this.view.phase !== "failed") {
        this.setView({ phase: "stopped", status: undefined });
      }
    });
    try {
      await client.start();
    } catch (error) {
      await this.exited(1000);
      this.fail(startFailedMessage(message(error), this.exit?.exit, this.exit?.stderr ?? []), ["Show Log"]);
      return;
    }
    this.scheduleRefresh(REFRESH_MS);
  }

  /** Stop the server; kill it if it does not exit by itself. */
  async stop(): Promise<void> {
    clearTimeout(this.refreshTimer);
    const client = this.client;
    this.client = undefined;
    if (client !== undefined && client.needsStop()) {
      try {
        await client.stop(2000);
      } catch (error) {
        this.log.warn(`stopping the server: ${message(error)}`);
      }
    }
    const child = this.child;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      await this.exited(2000);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill();
      }
    }
    this.child = undefined;
  }

  /** Restart by hand: crash counting starts over. */
  async restart(): Promise<void> {
    this.restarts.reset();
    await this.stop();
    await this.start();
  }

  dispose(): void {
    clearTimeout(this.refreshTimer);
    clearTimeout(this.restartTimer);
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
  }

  /** The server's `tandem.status`, or undefined when it is not running. */
  async status(): Promise<ServerStatus | undefined> {
    return (await this.execute("tandem.status")) as ServerStatus | undefined;
  }

  /** The server's `tandem.usage`, or undefined when it is not running. */
  async usage(): Promise<UsageReport | undefined> {
    return (await this.execute("tandem.usage")) as UsageReport | undefined;
  }

  /** Fetch status and usage, redraw the status bar; poll while the model loads. */
  async refresh(): Promise<void> {
    clearTimeout(this.refreshTimer);
    try {
      const [status, usage] = await Promise.all([this.status(), this.usage()]);
      if (status !== undefined) {
        this.setView({ status, usage });
      }
      this.scheduleRefresh(status?.model?.state === "loading" ? LOADING_POLL_MS : REFRESH_MS);
    } catch (error) {
      this.log.debug(`status refresh failed: ${message(error)}`);
      this.scheduleRefresh(REFRESH_MS);
    }
  }

  /** The server process, while one runs. */
  get server(): ChildProcess | undefined {
    return this.child;
  }

  /** What the status bar shows now. */
  get statusBarItem(): vscode.StatusBarItem {
    return this.item;
  }

  private async execute(command: string, args: unknown[] = []): Promise<unknown> {
    const client = this.client;
    if (client === undefined || !client.isRunning()) {
      return undefined;
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  private scheduleRefresh(ms: number): void {
    clearTimeout(this.refreshTimer);
    if (this.client !== undefined) {
      this.refreshTimer = setTimeout(() => void this.refresh(), ms);
    }
  }

  private setView(change: Partial<View>): void {
    this.view = { ...this.view, ...change, paused: this.paused, busy: this.busyCount > 0 };
    this.render();
  }

  private render(): void {
    const content = statusBar(this.view);
    this.item.text = content.text;
    const tooltip = new vscode.MarkdownString(content.tooltip);
    tooltip.supportThemeIcons = true;
    this.item.tooltip = tooltip;
    this.item.command = content.command;
    this.item.backgroundColor = content.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  private busy(delta: 1 | -1): void {
    this.busyCount = Math.max(0, this.busyCount + delta);
    this.setView({});
    if (this.busyCount === 0) {
      // the ledger changed: show today's tokens once the burst of requests is over
      this.scheduleRefresh(SETTLE_MS);
    }
  }

  private fail(problem: string, actions: string[]): void {
    this.setView({ phase: "failed", problem });
    this.log.error(problem);
    void vscode.window.showErrorMessage(`tandem: ${problem}`, ...actions).then((choice) => {
      if (choice === "How to Install") {
        // vsce packages the README as readme.md
        const readme = ["README.md", "readme.md"].find((name) =>
          fs.existsSync(path.join(this.context.extensionPath, name)),
        );
        void vscode.commands.executeCommand(
          "markdown.showPreview",
          vscode.Uri.joinPath(this.context.extensionUri, readme ?? "README.md"),
        );
      } else if (choice === "Open Settings") {
        void vscode.commands.executeCommand("workbench.action.openSettings", "tandem.server.command");
      } else if (choice === "Show Log") {
        this.log.show();
      } else if (choice === "Restart") {
        void this.restart();
      }
    });
  }

  private exited(timeoutMs: number): Promise<void> {
    if (this.exit !== undefined) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.exitWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async closed(): Promise<CloseHandlerResult> {
    await this.exited(1000); // the process's exit status says why; it may come just after the pipe closes
    const { restart, crashes } = this.restarts.crashed(Date.now());
    const how = this.exit?.exit;
    if (restart) {
      this.log.warn(
        `the server stopped (exit ${how?.signal ?? how?.code ?? "unknown"}); restarting (${crashes} of ${this.restarts.maxRestarts})`,
      );
      this.setView({ phase: "starting", status: undefined });
      return { action: CloseAction.Restart, handled: true };
    }
    this.fail(giveUpMessage(crashes, this.restarts.windowMs, how, this.exit?.stderr ?? []), ["Show Log", "Restart"]);
    return { action: CloseAction.DoNotRestart, handled: true };
  }

  private configurationChanged(event: vscode.ConfigurationChangeEvent): void {
    const server = [...this.keys, "server.command"].some((key) => event.affectsConfiguration(`${SECTION}.${key}`));
    if (!server) {
      return;
    }
    // settings are read when the server starts: restart it, once for a burst of changes
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.log.info("tandem settings changed: restarting the server");
      void this.restart();
    }, 500);
  }

  private retrigger(key: string): void {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined || this.paused) {
      return;
    }
    const { document, selection } = editor;
    if (ghostKey(document.uri.toString(), document.version, selection.active) === key) {
      void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
    }
  }

  private toggle(): void {
    this.paused = !this.paused;
    if (this.paused) {
      void vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
    }
    this.setView({});
  }

  private async showUsage(): Promise<void> {
    const usage = await this.whenRunning(() => this.usage());
    if (usage === undefined) {
      return;
    }
    const uri = this.pages.set("/usage.md", usageMarkdown(usage));
    await vscode.commands.executeCommand("markdown.showPreview", uri);
    void this.refresh();
  }

  private async showStatus(): Promise<void> {
    const status = await this.whenRunning(() => this.status());
    if (status === undefined) {
      return;
    }
    const uri = this.pages.set("/status.json", `${JSON.stringify(status, null, 2)}\n`);
    const document = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(document, { preview: true });
  }

  /** The client if the server runs; else undefined, and the user is told. */
  private running(): LanguageClient | undefined {
    if (this.client?.isRunning()) {
      return this.client;
    }
    void vscode.window.showWarningMessage("tandem: the server is not running.", "Show Log").then((choice) => {
      if (choice) {
        this.log.show();
      }
    });
    return undefined;
  }

  private async whenRunning<T>(run: () => Promise<T | undefined>): Promise<T | undefined> {
    if (this.running() === undefined) {
      return undefined;
    }
    try {
      return await run();
    } catch (error) {
      void vscode.window.showErrorMessage(`tandem: ${message(error)}`);
      return undefined;
    }
  }

  private async setApiKey(): Promise<void> {
    const key = await vscode.window.showInputBox({
      title: "tandem: OpenAI API key",
      prompt:
        "Stored in VS Code's secret storage and passed to the server as OPENAI_API_KEY. Leave empty to remove it.",
      password: true,
      ignoreFocusOut: true,
    });
    if (key === undefined) {
      return;
    }
    if (key.trim()) {
      await this.context.secrets.store(API_KEY_SECRET, key.trim());
    } else {
      await this.context.secrets.delete(API_KEY_SECRET);
    }
    // the key reaches the server through its environment: only a new process sees it
    await this.restart();
    void vscode.window.showInformationMessage(
      key.trim() ? "tandem: API key stored; the server was restarted." : "tandem: API key removed.",
    );
  }

  private async menu(): Promise<void> {
    const entries: [string, string][] = [
      [this.paused ? "$(play) Resume inline completions" : "$(debug-pause) Pause inline completions", "tandem.toggle"],
      ["$(graph) Show usage", "tandem.showUsage"],
      ["$(info) Show status", "tandem.showStatus"],
      ["$(output) Show log", "tandem.showLog"],
      ["$(key) Set OpenAI API key", "tandem.setApiKey"],
      ["$(debug-restart) Restart server", "tandem.restart"],
    ];
    const picked = await vscode.window.showQuickPick(
      entries.map(([label, command]) => ({ label, command })),
      { title: "tandem" },
    );
    if (picked !== undefined) {
      await vscode.commands.executeCommand(picked.command);
    }
  }

  private assistChunk(params: AssistChunk): void {
    const transcript = this.transcripts.get(params?.id);
    const text = transcript?.chunk(params);
    if (text) {
      this.assistOutput.append(text);
    }
  }

  /** Explain, debug or refactor the selection (the current line when nothing is selected). */
  async assist(task: Task): Promise<AssistResult | undefined> {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined) {
      void vscode.window.showWarningMessage("tandem: open a file and select some code first.");
      return undefined;
    }
    const { document, selection } = editor;
    const range = selection.isEmpty ? document.lineAt(selection.active.line).range : selection;
    const extra: Extra = {};
    if (task === "refactor") {
      const instruction = await this.askInstruction();
      if (instruction === undefined) {
        return undefined;
      }
      extra.instruction = instruction;
    } else if (task === "debug") {
      const pasted = await vscode.window.showInputBox({
        title: "tandem: Debug",
        prompt: "Paste the error or stack trace (optional); the problems reported in the selection are sent too.",
        ignoreFocusOut: true,
      });
      if (pasted === undefined) {
        return undefined;
      }
      extra.errorText = pasted;
      extra.diagnostics = problemLines(problemsIn(document, range));
    }
    return this.runAssist(task, document, range, extra);
  }

  /** A server command chosen from a code action (the light bulb): shown like the palette's. */
  private async codeAction(task: Task, args: unknown[]): Promise<AssistResult | undefined> {
    const target = codeActionTarget(args);
    const document = vscode.workspace.textDocuments.find((doc) => doc.uri.toString() === target?.uri);
    const client = this.running();
    if (client === undefined) {
      return undefined;
    }
    if (target === undefined || document === undefined) {
      this.log.warn(`tandem.${task} from a code action without an open document: ${JSON.stringify(args)}`);
      return undefined;
    }
    const extra: Extra = { diagnostics: target.diagnostics };
    if (task === "refactor") {
      const instruction = await this.askInstruction();
      if (instruction === undefined) {
        return undefined;
      }
      extra.instruction = instruction;
    }
    return this.runAssist(task, document, client.protocol2CodeConverter.asRange(target.range), extra);
  }

  private askInstruction(): Thenable<string | undefined> {
    return vscode.window.showInputBox({
      title: "tandem: Refactor",
      prompt: "How should the selection change? (empty: make it clearer and simpler)",
      placeHolder: "e.g. use pathlib instead of os.path",
      ignoreFocusOut: true,
    });
  }

  private async runAssist(
    task: Task,
    document: vscode.TextDocument,
    range: vscode.Range,
    extra: Extra,
  ): Promise<AssistResult | undefined> {
    const client = this.running();
    if (client === undefined) {
      return undefined;
    }
    if (task === "refactor") {
      extra.preview = vscode.workspace.getConfiguration(SECTION).get<boolean>("refactor.showDiff", false);
    }
    const id = assistId(Date.now(), ++this.assists);
    const transcript = new Transcript(id, task);
    this.transcripts.set(id, transcript);
    const c2p = client.code2ProtocolConverter;
    const args = assistArgs(c2p.asUri(document.uri), c2p.asRange(range), id, extra);
    const version = document.version;
    this.assistOutput.append(transcript.heading(vscode.workspace.asRelativePath(document.uri), args.range));
    if (task !== "refactor") {
      this.assistOutput.show(true);
    }
    this.busy(1);
    let result: AssistResult;
    try {
      result = (await client.sendRequest(ExecuteCommandRequest.type, {
        command: assistCommand(task),
        arguments: [args],
      })) as AssistResult;
    } catch (error) {
      this.assistOutput.append(`\n\n_failed: ${message(error)}_\n`);
      void vscode.window.showErrorMessage(`tandem: ${task} failed: ${message(error)}`);
      return undefined;
    } finally {
      this.transcripts.delete(id);
      this.busy(-1);
    }
    this.assistOutput.append(transcript.finish(result));
    if (task === "refactor") {
      await this.refactored(document, range, version, result, extra.preview === true);
    }
    return result;
  }

  private async refactored(
    document: vscode.TextDocument,
    range: vscode.Range,
    version: number,
    result: AssistResult,
    preview: boolean,
  ): Promise<void> {
    const served = `${result.backend} ${result.model}${result.reason ? ` (${result.reason})` : ""}`;
    if (result.code === null) {
      this.assistOutput.show(true);
      void vscode.window.showWarningMessage(`tandem: no refactored code came back from ${served}; see tandem: Assist.`);
      return;
    }
    if (document.version !== version) {
      void vscode.window.showWarningMessage(
        "tandem: the file changed while the refactor was written; it was not applied.",
      );
      return;
    }
    if (!preview) {
      if (result.applied === false) {
        this.assistOutput.show(true);
        void vscode.window.showWarningMessage(
          `tandem: the refactor from ${served} was not applied; see tandem: Assist.`,
        );
      } else {
        void vscode.window.setStatusBarMessage(`tandem: refactored by ${served}`, 5000);
      }
      return;
    }
    const proposal = replaceRange(
      document.getText(),
      document.offsetAt(range.start),
      document.offsetAt(range.end),
      result.code,
    );
    const name = path.basename(document.uri.path);
    const proposalUri = this.pages.set(`/proposal/${Date.now().toString(36)}/${name}`, proposal);
    await vscode.commands.executeCommand("vscode.diff", document.uri, proposalUri, `${name} ↔ tandem refactor`, {
      preview: true,
    });
    const choice = await vscode.window.showInformationMessage(
      `tandem: apply the refactor from ${served}?`,
      "Apply",
      "Discard",
    );
    if (choice !== "Apply") {
      return;
    }
    if (document.version !== version) {
      void vscode.window.showWarningMessage(
        "tandem: the file changed since the request; the refactor was not applied.",
      );
      return;
    }
    const edit = new vscode.WorkspaceEdit();
    edit.replace(document.uri, range, result.code);
    if (!(await vscode.workspace.applyEdit(edit))) {
      void vscode.window.showErrorMessage("tandem: VS Code refused the edit.");
    }
  }
}

/** A setting's value if the user set it anywhere (folder, workspace or user), else undefined. */
function userValue(config: vscode.WorkspaceConfiguration, key: string): unknown {
  const inspected = config.inspect(key);
  return inspected?.workspaceFolderValue ?? inspected?.workspaceValue ?? inspected?.globalValue;
}

const SEVERITY = ["error", "warning", "info", "hint"];

function problemsIn(document: vscode.TextDocument, range: vscode.Range): Problem[] {
  return vscode.languages
    .getDiagnostics(document.uri)
    .filter((diagnostic) => diagnostic.range.intersection(range) !== undefined)
    .map((diagnostic) => ({
      line: diagnostic.range.start.line,
      severity: SEVERITY[diagnostic.severity] ?? "error",
      message: diagnostic.message,
      source: diagnostic.source,
    }));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
