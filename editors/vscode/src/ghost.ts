// Ghost text that grows while the server streams it. LSP inline completion has no partial
// results: the server sends `tandem/ghostText` notifications with the text so far, and the
// provider answers early with it, then asks VS Code to query again when there is more.
// No `vscode` import: unit-testable.

export const GHOST_TEXT = "tandem/ghostText";

export interface Position {
  line: number;
  character: number;
}

/** Params of a `tandem/ghostText` notification. */
export interface GhostTextParams {
  uri: string;
  version: number;
  position: Position;
  text: string;
}

/** Identifies one inline-completion request: the document as it was, and the cursor. */
export function ghostKey(uri: string, version: number, position: Position): string {
  return `${version}:${position.line}:${position.character}:${uri}`;
}

/** How a request ended for the provider: its response, or the partial text that came first. */
export type Outcome<T> = { kind: "final"; result: T } | { kind: "partial"; text: string };

interface Stream {
  latest: string | undefined;
  early: boolean;
  partial(text: string): void;
}

/**
 * Inline-completion requests in flight, by key, and the newest partial text of each.
 *
 * A request resolves with its response, or with the first partial text when that arrives
 * first ("early"). After an early answer, each newer partial text and the final response
 * (when it has items) call `refresh(key)`: the extension re-triggers inline suggestions, and
 * the repeated request at the same key is answered from `streaming(key)` while the first
 * one runs, then by the server's cache.
 */
export class GhostStreams {
  private readonly streams = new Map<string, Stream>();

  constructor(private readonly refresh: (key: string) => void) {}

  /** The newest partial text of a request at `key` that was answered early and still runs. */
  streaming(key: string): string | undefined {
    const stream = this.streams.get(key);
    return stream?.early ? stream.latest : undefined;
  }

  /**
   * Wait for `pending` (the request sent to the server) or for its first partial text.
   * `detach` is called when the answer goes out early: from then on the request belongs to
   * no VS Code call, so VS Code's cancellation must no longer cancel it.
   */
  request<T>(
    key: string,
    pending: PromiseLike<T>,
    hasItems: (result: T) => boolean,
    detach: () => void,
  ): Promise<Outcome<T>> {
    return new Promise<Outcome<T>>((resolve, reject) => {
      const stream: Stream = {
        latest: undefined,
        early: false,
        partial: (text: string) => {
          if (text === stream.latest) {
            return;
          }
          stream.latest = text;
          if (stream.early) {
            this.refresh(key);
            return;
          }
          stream.early = true;
          detach();
          resolve({ kind: "partial", text });
        },
      };
      this.streams.set(key, stream);
      const settle = (): void => {
        if (this.streams.get(key) === stream) {
          this.streams.delete(key);
        }
      };
      pending.then(
        (result) => {
          settle();
          if (!stream.early) {
            resolve({ kind: "final", result });
          } else if (hasItems(result)) {
            this.refresh(key);
          }
        },
        (error: unknown) => {
          settle();
          if (!stream.early) {
            reject(error);
          }
        },
      );
    });
  }

  /** A `tandem/ghostText` notification: the text so far of the request it names. */
  notify(params: GhostTextParams): void {
    if (typeof params?.text !== "string" || !params.text || !params.position) {
      return;
    }
    this.streams.get(ghostKey(params.uri, params.version, params.position))?.partial(params.text);
  }

  /** Requests still waiting for their response. */
  get size(): number {
    return this.streams.size;
  }
}
