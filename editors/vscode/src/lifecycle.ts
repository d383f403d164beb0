// The language server's lifecycle: which command starts it, when it restarts (its command or
// the API key in its environment changed), and what other settings changes do.
import * as fs from "node:fs";
import * as path from "node:path";
import type { ChildProcess } from "node:child_process";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  type LanguageClient,
} from "vscode-languageclient/node";
import { Connection, type ConnectionHooks } from "./connection";
import { describeError } from "./errors";
import { findExecutable } from "./executable";
import type { View } from "./report";
import {
  COMMAND_KEY,
  type CommandChoice,
  SECTION,
  chooseCommand,
  configured,
  sameCommand,
  serverCommand,
  serverEnv,
  serverKeys,
  serverSettings,
} from "./settings";

/** Where the OpenAI API key is kept in secret storage. */
export const API_KEY_SECRET = "tandem.openaiApiKey";
/** Where the last command that started the server is kept in `globalState`. */
export const LAST_WORKING_COMMAND = "tandem.lastWorkingCommand";
const SETTINGS_SETTLE_MS = 500;

/** What the other parts of the extension need from the server. */
export interface Server {
  /** Run a server command; undefined when the server is not running. */
  execute(command: string, args?: unknown[]): Promise<unknown>;
  /** The client if the server runs; else undefined, and the user is told. */
  running(): LanguageClient | undefined;
}

/** What the client forwards to the other parts, and where the server's phase is shown. */
export interface LifecycleHooks {
  features: Pick<
    ConnectionHooks["client"],
    "provideInlineCompletionItems" | "ghostText" | "assistChunk" | "assistCommand"
  >;
  phase(phase: View["phase"], problem?: string): void;
}

/**
 * One language client at a time. The server restarts only when its command or the API key in
 * its environment changes; other settings reach it as `workspace/didChangeConfiguration`, and
 * the server rebuilds what they change. Starts, stops and restarts run one after another.
 */
export class ServerLifecycle implements Server, vscode.Disposable {
  private readonly connection: Connection;
  /** The command and stored API key the running server was started with. */
  private started: { command: string[]; key: string | undefined } | undefined;
  /** The last command that started the server, in this window or an earlier one. */
  private lastWorking: string[] | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private settingsTimer: NodeJS.Timeout | undefined;
  private changed = { command: false, server: false };
  /** The server keys among the contributed settings (`local.modelPath`, …). */
  private readonly keys: string[];
  private readonly disposables: vscode.Disposable[];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
    private readonly hooks: LifecycleHooks,
  ) {
    this.keys = serverKeys(Object.keys(context.extension.packageJSON.contributes.configuration.properties));
    this.connection = new Connection({
      client: { ...hooks.features, outputChannel: log, settings: () => this.settings() },
      phase: (phase) => hooks.phase(phase),
      gaveUp: (problem) => this.fail(problem, ["Show Log", "Restart"]),
    });
    const saved: unknown = context.globalState.get(LAST_WORKING_COMMAND);
    const parsed = Array.isArray(saved) ? serverCommand(saved) : undefined;
    this.lastWorking = parsed !== undefined && "command" in parsed ? parsed.command : undefined;
    this.disposables = [
      vscode.workspace.onDidChangeConfiguration((event) => this.settingsChanged(event)),
      // the key may be set in another window: secret storage is shared
      context.secrets.onDidChange((event) => {
        if (event.key === API_KEY_SECRET) {
          void this.keyChanged();
        }
      }),
    ];
  }

  /** The language client, once one was started. */
  get client(): LanguageClient | undefined {
    return this.connection.client;
  }

  /** The server process, while one runs. */
  get process(): ChildProcess | undefined {
    return this.connection.process;
  }

  /** Start the server, or say why it cannot start. */
  start(): Promise<void> {
    return this.serially(() => this.launch());
  }

  /** Stop the server; kill it if it does not exit by itself. */
  stop(): Promise<void> {
    return this.serially(() => this.halt());
  }

  /** Restart by hand: crash counting starts over. */
  restart(): Promise<void> {
    return this.serially(() => this.relaunch());
  }

  async execute(command: string, args: unknown[] = []): Promise<unknown> {
    const client = this.client;
    if (client === undefined || !client.isRunning()) {
      return undefined;
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
  }

  running(): LanguageClient | undefined {
    if (this.client?.isRunning()) {
      return this.client;
    }
    this.tell("warning", "the server is not running.", ["Show Log"]);
    return undefined;
  }

  /** Ask for the OpenAI API key and keep it in secret storage; the server restarts to see it. */
  async setApiKey(): Promise<void> {
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
    const restarted = await this.keyChanged();
    void vscode.window.showInformationMessage(
      key.trim()
        ? `tandem: API key stored${restarted ? "; the server was restarted" : ""}.`
        : "tandem: API key removed.",
    );
  }

  dispose(): void {
    clearTimeout(this.settingsTimer);
    for (const disposable of this.disposables) {
      disposable.dispose();
    }
  }

  /** The server settings object, from the values the user set. */
  private settings(): Record<string, unknown> {
    const config = vscode.workspace.getConfiguration(SECTION);
    return serverSettings(this.keys, (key) => userValue(config, key));
  }

  private serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async halt(): Promise<void> {
    this.started = undefined;
    await this.connection.stop();
  }

  private async relaunch(): Promise<void> {
    await this.halt();
    await this.launch();
  }

  /** Start with the configured command, else the last one that worked; say why when neither can. */
  private async launch(): Promise<void> {
    const key = await this.context.secrets.get(API_KEY_SECRET);
    const env = serverEnv(process.env, key);
    const choice = this.choose();
    if ("problem" in choice) {
      this.fail(choice.problem, choice.missing ? ["How to Install", "Open Settings"] : ["Open Settings"]);
      return;
    }
    if (choice.warning !== undefined) {
      this.tell("warning", `${choice.warning}.`, ["Open Settings"]);
    }
    let problem = await this.spawn(choice.command, env, key);
    const fallback = this.lastWorking;
    if (problem !== undefined && fallback !== undefined && !sameCommand(fallback, choice.command) && found(fallback)) {
      this.tell("warning", `${problem} Started the last command that worked instead: ${fallback.join(" ")}.`, [
        "Show Log",
        "Open Settings",
      ]);
      await this.halt();
      problem = await this.spawn(fallback, env, key);
    }
    if (problem !== undefined) {
      this.fail(problem, ["Show Log"]);
    }
  }

  /** Start a server with `command` and remember it when it runs; why it failed otherwise. */
  private async spawn(command: string[], env: NodeJS.ProcessEnv, key: string | undefined): Promise<string | undefined> {
    const problem = await this.connection.start(command, env, workspaceFolder());
    if (problem === undefined) {
      this.started = { command, key };
      this.lastWorking = command;
      await this.context.globalState.update(LAST_WORKING_COMMAND, command);
    }
    return problem;
  }

  private choose(): CommandChoice {
    return chooseCommand(
      configured(vscode.workspace.getConfiguration(SECTION).inspect(COMMAND_KEY)),
      this.lastWorking,
      found,
      vscode.env.remoteName !== undefined,
    );
  }

  private settingsChanged(event: vscode.ConfigurationChangeEvent): void {
    const command = event.affectsConfiguration(`${SECTION}.${COMMAND_KEY}`);
    const server = this.keys.some((key) => event.affectsConfiguration(`${SECTION}.${key}`));
    if (!command && !server) {
      return;
    }
    this.changed = { command: this.changed.command || command, server: this.changed.server || server };
    // once for a burst of changes
    clearTimeout(this.settingsTimer);
    this.settingsTimer = setTimeout(() => {
      const changed = this.changed;
      this.changed = { command: false, server: false };
      void this.serially(() => this.applySettings(changed));
    }, SETTINGS_SETTLE_MS);
  }

  /**
   * A new server command restarts the server (a command that cannot start leaves the running
   * one alone, with a warning); other settings go to the running server. A server that is not
   * running is started, to try the new settings.
   */
  private async applySettings(changed: { command: boolean; server: boolean }): Promise<void> {
    const client = this.client;
    if (client === undefined || !client.needsStop()) {
      this.log.info("tandem settings changed: starting the server");
      await this.relaunch();
      return;
    }
    if (changed.command) {
      const choice = this.choose();
      if (!("command" in choice) || !sameCommand(choice.command, this.started?.command)) {
        this.log.info("tandem.server.command changed: restarting the server");
        await this.relaunch();
        return;
      }
      if (choice.warning !== undefined) {
        this.tell("warning", `${choice.warning}; the server keeps running.`, ["Open Settings"]);
      }
    }
    if (changed.server) {
      this.log.info("tandem settings changed: sending them to the server");
      try {
        await client.sendNotification(DidChangeConfigurationNotification.type, {
          settings: { [SECTION]: this.settings() },
        });
      } catch (error) {
        this.log.warn(`sending the settings: ${describeError(error)}`);
      }
    }
  }

  /** Restart the server when the stored API key is not the one it was started with; whether it did. */
  private keyChanged(): Promise<boolean> {
    return this.serially(async () => {
      const key = await this.context.secrets.get(API_KEY_SECRET);
      if (key === this.started?.key) {
        return false;
      }
      // the key reaches the server through its environment: only a new process sees it
      this.log.info("the API key changed: restarting the server");
      await this.relaunch();
      return true;
    });
  }

  private fail(problem: string, actions: string[]): void {
    this.hooks.phase("failed", problem);
    this.tell("error", problem, actions);
  }

  /** Log a problem and show it with buttons; each button does what it says. */
  private tell(kind: "error" | "warning", problem: string, actions: string[]): void {
    this.log[kind === "error" ? "error" : "warn"](problem);
    const show = kind === "error" ? vscode.window.showErrorMessage : vscode.window.showWarningMessage;
    void show(`tandem: ${problem}`, ...actions).then((choice) => {
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
        void vscode.commands.executeCommand("workbench.action.openSettings", `${SECTION}.${COMMAND_KEY}`);
      } else if (choice === "Show Log") {
        this.log.show();
      } else if (choice === "Restart") {
        void this.restart();
      }
    });
  }
}

function workspaceFolder(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

/** Whether a command's executable exists, as the server would be started (the API key adds nothing to PATH). */
function found([executable]: readonly string[]): boolean {
  return findExecutable(executable, process.env, workspaceFolder() ?? process.cwd()) !== undefined;
}

/** A setting's value if the user set it anywhere (folder, workspace or user), else undefined. */
function userValue(config: vscode.WorkspaceConfiguration, key: string): unknown {
  const setting = configured(config.inspect(key));
  return setting.source === "default" ? undefined : setting.value;
}
