// A small stand-in for the `vscode` module: enough of the API for vscode-languageclient and the
// extension to run in plain Node against the real server. Documents, editors, input boxes and
// commands are driven by the tests through `harness`. Anything else throws, naming what is
// missing, so that a test never passes by silently skipping an API.
/* eslint-disable @typescript-eslint/no-explicit-any */
import * as path from "node:path";

export const version = "1.95.0";

export class Disposable {
  static from(...items: { dispose(): unknown }[]): Disposable {
    return new Disposable(() => items.forEach((item) => item.dispose()));
  }
  constructor(private readonly callOnDispose: () => unknown) {}
  dispose(): void {
    this.callOnDispose();
  }
}

type Listener<T> = (event: T) => unknown;

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  event = (listener: Listener<T>, thisArg?: unknown): Disposable => {
    const bound: Listener<T> = (event) => listener.call(thisArg, event);
    this.listeners.push(bound);
    return new Disposable(() => {
      this.listeners = this.listeners.filter((l) => l !== bound);
    });
  };
  fire(event: T): void {
    for (const listener of [...this.listeners]) {
      listener(event);
    }
  }
  dispose(): void {
    this.listeners = [];
  }
}

export class CancellationError extends Error {
  constructor() {
    super("Canceled");
    this.name = "Canceled";
  }
}

export class CancellationTokenSource {
  private readonly emitter = new EventEmitter<void>();
  readonly token = {
    isCancellationRequested: false,
    onCancellationRequested: this.emitter.event,
  };
  cancel(): void {
    if (!this.token.isCancellationRequested) {
      this.token.isCancellationRequested = true;
      this.emitter.fire(undefined);
    }
  }
  dispose(): void {
    this.emitter.dispose();
  }
}

export class Uri {
  private constructor(
    readonly scheme: string,
    readonly authority: string,
    readonly path: string,
    readonly query: string,
    readonly fragment: string,
  ) {}
  static parse(value: string): Uri {
    const match = /^([a-zA-Z][\w+.-]*):(?:\/\/([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$/.exec(value);
    if (!match) {
      throw new Error(`not a URI: ${value}`);
    }
    return new Uri(match[1], match[2] ?? "", decodeURIComponent(match[3]), match[4] ?? "", match[5] ?? "");
  }
  static file(fsPath: string): Uri {
    return new Uri("file", "", fsPath, "", "");
  }
  static from(parts: { scheme: string; authority?: string; path?: string; query?: string; fragment?: string }): Uri {
    return new Uri(parts.scheme, parts.authority ?? "", parts.path ?? "", parts.query ?? "", parts.fragment ?? "");
  }
  static joinPath(base: Uri, ...segments: string[]): Uri {
    return base.with({ path: path.posix.join(base.path, ...segments) });
  }
  get fsPath(): string {
    return this.path;
  }
  with(change: { scheme?: string; path?: string }): Uri {
    return new Uri(change.scheme ?? this.scheme, this.authority, change.path ?? this.path, this.query, this.fragment);
  }
  toString(): string {
    const encoded = this.path
      .split("/")
      .map((part) => encodeURIComponent(part))
      .join("/");
    const authority = this.scheme === "file" || this.authority ? `//${this.authority}` : "";
    return `${this.scheme}:${authority}${encoded}${this.query ? `?${this.query}` : ""}${this.fragment ? `#${this.fragment}` : ""}`;
  }
  toJSON(): unknown {
    return { scheme: this.scheme, path: this.path };
  }
}

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
  isEqual(other: Position): boolean {
    return this.line === other.line && this.character === other.character;
  }
  isBefore(other: Position): boolean {
    return this.line < other.line || (this.line === other.line && this.character < other.character);
  }
  isAfter(other: Position): boolean {
    return other.isBefore(this);
  }
  isBeforeOrEqual(other: Position): boolean {
    return !this.isAfter(other);
  }
  isAfterOrEqual(other: Position): boolean {
    return !this.isBefore(other);
  }
  translate(lineDelta = 0, characterDelta = 0): Position {
    return new Position(this.line + lineDelta, this.character + characterDelta);
  }
}

export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(start: Position | number, end: Position | number, endLine?: number, endCharacter?: number) {
    if (typeof start === "number") {
      this.start = new Position(start, end as number);
      this.end = new Position(endLine as number, endCharacter as number);
    } else {
      this.start = start;
      this.end = end as Position;
    }
  }
  get isEmpty(): boolean {
    return this.start.isEqual(this.end);
  }
  contains(position: Position): boolean {
    return this.start.isBeforeOrEqual(position) && this.end.isAfterOrEqual(position);
  }
  intersection(other: Range): Range | undefined {
    const start = this.start.isAfter(other.start) ? this.start : other.start;
    const end = this.end.isBefore(other.end) ? this.end : other.end;
    return start.isAfter(end) ? undefined : new Range(start, end);
  }
}

export class Selection extends Range {
  constructor(
    readonly anchor: Position,
    readonly active: Position,
  ) {
    super(anchor.isBefore(active) ? anchor : active, anchor.isBefore(active) ? active : anchor);
  }
}

export class SnippetString {
  constructor(readonly value = "") {}
}

export class MarkdownString {
  supportThemeIcons = false;
  isTrusted = false;
  constructor(public value = "") {}
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class InlineCompletionItem {
  command: unknown;
  constructor(
    public insertText: string | SnippetString,
    public range?: Range,
    command?: unknown,
  ) {
    this.command = command;
  }
}

export class InlineCompletionList {
  constructor(public items: InlineCompletionItem[]) {}
}

export class TextEdit {
  constructor(
    readonly range: Range,
    readonly newText: string,
  ) {}
  static replace(range: Range, newText: string): TextEdit {
    return new TextEdit(range, newText);
  }
}

export class WorkspaceEdit {
  readonly edits: [Uri, TextEdit][] = [];
  replace(uri: Uri, range: Range, newText: string): void {
    this.edits.push([uri, new TextEdit(range, newText)]);
  }
  set(uri: Uri, edits: (TextEdit | [TextEdit, unknown])[]): void {
    for (const edit of edits) {
      this.edits.push([uri, Array.isArray(edit) ? edit[0] : edit]);
    }
  }
  entries(): [Uri, TextEdit[]][] {
    const byUri = new Map<string, [Uri, TextEdit[]]>();
    for (const [uri, edit] of this.edits) {
      const entry = byUri.get(uri.toString()) ?? [uri, []];
      entry[1].push(edit);
      byUri.set(uri.toString(), entry);
    }
    return [...byUri.values()];
  }
}

/** Classes vscode-languageclient extends; the tests never build their instances. */
class Unused {
  constructor(..._args: unknown[]) {}
}
export class CompletionItem extends Unused {}
export class CodeLens extends Unused {}
export class CodeAction extends Unused {}
export class DocumentLink extends Unused {}
export class InlayHint extends Unused {}
export class CallHierarchyItem extends Unused {}
export class TypeHierarchyItem extends Unused {}
export class SymbolInformation extends Unused {}
export class Diagnostic extends Unused {}

export class CodeActionKind {
  static readonly Empty = new CodeActionKind("");
  static readonly QuickFix = new CodeActionKind("quickfix");
  static readonly Refactor = new CodeActionKind("refactor");
  static readonly RefactorExtract = new CodeActionKind("refactor.extract");
  static readonly RefactorInline = new CodeActionKind("refactor.inline");
  static readonly RefactorMove = new CodeActionKind("refactor.move");
  static readonly RefactorRewrite = new CodeActionKind("refactor.rewrite");
  static readonly Source = new CodeActionKind("source");
  static readonly SourceOrganizeImports = new CodeActionKind("source.organizeImports");
  static readonly SourceFixAll = new CodeActionKind("source.fixAll");
  static readonly Notebook = new CodeActionKind("notebook");
  constructor(readonly value: string) {}
  append(part: string): CodeActionKind {
    return new CodeActionKind(this.value ? `${this.value}.${part}` : part);
  }
}

export class Location {
  constructor(
    readonly uri: Uri,
    readonly range: Range,
  ) {}
}

export enum DiagnosticSeverity {
  Error = 0,
  Warning = 1,
  Information = 2,
  Hint = 3,
}
export enum StatusBarAlignment {
  Left = 1,
  Right = 2,
}
export enum ProgressLocation {
  SourceControl = 1,
  Window = 10,
  Notification = 15,
}
export enum LogLevel {
  Off = 0,
  Trace = 1,
  Debug = 2,
  Info = 3,
  Warning = 4,
  Error = 5,
}
export enum InlineCompletionTriggerKind {
  Invoke = 0,
  Automatic = 1,
}
export enum EndOfLine {
  LF = 1,
  CRLF = 2,
}

/** A text document held in memory; `harness.edit` changes it as typing would. */
export class TextDocument {
  version = 1;
  isClosed = false;
  isDirty = false;
  readonly eol = EndOfLine.LF;
  constructor(
    readonly uri: Uri,
    readonly languageId: string,
    public text: string,
  ) {}
  get fileName(): string {
    return this.uri.fsPath;
  }
  get isUntitled(): boolean {
    return this.uri.scheme === "untitled";
  }
  get lineCount(): number {
    return this.text.split("\n").length;
  }
  getText(range?: Range): string {
    return range ? this.text.slice(this.offsetAt(range.start), this.offsetAt(range.end)) : this.text;
  }
  offsetAt(position: Position): number {
    const lines = this.text.split("\n");
    let offset = 0;
    for (let line = 0; line < position.line && line < lines.length; line++) {
      offset += lines[line].length + 1;
    }
    const line = lines[Math.min(position.line, lines.length - 1)];
    return offset + Math.min(position.character, line.length);
  }
  positionAt(offset: number): Position {
    const before = this.text.slice(0, offset).split("\n");
    return new Position(before.length - 1, before[before.length - 1].length);
  }
  lineAt(line: number | Position): { text: string; range: Range; lineNumber: number } {
    const n = typeof line === "number" ? line : line.line;
    const text = this.text.split("\n")[n] ?? "";
    return { text, range: new Range(n, 0, n, text.length), lineNumber: n };
  }
  save(): Promise<boolean> {
    return Promise.resolve(true);
  }
}

/** What the tests see and drive. */
export const harness = {
  documents: [] as TextDocument[],
  commands: new Map<string, (...args: any[]) => unknown>(),
  executed: [] as { command: string; args: unknown[] }[],
  messages: [] as { kind: string; text: string; actions: string[] }[],
  /** Answers for the next input boxes, in order; undefined is Escape. */
  inputs: [] as (string | undefined)[],
  /** Answers for the next message boxes with buttons, in order. */
  choices: [] as (string | undefined)[],
  providers: new Map<string, any[]>(),
  contentProviders: new Map<string, any>(),
  /**
   * Settings by full name ("tandem.cloud.model"): User values; "workspace:NAME" and
   * "folder:NAME" are Workspace and Folder values, "default:NAME" the contributed defaults.
   */
  configuration: new Map<string, unknown>(),
  /** `env.remoteName`: undefined in a local window, e.g. "ssh-remote" in a remote one. */
  remoteName: undefined as string | undefined,
  secrets: new Map<string, string>(),
  outputs: [] as OutputChannel[],
  statusBarItems: [] as any[],
  activeTextEditor: undefined as TextEditor | undefined,
  onDidOpen: new EventEmitter<TextDocument>(),
  onDidChange: new EventEmitter<any>(),
  onDidClose: new EventEmitter<TextDocument>(),
  onDidChangeConfiguration: new EventEmitter<any>(),

  /** Open a document as VS Code does when a file is opened in an editor. */
  open(uri: string, languageId: string, text: string): TextDocument {
    const document = new TextDocument(Uri.parse(uri), languageId, text);
    this.documents.push(document);
    this.onDidOpen.fire(document);
    this.activeTextEditor = new TextEditor(document);
    return document;
  },

  /** Replace a range of a document, as an edit does: a new version, a change event. */
  replace(document: TextDocument, range: Range, text: string): void {
    const start = document.offsetAt(range.start);
    const end = document.offsetAt(range.end);
    document.text = document.text.slice(0, start) + text + document.text.slice(end);
    document.version += 1;
    this.onDidChange.fire({
      document,
      contentChanges: [{ range, rangeOffset: start, rangeLength: end - start, text }],
      reason: undefined,
    });
  },

  /**
   * Change settings as the user would (keys as in `configuration`; undefined removes a value),
   * and fire the change event VS Code fires.
   */
  configure(values: Record<string, unknown>): void {
    for (const [key, value] of Object.entries(values)) {
      if (value === undefined) {
        this.configuration.delete(key);
      } else {
        this.configuration.set(key, value);
      }
    }
    const names = Object.keys(values).map((key) => key.replace(/^(workspace|folder):/, ""));
    this.onDidChangeConfiguration.fire({
      affectsConfiguration: (section: string) =>
        names.some((name) => name === section || name.startsWith(`${section}.`)),
    });
  },

  provider(kind: string): any {
    const list = this.providers.get(kind) ?? [];
    if (list.length === 0) {
      throw new Error(`no ${kind} provider registered`);
    }
    return list[list.length - 1];
  },

  output(name: string): OutputChannel {
    const channel = this.outputs.find((o) => o.name === name);
    if (!channel) {
      throw new Error(`no output channel ${name}`);
    }
    return channel;
  },
};

export class TextEditor {
  selection: Selection;
  constructor(readonly document: TextDocument) {
    const end = document.positionAt(document.text.length);
    this.selection = new Selection(end, end);
  }
}

class OutputChannel {
  readonly lines: string[] = [];
  text = "";
  logLevel = LogLevel.Info;
  readonly onDidChangeLogLevel = new EventEmitter<LogLevel>().event;
  constructor(readonly name: string) {}
  append(text: string): void {
    this.text += text;
  }
  appendLine(text: string): void {
    this.text += `${text}\n`;
  }
  replace(text: string): void {
    this.text = text;
  }
  clear(): void {
    this.text = "";
  }
  show(): void {}
  hide(): void {}
  dispose(): void {}
  trace(text: string): void {
    this.appendLine(`[trace] ${text}`);
  }
  debug(text: string): void {
    this.appendLine(`[debug] ${text}`);
  }
  info(text: string): void {
    this.appendLine(`[info] ${text}`);
  }
  warn(text: string): void {
    this.appendLine(`[warn] ${text}`);
  }
  error(text: string | Error): void {
    this.appendLine(`[error] ${String(text)}`);
  }
}

function configurationFor(section: string | undefined): any {
  const full = (key: string): string => (section ? `${section}.${key}` : key);
  const inspect = (key: string) => {
    const name = full(key);
    return {
      key: name,
      defaultValue: harness.configuration.get(`default:${name}`),
      globalValue: harness.configuration.get(name),
      workspaceValue: harness.configuration.get(`workspace:${name}`),
      workspaceFolderValue: harness.configuration.get(`folder:${name}`),
    };
  };
  return {
    get(key: string, fallback?: unknown): unknown {
      const values = inspect(key);
      const ordered = [values.workspaceFolderValue, values.workspaceValue, values.globalValue, values.defaultValue];
      const value = ordered.find((candidate) => candidate !== undefined);
      return value === undefined ? fallback : value;
    },
    has(key: string): boolean {
      return harness.configuration.has(full(key));
    },
    inspect,
    update(): Promise<void> {
      return Promise.resolve();
    },
  };
}

const event = <T>(emitter: EventEmitter<T>) => emitter.event;
const never = new EventEmitter<any>().event;

function register(kind: string) {
  return (...args: any[]): Disposable => {
    const provider = args.find(
      (arg) =>
        typeof arg === "object" &&
        arg !== null &&
        !Array.isArray(arg) &&
        !("scheme" in arg || "language" in arg || "pattern" in arg),
    );
    const list = harness.providers.get(kind) ?? [];
    list.push(provider);
    harness.providers.set(kind, list);
    return new Disposable(() =>
      harness.providers.set(
        kind,
        (harness.providers.get(kind) ?? []).filter((p) => p !== provider),
      ),
    );
  };
}

function message(kind: string) {
  return (text: string, ...rest: any[]): Promise<string | undefined> => {
    const actions = rest.filter((item) => typeof item === "string");
    harness.messages.push({ kind, text, actions });
    return Promise.resolve(actions.length ? harness.choices.shift() : undefined);
  };
}

function matches(selector: any, document: TextDocument): number {
  const filters = Array.isArray(selector) ? selector : [selector];
  return filters.some((filter) =>
    typeof filter === "string"
      ? filter === document.languageId
      : (filter.scheme === undefined || filter.scheme === document.uri.scheme) &&
        (filter.language === undefined || filter.language === document.languageId) &&
        filter.pattern === undefined,
  )
    ? 10
    : 0;
}

const namespaces: Record<string, Record<string, unknown>> = {
  env: {
    get remoteName() {
      return harness.remoteName;
    },
    appName: "Visual Studio Code",
    language: "en",
    machineId: "stub",
    openExternal: () => Promise.resolve(true),
  },
  workspace: {
    get textDocuments() {
      return harness.documents;
    },
    notebookDocuments: [],
    workspaceFolders: undefined,
    getConfiguration: configurationFor,
    onDidOpenTextDocument: event(harness.onDidOpen),
    onDidChangeTextDocument: event(harness.onDidChange),
    onDidCloseTextDocument: event(harness.onDidClose),
    onDidChangeConfiguration: event(harness.onDidChangeConfiguration),
    onDidSaveTextDocument: never,
    onWillSaveTextDocument: never,
    onDidChangeWorkspaceFolders: never,
    onDidOpenNotebookDocument: never,
    onDidChangeNotebookDocument: never,
    onDidSaveNotebookDocument: never,
    onDidCloseNotebookDocument: never,
    registerTextDocumentContentProvider: (scheme: string, provider: unknown) => {
      harness.contentProviders.set(scheme, provider);
      return new Disposable(() => harness.contentProviders.delete(scheme));
    },
    openTextDocument: (uri: Uri) => {
      const provider = harness.contentProviders.get(uri.scheme);
      const text = provider ? provider.provideTextDocumentContent(uri) : "";
      return Promise.resolve(new TextDocument(uri, uri.path.endsWith(".json") ? "json" : "plaintext", text));
    },
    applyEdit: (edit: WorkspaceEdit) => {
      const documents = edit.edits.map(([uri]) => harness.documents.find((d) => d.uri.toString() === uri.toString()));
      if (documents.some((document) => document === undefined)) {
        return Promise.resolve(false);
      }
      // from the end of the document, so that earlier ranges stay valid
      for (const [uri, textEdit] of [...edit.edits].reverse()) {
        const document = documents.find((d) => d?.uri.toString() === uri.toString()) as TextDocument;
        harness.replace(document, textEdit.range, textEdit.newText);
      }
      return Promise.resolve(true);
    },
    asRelativePath: (target: Uri | string) => path.basename(typeof target === "string" ? target : target.path),
  },
  window: {
    get activeTextEditor() {
      return harness.activeTextEditor;
    },
    get visibleTextEditors() {
      return harness.activeTextEditor ? [harness.activeTextEditor] : [];
    },
    tabGroups: { all: [], onDidChangeTabs: never, onDidChangeTabGroups: never },
    onDidChangeVisibleTextEditors: never,
    onDidChangeActiveTextEditor: never,
    createOutputChannel: (name: string) => {
      const channel = new OutputChannel(name);
      harness.outputs.push(channel);
      return channel;
    },
    createStatusBarItem: () => {
      const item = {
        text: "",
        tooltip: undefined,
        command: undefined,
        name: "",
        backgroundColor: undefined,
        show() {},
        hide() {},
        dispose() {},
      };
      harness.statusBarItems.push(item);
      return item;
    },
    showErrorMessage: message("error"),
    showWarningMessage: message("warning"),
    showInformationMessage: message("info"),
    showInputBox: () => Promise.resolve(harness.inputs.shift()),
    showQuickPick: () => Promise.resolve(undefined),
    setStatusBarMessage: (text: string) => {
      harness.messages.push({ kind: "status", text, actions: [] });
      return new Disposable(() => undefined);
    },
    showTextDocument: (document: TextDocument) => Promise.resolve(new TextEditor(document)),
    withProgress: (_options: unknown, task: (progress: unknown, token: unknown) => unknown) =>
      task({ report: () => undefined }, new CancellationTokenSource().token),
  },
  languages: {
    match: matches,
    getDiagnostics: () => [],
    createDiagnosticCollection: (name: string) => ({
      name,
      set() {},
      delete() {},
      clear() {},
      forEach() {},
      get: () => undefined,
      has: () => false,
      dispose() {},
    }),
  },
  commands: {
    registerCommand: (id: string, run: (...args: any[]) => unknown) => {
      if (harness.commands.has(id)) {
        throw new Error(`command '${id}' already exists`);
      }
      harness.commands.set(id, run);
      return new Disposable(() => harness.commands.delete(id));
    },
    executeCommand: async (id: string, ...args: unknown[]) => {
      harness.executed.push({ command: id, args });
      const run = harness.commands.get(id);
      return run ? run(...args) : undefined;
    },
    getCommands: () => Promise.resolve([...harness.commands.keys()]),
  },
};

function strict(name: string, target: Record<string, unknown>): Record<string, unknown> {
  return new Proxy(target, {
    get(object, key) {
      if (typeof key !== "string" || key in object) {
        return (object as any)[key];
      }
      if (/^on(Did|Will)[A-Z]/.test(key)) {
        return never; // events the tests do not drive
      }
      if (name === "languages" && key.startsWith("register")) {
        object[key] = register(key.slice("register".length));
        return object[key];
      }
      throw new Error(`vscode stub: ${name}.${key} is not implemented`);
    },
  });
}

export const env = strict("env", namespaces.env);
export const workspace = strict("workspace", namespaces.workspace);
export const window = strict("window", namespaces.window);
export const languages = strict("languages", namespaces.languages);
export const commands = strict("commands", namespaces.commands);
