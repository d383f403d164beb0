// The status bar item: what the server is doing (from `tandem.status` and `tandem.usage`), its
// tooltip and menu, and the usage and status pages.
import * as vscode from "vscode";
import { describeError } from "./errors";
import type { Server } from "./lifecycle";
import type { Pages } from "./pages";
import { type ServerStatus, type UsageReport, type View, statusBar, usageMarkdown } from "./report";

const REFRESH_MS = 60_000;
const LOADING_POLL_MS = 2_000;
const SETTLE_MS = 5_000;

/** The status bar item and what it opens. */
export class StatusItem implements vscode.Disposable {
  readonly item: vscode.StatusBarItem;
  private view: View = { phase: "starting", paused: false, busy: false };
  private busyCount = 0;
  private refreshTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly server: Server,
    private readonly log: vscode.LogOutputChannel,
    private readonly pages: Pages,
    private readonly paused: () => boolean,
  ) {
    this.item = vscode.window.createStatusBarItem("tandem.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "tandem";
    this.item.show();
    this.render();
  }

  /** The server is starting, running, stopped or failed (with why). */
  phase(phase: View["phase"], problem?: string): void {
    if (phase === "starting") {
      this.setView({ phase, problem: undefined, status: undefined });
    } else if (phase === "running") {
      this.setView({ phase, problem: undefined });
      void this.refresh();
    } else if (phase === "failed") {
      this.setView({ phase, problem });
    } else if (this.view.phase !== "failed") {
      this.setView({ phase, status: undefined });
    }
    if (!this.active) {
      clearTimeout(this.refreshTimer);
    }
  }

  /** A request started (+1) or ended (-1): the item spins while any runs. */
  busy(delta: 1 | -1): void {
    this.busyCount = Math.max(0, this.busyCount + delta);
    this.setView({});
    if (this.busyCount === 0) {
      // the ledger changed: show today's tokens once the burst of requests is over
      this.scheduleRefresh(SETTLE_MS);
    }
  }

  /** Draw again (completions were paused or resumed). */
  redraw(): void {
    this.setView({});
  }

  /** The server's `tandem.status`, or undefined when it is not running. */
  async serverStatus(): Promise<ServerStatus | undefined> {
    return (await this.server.execute("tandem.status")) as ServerStatus | undefined;
  }

  /** The server's `tandem.usage`, or undefined when it is not running. */
  async usage(): Promise<UsageReport | undefined> {
    return (await this.server.execute("tandem.usage")) as UsageReport | undefined;
  }

  /** Fetch status and usage, redraw the item; poll while the model loads. */
  async refresh(): Promise<void> {
    clearTimeout(this.refreshTimer);
    try {
      const [status, usage] = await Promise.all([this.serverStatus(), this.usage()]);
      if (status !== undefined) {
        this.setView({ status, usage });
      }
      this.scheduleRefresh(status?.model?.state === "loading" ? LOADING_POLL_MS : REFRESH_MS);
    } catch (error) {
      this.log.debug(`status refresh failed: ${describeError(error)}`);
      this.scheduleRefresh(REFRESH_MS);
    }
  }

  /** Open today's, this month's and all-time usage. */
  async showUsage(): Promise<void> {
    const usage = await this.whenRunning(() => this.usage());
    if (usage === undefined) {
      return;
    }
    const uri = this.pages.set("/usage.md", usageMarkdown(usage));
    await vscode.commands.executeCommand("markdown.showPreview", uri);
    void this.refresh();
  }

  /** Open the server's status JSON. */
  async showStatus(): Promise<void> {
    const status = await this.whenRunning(() => this.serverStatus());
    if (status === undefined) {
      return;
    }
    const uri = this.pages.set("/status.json", `${JSON.stringify(status, null, 2)}\n`);
    const document = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(document, { preview: true });
  }

  /** The menu the item opens when all is well. */
  async menu(): Promise<void> {
    const entries: [string, string][] = [
      [
        this.paused() ? "$(play) Resume inline completions" : "$(debug-pause) Pause inline completions",
        "tandem.toggle",
      ],
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

  dispose(): void {
    clearTimeout(this.refreshTimer);
    this.item.dispose();
  }

  /** Whether a server is starting or running, so that polling it makes sense. */
  private get active(): boolean {
    return this.view.phase === "starting" || this.view.phase === "running";
  }

  private scheduleRefresh(ms: number): void {
    clearTimeout(this.refreshTimer);
    if (this.active) {
      this.refreshTimer = setTimeout(() => void this.refresh(), ms);
    }
  }

  private setView(change: Partial<View>): void {
    this.view = { ...this.view, ...change, paused: this.paused(), busy: this.busyCount > 0 };
    this.render();
  }

  private render(): void {
    const content = statusBar(this.view);
    this.item.text = content.text;
    const tooltip = new vscode.MarkdownString(content.tooltip);
    tooltip.supportThemeIcons = true;
    this.item.tooltip = tooltip;
    // without it VS Code reads out the text and the tooltip's Markdown source
    this.item.accessibilityInformation = { label: content.label };
    this.item.command = content.command;
    this.item.backgroundColor = content.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  private async whenRunning<T>(run: () => Promise<T | undefined>): Promise<T | undefined> {
    if (this.server.running() === undefined) {
      return undefined;
    }
    try {
      return await run();
    } catch (error) {
      void vscode.window.showErrorMessage(`tandem: ${describeError(error)}`);
      return undefined;
    }
  }
}
