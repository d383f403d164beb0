// The extension: wires the server's lifecycle, the ghost text, the assist commands and the
// status bar item together and registers the commands. Thin by design: completions, routing,
// budgets and the ledger live in the server.
import * as vscode from "vscode";
import { AssistUi } from "./assistUi";
import { GhostText } from "./ghostText";
import { ServerLifecycle } from "./lifecycle";
import { Pages } from "./pages";
import { StatusItem } from "./statusItem";

/** The extension's parts, as `activate` returns them. */
export interface Tandem {
  server: ServerLifecycle;
  ghost: GhostText;
  assist: AssistUi;
  status: StatusItem;
}

let current: Tandem | undefined;

/** Called by VS Code on startup. */
export async function activate(context: vscode.ExtensionContext): Promise<Tandem> {
  const log = vscode.window.createOutputChannel("tandem", { log: true });
  const pages = new Pages();
  // the parts call each other only after activation, through these closures
  const ghost = new GhostText(
    (delta) => status.busy(delta),
    () => status.redraw(),
  );
  const server: ServerLifecycle = new ServerLifecycle(context, log, {
    features: {
      provideInlineCompletionItems: ghost.provide,
      ghostText: (params) => ghost.notify(params),
      assistChunk: (params) => assist.chunk(params),
      assistCommand: (task, args) => assist.codeAction(task, args),
    },
    phase: (phase, problem) => status.phase(phase, problem),
  });
  const status = new StatusItem(server, log, pages, () => ghost.isPaused);
  const assist: AssistUi = new AssistUi(server, log, pages, (delta) => status.busy(delta));
  const commands: [string, () => unknown][] = [
    ["tandem.explainSelection", () => assist.run("explain")],
    ["tandem.debugSelection", () => assist.run("debug")],
    ["tandem.refactorSelection", () => assist.run("refactor")],
    ["tandem.showUsage", () => status.showUsage()],
    ["tandem.showStatus", () => status.showStatus()],
    ["tandem.setApiKey", () => server.setApiKey()],
    ["tandem.toggle", () => ghost.toggle()],
    ["tandem.showLog", () => log.show()],
    ["tandem.restart", () => server.restart()],
    ["tandem.menu", () => status.menu()],
  ];
  context.subscriptions.push(
    log,
    pages,
    server,
    status,
    assist,
    ...commands.map(([id, run]) => vscode.commands.registerCommand(id, run)),
  );
  current = { server, ghost, assist, status };
  await server.start();
  return current;
}

/** Called by VS Code on shutdown: stop the server cleanly. */
export async function deactivate(): Promise<void> {
  await current?.server.stop();
  current = undefined;
}
