// Ghost text in the editor: the inline-completion middleware that answers with the streamed
// partial text (see GhostStreams), the re-trigger when more arrives, and pausing per window.
import * as vscode from "vscode";
import { GhostStreams, type GhostTextParams, ghostKey } from "./ghost";

/** What the middleware needs: whether completions are paused, a busy counter, the streams. */
export interface InlineHooks {
  paused(): boolean;
  /** An inline-completion request started (+1) or ended (-1). */
  busy(delta: 1 | -1): void;
  streams: GhostStreams;
}

type Items = vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined;

type Next = (
  document: vscode.TextDocument,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
  token: vscode.CancellationToken,
) => vscode.ProviderResult<vscode.InlineCompletionItem[] | vscode.InlineCompletionList>;

/** Inline completions of this window: streamed, re-triggered while they grow, pausable. */
export class GhostText {
  readonly streams = new GhostStreams((key) => this.retrigger(key));
  private paused = false;

  /** `busy` counts requests in flight; `pauseChanged` redraws what shows the pause. */
  constructor(
    private readonly busy: (delta: 1 | -1) => void,
    private readonly pauseChanged: () => void,
  ) {}

  /** Whether completions are paused in this window. */
  get isPaused(): boolean {
    return this.paused;
  }

  /** The language client's inline-completion middleware. */
  readonly provide = (
    document: vscode.TextDocument,
    position: vscode.Position,
    context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
    next: Next,
  ): Promise<Items> => {
    const hooks: InlineHooks = { paused: () => this.paused, busy: this.busy, streams: this.streams };
    return provideStreaming(hooks, document, position, context, token, next);
  };

  /** A `tandem/ghostText` notification. */
  notify(params: GhostTextParams): void {
    this.streams.notify(params);
  }

  /** Pause or resume inline completions in this window; pausing hides the ghost text shown. */
  toggle(): void {
    this.paused = !this.paused;
    if (this.paused) {
      void vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
    }
    this.pauseChanged();
  }

  private retrigger(key: string): void {
    const editor = vscode.window.activeTextEditor;
    if (editor === undefined || this.paused) {
      return;
    }
    const { document, selection } = editor;
    if (ghostKey(document.uri.toString(), document.version, selection.active) === key) {
      void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
    }
  }
}

/**
 * The inline-completion middleware: answer with the streamed partial text as soon as it comes
 * (see GhostStreams), and answer a repeated request at the same place while the first one
 * still streams from its newest partial text, without asking the server again.
 */
export async function provideStreaming(
  hooks: InlineHooks,
  document: vscode.TextDocument,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
  token: vscode.CancellationToken,
  next: Next,
): Promise<Items> {
  if (hooks.paused()) {
    return null;
  }
  const key = ghostKey(document.uri.toString(), document.version, position);
  const streaming = hooks.streams.streaming(key);
  if (streaming !== undefined) {
    return partialItems(streaming, position, context);
  }
  const source = new vscode.CancellationTokenSource();
  let detached = false;
  const link = token.onCancellationRequested(() => {
    if (!detached) {
      source.cancel();
    }
  });
  hooks.busy(1);
  const pending = Promise.resolve(next(document, position, context, source.token)).finally(() => {
    hooks.busy(-1);
    link.dispose();
    source.dispose();
  });
  const outcome = await hooks.streams.request<Items>(key, pending, hasItems, () => {
    detached = true;
  });
  return outcome.kind === "final" ? outcome.result : partialItems(outcome.text, position, context);
}

function hasItems(result: Items): boolean {
  const items = Array.isArray(result) ? result : result?.items;
  return (items?.length ?? 0) > 0;
}

/** Partial ghost text as an item; with a selected completion-list item, it must extend that item. */
function partialItems(
  text: string,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
): vscode.InlineCompletionItem[] {
  const selected = context.selectedCompletionInfo;
  if (selected !== undefined) {
    return [new vscode.InlineCompletionItem(selected.text + text, selected.range)];
  }
  return [new vscode.InlineCompletionItem(text, new vscode.Range(position, position))];
}
