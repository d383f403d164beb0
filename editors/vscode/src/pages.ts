// Read-only virtual documents (`tandem:` URIs): the usage page, the status page, refactor proposals.
import * as vscode from "vscode";

export const PAGES = "tandem";

/** The text of each page by path; a page set again fires a change so that an open view redraws. */
export class Pages implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly texts = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;
  // after onDidChange: VS Code subscribes to it when the provider is registered
  private readonly registration = vscode.workspace.registerTextDocumentContentProvider(PAGES, this);

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.path) ?? "";
  }

  /** Set a page's text; its URI. */
  set(pagePath: string, text: string): vscode.Uri {
    const uri = vscode.Uri.from({ scheme: PAGES, path: pagePath });
    this.texts.set(uri.path, text);
    this.changed.fire(uri);
    return uri;
  }

  dispose(): void {
    this.registration.dispose();
    this.changed.dispose();
  }
}
