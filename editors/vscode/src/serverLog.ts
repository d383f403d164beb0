// The server's stderr: its log lines (Python logging format), and the last of them kept for
// saying why it died. No `vscode` import: unit-testable.

export type Level = "trace" | "debug" | "info" | "warn" | "error";

const LEVELS: Record<string, Level> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warn",
  ERROR: "error",
  CRITICAL: "error",
};
const RECORD = /^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

/**
 * The level of a stderr line: from a log record's level name, else the level of the record it
 * continues (a traceback belongs to the error above it); unknown output is a warning.
 */
export function levelOf(line: string, previous: Level | undefined): Level {
  const match = RECORD.exec(line);
  if (match) {
    return LEVELS[match[1]];
  }
  return previous ?? "warn";
}

/** The last lines the server wrote, for saying why it died. */
export class LineTail {
  private lines: string[] = [];

  constructor(readonly size = 20) {}

  /** Keep a line (blank ones are dropped). */
  add(line: string): void {
    if (line.trim()) {
      this.lines = [...this.lines, line].slice(-this.size);
    }
  }

  /** The kept lines, oldest first. */
  get text(): string[] {
    return [...this.lines];
  }
}
