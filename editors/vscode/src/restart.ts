// When the server dies: restart it a few times, then stop and say why. No `vscode` import.

/** Restarts allowed within a window of time; a crash beyond them stops the restarts. */
export class RestartPolicy {
  private crashes: number[] = [];

  constructor(
    readonly maxRestarts = 3,
    readonly windowMs = 3 * 60 * 1000,
  ) {}

  /** Record a crash at `now` (ms); whether to restart, and how many crashes are in the window. */
  crashed(now: number): { restart: boolean; crashes: number } {
    this.crashes = [...this.crashes.filter((time) => now - time < this.windowMs), now];
    return { restart: this.crashes.length <= this.maxRestarts, crashes: this.crashes.length };
  }

  /** Forget past crashes (the user restarted the server by hand). */
  reset(): void {
    this.crashes = [];
  }
}

/** How the server process ended. */
export interface Exit {
  code: number | null;
  signal: string | null;
}

/** The most telling line of the server's last output: the last error or exception, else the last line. */
export function lastError(lines: string[]): string | undefined {
  const telling = [...lines].reverse().find((line) => /error|exception|traceback|fatal|killed/i.test(line));
  return telling ?? lines[lines.length - 1];
}

function describe(exit: Exit | undefined): string {
  if (exit === undefined) {
    return "";
  }
  return exit.signal ? ` (killed by ${exit.signal})` : ` (exit code ${exit.code})`;
}

/** What the user reads when the server exits before it is ready. */
export function startFailedMessage(error: string, exit: Exit | undefined, stderr: string[]): string {
  const why = lastError(stderr) ?? error;
  return `the server stopped before it was ready${describe(exit)}: ${why.trim()} — see the log (tandem: Show Log).`;
}

/** What the user reads when the server stops for good. */
export function giveUpMessage(crashes: number, windowMs: number, exit: Exit | undefined, stderr: string[]): string {
  const minutes = Math.round(windowMs / 60000);
  const how = describe(exit);
  const why = lastError(stderr);
  return (
    `The tandem server stopped ${crashes} times in ${minutes} minutes${how} and will not be restarted.` +
    (why ? ` Last output: ${why.trim()}` : "") +
    " See the log (tandem: Show Log); fix the cause, then run tandem: Restart Server."
  );
}
