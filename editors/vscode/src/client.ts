// The language client: how the server is started, and what it forwards to the rest of the
// extension (ghost text, assist chunks, code-action commands).
import * as cp from "node:child_process";
import * as readline from "node:readline";
import type * as vscode from "vscode";
import {
  type CloseHandlerResult,
  ErrorAction,
  LanguageClient,
  type LanguageClientOptions,
  type Middleware,
  RevealOutputChannelOn,
  type ServerOptions,
} from "vscode-languageclient/node";
import { ASSIST_CHUNK, type AssistChunk, type Task, taskOf } from "./assist";
import { GHOST_TEXT, type GhostTextParams } from "./ghost";
import type { Exit } from "./restart";
import { LineTail, type Level, levelOf } from "./serverLog";
import { SECTION } from "./settings";

export const CLIENT_ID = "tandem";

/** What the client needs from the extension. */
export interface ClientHooks {
  /** The server command: executable, then arguments. */
  command: string[];
  env: NodeJS.ProcessEnv;
  cwd: string | undefined;
  outputChannel: vscode.LogOutputChannel;
  /** The server settings object (initializationOptions and workspace/configuration `tandem`). */
  settings(): Record<string, unknown>;
  /** The inline-completion middleware (ghost text). */
  provideInlineCompletionItems: NonNullable<Middleware["provideInlineCompletionItems"]>;
  /** A `tandem/ghostText` notification. */
  ghostText(params: GhostTextParams): void;
  /** A `tandem/assistChunk` notification. */
  assistChunk(params: AssistChunk): void;
  /** Run `tandem.explain` / `debug` / `refactor` chosen from a code action, with its arguments. */
  assistCommand(task: Task, args: unknown[]): Promise<unknown>;
  /** A server process started. */
  spawned(child: cp.ChildProcess): void;
  /** A server process ended, with its last stderr lines. */
  exited(exit: Exit, stderr: string[]): void;
  /** The connection closed unexpectedly: restart or not. */
  closed(): CloseHandlerResult | Promise<CloseHandlerResult>;
}

/** The language client of the extension (not started). */
export function createClient(hooks: ClientHooks): LanguageClient {
  let tail: LineTail | undefined; // the running process's
  const serverOptions: ServerOptions = () =>
    new Promise<cp.ChildProcess>((resolve, reject) => {
      const [file, ...args] = hooks.command;
      const child = cp.spawn(file, args, { env: hooks.env, cwd: hooks.cwd, stdio: "pipe" });
      const stderr = new LineTail();
      tail = stderr;
      child.once("spawn", () => {
        hooks.spawned(child);
        resolve(child);
      });
      child.once("error", reject);
      // "close", not "exit": by then its stderr has been read to the end
      child.once("close", (code, signal) => hooks.exited({ code, signal }, stderr.text));
    });
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: hooks.outputChannel,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    initializationOptions: () => hooks.settings(),
    stdioOptions: {
      stdout: (input, channel) => logLines(input, channel, undefined),
      stderr: (input, channel) => logLines(input, channel, tail),
    },
    errorHandler: {
      error: (_error, _message, count) => ({
        action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
      }),
      closed: () => hooks.closed(),
    },
    middleware: {
      provideInlineCompletionItems: hooks.provideInlineCompletionItems,
      executeCommand: (command, args, next) => {
        const task = taskOf(command);
        return task === undefined ? next(command, args) : hooks.assistCommand(task, args);
      },
      workspace: {
        configuration: async (params, token, next) => {
          if (params.items.every((item) => item.section === SECTION)) {
            return params.items.map(() => hooks.settings());
          }
          const answer = await next(params, token);
          return Array.isArray(answer)
            ? params.items.map((item, i) => (item.section === SECTION ? hooks.settings() : answer[i]))
            : answer;
        },
      },
    },
  };
  const client = new LanguageClient(CLIENT_ID, "tandem", serverOptions, clientOptions);
  client.onNotification(GHOST_TEXT, (params: GhostTextParams) => hooks.ghostText(params));
  client.onNotification(ASSIST_CHUNK, (params: AssistChunk) => hooks.assistChunk(params));
  return client;
}

function logLines(input: NodeJS.ReadableStream, channel: vscode.LogOutputChannel, tail: LineTail | undefined): void {
  let level: Level | undefined;
  readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on("line", (line: string) => {
    tail?.add(line);
    level = levelOf(line, level);
    channel[level](line);
  });
}
