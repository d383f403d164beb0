// One server process and its language client: starting it, stopping it (killing it when it
// does not exit), and restarting it after a crash a few times before giving up.
import type { ChildProcess } from "node:child_process";
import { CloseAction, type CloseHandlerResult, type LanguageClient, State } from "vscode-languageclient/node";
import { type ClientHooks, createClient } from "./client";
import { describeError } from "./errors";
import type { View } from "./report";
import { type Exit, RestartPolicy, giveUpMessage, startFailedMessage } from "./restart";

/** What a connection needs from the lifecycle besides the command. */
export interface ConnectionHooks {
  /** What the client forwards to the rest of the extension, and the settings it sends. */
  client: Pick<
    ClientHooks,
    "provideInlineCompletionItems" | "ghostText" | "assistChunk" | "assistCommand" | "settings" | "outputChannel"
  >;
  /** The server is starting, running or stopped. */
  phase(phase: View["phase"]): void;
  /** The server crashed too often and stays down: why. */
  gaveUp(problem: string): void;
}

/** The running server, if any: one client and the process it started. */
export class Connection {
  client: LanguageClient | undefined;
  private child: ChildProcess | undefined;
  private exit: { exit: Exit; stderr: string[] } | undefined;
  private exitWaiters: (() => void)[] = [];
  private readonly restarts = new RestartPolicy();
  /** The client whose first start is under way. */
  private launching: LanguageClient | undefined;

  constructor(private readonly hooks: ConnectionHooks) {}

  /** The server process, while one runs. */
  get process(): ChildProcess | undefined {
    return this.child;
  }

  /** Start a server with `command`; why it failed, or undefined once it runs. */
  async start(command: string[], env: NodeJS.ProcessEnv, cwd: string | undefined): Promise<string | undefined> {
    this.hooks.phase("starting");
    this.hooks.client.outputChannel.info(`starting ${command.join(" ")}`);
    const client: LanguageClient = createClient({
      ...this.hooks.client,
      command,
      env,
      cwd,
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
      closed: () => this.closed(client),
    });
    this.client = client;
    client.onDidChangeState((event) => {
      if (client !== this.client) {
        return; // a client this connection already let go of
      }
      if (event.newState === State.Running) {
        this.hooks.phase("running");
      } else if (event.newState === State.Stopped) {
        this.hooks.phase("stopped");
      }
    });
    this.launching = client;
    try {
      await client.start();
    } catch (error) {
      await this.exited(1000);
      return startFailedMessage(describeError(error), this.exit?.exit, this.exit?.stderr ?? []);
    } finally {
      this.launching = undefined;
    }
    return undefined;
  }

  /** Stop the server; kill it if it does not exit by itself. Crash counting starts over. */
  async stop(): Promise<void> {
    this.restarts.reset();
    const client = this.client;
    this.client = undefined;
    if (client !== undefined && client.needsStop()) {
      try {
        await client.stop(2000);
      } catch (error) {
        this.hooks.client.outputChannel.warn(`stopping the server: ${describeError(error)}`);
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
    this.hooks.phase("stopped");
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

  private async closed(client: LanguageClient): Promise<CloseHandlerResult> {
    if (client !== this.client || client === this.launching) {
      // a failed start is reported by `start`'s caller, which may try another command
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    await this.exited(1000); // the process's exit status says why; it may come just after the pipe closes
    const { restart, crashes } = this.restarts.crashed(Date.now());
    const how = this.exit?.exit;
    if (restart) {
      this.hooks.client.outputChannel.warn(
        `the server stopped (exit ${how?.signal ?? how?.code ?? "unknown"}); restarting (${crashes} of ${this.restarts.maxRestarts})`,
      );
      this.hooks.phase("starting");
      return { action: CloseAction.Restart, handled: true };
    }
    this.hooks.gaveUp(giveUpMessage(crashes, this.restarts.windowMs, how, this.exit?.stderr ?? []));
    return { action: CloseAction.DoNotRestart, handled: true };
  }
}
