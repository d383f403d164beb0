// Explain / debug / refactor: the command argument, and the transcript shown while the reply
// streams. No `vscode` import: unit-testable.
import type { Position } from "./ghost";

export const ASSIST_CHUNK = "tandem/assistChunk";

export type Task = "explain" | "debug" | "refactor";

export interface Range {
  start: Position;
  end: Position;
}

/** The one argument of `tandem.explain`, `tandem.debug` and `tandem.refactor`. */
export interface AssistArgs {
  uri: string;
  range: Range;
  id: string;
  instruction?: string;
  errorText?: string;
  /** Debug: the editor's problems in the range, "line 13: error: message (source)". */
  diagnostics?: string[];
  /** Refactor only: false asks the server not to apply the edit (the extension shows a diff first). */
  apply?: boolean;
}

/** What the server answers. */
export interface AssistResult {
  text: string;
  code: string | null;
  backend: string;
  model: string;
  reason: string | null;
  outcome: string;
  notes?: string[];
  /** Refactor: whether the server applied the edit (null when there was no code). */
  applied?: boolean | null;
}

/** Params of a `tandem/assistChunk` notification. */
export interface AssistChunk {
  id: string;
  task: string;
  uri: string;
  text: string;
  /** Why the command runs elsewhere than configured (e.g. on the local model): sent before the reply. */
  notice?: string;
}

/** A diagnostic as the debug command passes it on. */
export interface Problem {
  /** 0-based, as in VS Code. */
  line: number;
  severity: string;
  message: string;
  source?: string;
}

/** The server command of a task. */
export function serverCommand(task: Task): string {
  return `tandem.${task}`;
}

/** The task of a server command (`tandem.explain` → explain), or undefined for other commands. */
export function taskOf(command: string): Task | undefined {
  const task = command.startsWith("tandem.") ? command.slice("tandem.".length) : "";
  return task === "explain" || task === "debug" || task === "refactor" ? task : undefined;
}

/** A request id the server echoes in its chunks, unique within this window. */
export function assistId(now: number, sequence: number): string {
  return `vscode-${now.toString(36)}-${sequence}`;
}

/** What the user adds to a command besides the selection. */
export interface Extra {
  instruction?: string;
  errorText?: string;
  diagnostics?: string[];
  /** Refactor: show a diff first, so the server must not apply the edit. */
  preview?: boolean;
}

/** The command argument: empty extras are left out; `preview` sends `apply: false`. */
export function assistArgs(uri: string, range: Range, id: string, extra: Extra = {}): AssistArgs {
  const args: AssistArgs = { uri, range, id };
  if (extra.instruction?.trim()) {
    args.instruction = extra.instruction.trim();
  }
  if (extra.errorText?.trim()) {
    args.errorText = extra.errorText.trim();
  }
  if (extra.diagnostics?.length) {
    args.diagnostics = extra.diagnostics;
  }
  if (extra.preview) {
    args.apply = false;
  }
  return args;
}

/** Problems as the server takes them: "line 13: error: message (source)", lines 1-based. */
export function problemLines(problems: Problem[]): string[] {
  return problems.map(
    (p) => `line ${p.line + 1}: ${p.severity}: ${p.message.trim()}${p.source ? ` (${p.source})` : ""}`,
  );
}

/** The argument of a server command run from a code action: its uri and range, if it has them. */
export function codeActionTarget(args: unknown[]): { uri: string; range: Range; diagnostics?: string[] } | undefined {
  const [arg] = args;
  if (typeof arg !== "object" || arg === null) {
    return undefined;
  }
  const { uri, range, diagnostics } = arg as { uri?: unknown; range?: Range; diagnostics?: unknown };
  if (typeof uri !== "string" || typeof range?.start?.line !== "number" || typeof range?.end?.line !== "number") {
    return undefined;
  }
  const lines = Array.isArray(diagnostics) ? diagnostics.filter((d): d is string => typeof d === "string") : [];
  return lines.length ? { uri, range, diagnostics: lines } : { uri, range };
}

/** `text` with `[start, end)` (offsets) replaced by `code`. */
export function replaceRange(text: string, start: number, end: number, code: string): string {
  return text.slice(0, start) + code + text.slice(end);
}

const TITLES: Record<Task, string> = { explain: "Explain", debug: "Debug", refactor: "Refactor" };

/**
 * One command's reply as Markdown appended to the output channel: a heading, the chunks as
 * they stream, then the final text if the stream missed any of it, and how it was served.
 */
export class Transcript {
  private streamed = "";
  private notice: string | undefined;

  constructor(
    readonly id: string,
    readonly task: Task,
  ) {}

  /** The heading: task and lines, e.g. "## Explain — app.py:4-9"; a selection that ends at the start of a line
   * does not take that line (VS Code counts it so too). */
  heading(file: string, range: Range): string {
    const first = range.start.line + 1;
    const last = range.end.line > range.start.line && range.end.character === 0 ? range.end.line : range.end.line + 1;
    return `\n## ${TITLES[this.task]} — ${file}:${first === last ? first : `${first}-${last}`}\n\n`;
  }

  /** Text to append for a chunk notification (a notice as a quote, before the reply), or "" when it belongs to
   * another command. */
  chunk(params: AssistChunk): string {
    if (params?.id !== this.id) {
      return "";
    }
    if (typeof params.notice === "string" && params.notice) {
      this.notice = params.notice;
      return `> ${params.notice}\n\n`;
    }
    if (typeof params.text !== "string") {
      return "";
    }
    this.streamed += params.text;
    return params.text;
  }

  /** Text to append once the result arrives. */
  finish(result: AssistResult): string {
    let rest = "";
    if (!this.streamed) {
      rest = result.text;
    } else if (result.text.startsWith(this.streamed)) {
      rest = result.text.slice(this.streamed.length);
    }
    const served = `${result.backend}${result.model ? ` ${result.model}` : ""}`;
    const reason = result.reason && result.reason !== this.notice ? ` — ${result.reason}` : "";
    const footer = [`\n\n_${result.outcome === "ok" ? "" : `${result.outcome} · `}${served}${reason}_`];
    for (const note of result.notes ?? []) {
      footer.push(`> ${note}`);
    }
    return `${rest}${footer.join("\n\n")}\n`;
  }
}
