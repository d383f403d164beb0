// Settings: the `tandem.*` VS Code settings become the server's settings object, and
// `tandem.server.command` becomes the command that starts it. No `vscode` import: unit-testable.

export const SECTION = "tandem";

/** Settings only the extension reads; every other `tandem.*` setting is a server key. */
const CLIENT_ONLY = ["server.", "refactor.", "trace."];

export const DEFAULT_COMMAND: readonly string[] = ["tandem", "serve"];

/** The server keys (`local.modelPath`, …) among the extension's contributed setting names. */
export function serverKeys(contributed: Iterable<string>): string[] {
  const prefix = `${SECTION}.`;
  return [...contributed]
    .filter((name) => name.startsWith(prefix))
    .map((name) => name.slice(prefix.length))
    .filter((key) => !CLIENT_ONLY.some((client) => key.startsWith(client)));
}

/**
 * The nested settings object sent as `initializationOptions` and as the answer to
 * `workspace/configuration` section `tandem`. Only values the user set are sent, so the
 * server's own defaults and environment (`TANDEM_MODEL`) apply to everything else; empty
 * strings and nulls mean "not set".
 */
export function serverSettings(keys: Iterable<string>, userValue: (key: string) => unknown): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const key of keys) {
    const value = userValue(key);
    if (value === undefined || value === null || value === "") {
      continue;
    }
    const path = key.split(".");
    let node = result;
    for (const part of path.slice(0, -1)) {
      const child = node[part];
      node[part] = typeof child === "object" && child !== null ? child : {};
      node = node[part] as Record<string, unknown>;
    }
    node[path[path.length - 1]] = value;
  }
  return result;
}

/** `tandem.server.command` checked: a non-empty array of non-empty strings, else why not. */
export function serverCommand(value: unknown): { command: string[] } | { problem: string } {
  if (value === undefined || value === null) {
    return { command: [...DEFAULT_COMMAND] };
  }
  if (!Array.isArray(value) || value.length === 0 || !value.every((part) => typeof part === "string" && part)) {
    return {
      problem: `tandem.server.command must be an array such as ["tandem", "serve"], not ${JSON.stringify(value)}`,
    };
  }
  return { command: [...value] as string[] };
}

/** The server's environment: ours, plus the API key from SecretStorage when one is stored. */
export function serverEnv(base: NodeJS.ProcessEnv, apiKey: string | undefined): NodeJS.ProcessEnv {
  return apiKey ? { ...base, OPENAI_API_KEY: apiKey } : { ...base };
}
