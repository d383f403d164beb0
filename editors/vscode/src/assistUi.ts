// Explain / Debug / Refactor in the editor: what the user is asked, the reply streamed into the
// "tandem: Assist" channel, and a refactor applied or shown as a diff first.
import * as path from "node:path";
import * as vscode from "vscode";
import { ExecuteCommandRequest } from "vscode-languageclient/node";
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
  serverCommand,
} from "./assist";
import { describeError } from "./errors";
import type { Server } from "./lifecycle";
import type { Pages } from "./pages";
import { SECTION } from "./settings";

/** The assist commands and their output channel. */
export class AssistUi implements vscode.Disposable {
  private readonly output = vscode.window.createOutputChannel("tandem: Assist", "markdown");
  private readonly transcripts = new Map<string, Transcript>();
  private sequence = 0;

  /** `busy` counts commands in flight; `pages` holds refactor proposals for the diff. */
  constructor(
    private readonly server: Pick<Server, "running">,
    private readonly log: vscode.LogOutputChannel,
    private readonly pages: Pages,
    private readonly busy: (delta: 1 | -1) => void,
  ) {}

  /** Explain, debug or refactor the selection (the current line when nothing is selected). */
  async run(task: Task): Promise<AssistResult | undefined> {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined) {
      void vscode.window.showWarningMessage("tandem: open a file and select some code first.");
      return undefined;
    }
    const { document, selection } = editor;
    const range = selection.isEmpty ? document.lineAt(selection.active.line).range : selection;
    const extra: Extra = {};
    if (task === "refactor") {
      const instruction = await askInstruction();
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
    return this.send(task, document, range, extra);
  }

  /** A server command chosen from a code action (the light bulb): shown like the palette's. */
  async codeAction(task: Task, args: unknown[]): Promise<AssistResult | undefined> {
    const target = codeActionTarget(args);
    const document = vscode.workspace.textDocuments.find((doc) => doc.uri.toString() === target?.uri);
    const client = this.server.running();
    if (client === undefined) {
      return undefined;
    }
    if (target === undefined || document === undefined) {
      this.log.warn(`tandem.${task} from a code action without an open document: ${JSON.stringify(args)}`);
      return undefined;
    }
    const extra: Extra = { diagnostics: target.diagnostics };
    if (task === "refactor") {
      const instruction = await askInstruction();
      if (instruction === undefined) {
        return undefined;
      }
      extra.instruction = instruction;
    }
    return this.send(task, document, client.protocol2CodeConverter.asRange(target.range), extra);
  }

  /** A `tandem/assistChunk` notification: append it to its command's transcript. */
  chunk(params: AssistChunk): void {
    const text = this.transcripts.get(params?.id)?.chunk(params);
    if (text) {
      this.output.append(text);
    }
  }

  dispose(): void {
    this.output.dispose();
  }

  private async send(
    task: Task,
    document: vscode.TextDocument,
    range: vscode.Range,
    extra: Extra,
  ): Promise<AssistResult | undefined> {
    const client = this.server.running();
    if (client === undefined) {
      return undefined;
    }
    if (task === "refactor") {
      extra.preview = vscode.workspace.getConfiguration(SECTION).get<boolean>("refactor.showDiff", false);
    }
    const id = assistId(Date.now(), ++this.sequence);
    const transcript = new Transcript(id, task);
    this.transcripts.set(id, transcript);
    const c2p = client.code2ProtocolConverter;
    const args = assistArgs(c2p.asUri(document.uri), c2p.asRange(range), id, extra);
    const version = document.version;
    this.output.append(transcript.heading(vscode.workspace.asRelativePath(document.uri), args.range));
    if (task !== "refactor") {
      this.output.show(true);
    }
    this.busy(1);
    let result: AssistResult;
    try {
      result = (await client.sendRequest(ExecuteCommandRequest.type, {
        command: serverCommand(task),
        arguments: [args],
      })) as AssistResult;
    } catch (error) {
      this.output.append(`\n\n_failed: ${describeError(error)}_\n`);
      void vscode.window.showErrorMessage(`tandem: ${task} failed: ${describeError(error)}`);
      return undefined;
    } finally {
      this.transcripts.delete(id);
      this.busy(-1);
    }
    this.output.append(transcript.finish(result));
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
      this.output.show(true);
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
        this.output.show(true);
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

function askInstruction(): Thenable<string | undefined> {
  return vscode.window.showInputBox({
    title: "tandem: Refactor",
    prompt: "How should the selection change? (empty: make it clearer and simpler)",
    placeHolder: "e.g. use pathlib instead of os.path",
    ignoreFocusOut: true,
  });
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
