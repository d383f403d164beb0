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

/** The server command's setting, relative to SECTION. */
export const COMMAND_KEY = "server.command";

/** Where VS Code has a setting, as `WorkspaceConfiguration.inspect` reports it. */
export interface Inspected {
  defaultValue?: unknown;
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/** A setting's value and where it came from. */
export interface Configured {
  value: unknown;
  source: "folder" | "workspace" | "user" | "default";
}

/**
 * The value VS Code honours in this window: the folder's, the workspace's, the user's (in a
 * remote window, the remote's user settings), else the default. In a remote window VS Code
 * drops User values of `machine-overridable` settings such as `tandem.server.command`.
 */
export function configured(inspected: Inspected | undefined): Configured {
  if (inspected?.workspaceFolderValue !== undefined) {
    return { value: inspected.workspaceFolderValue, source: "folder" };
  }
  if (inspected?.workspaceValue !== undefined) {
    return { value: inspected.workspaceValue, source: "workspace" };
  }
  if (inspected?.globalValue !== undefined) {
    return { value: inspected.globalValue, source: "user" };
  }
  return { value: inspected?.defaultValue, source: "default" };
}

/** The command to start, and a warning when it is not the configured one; or why none can start. */
export type CommandChoice = { command: string[]; warning?: string } | { problem: string; missing: boolean };

/** Whether two commands are the same. */
export function sameCommand(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  return a !== undefined && b !== undefined && a.length === b.length && a.every((part, i) => part === b[i]);
}

/**
 * The command that starts the server: the configured one when it is valid and its executable
 * exists; else the last command that started the server (`lastWorking`), with a warning, so that
 * a typo or a value VS Code stopped honouring never leaves the user without a server; else why
 * nothing can start (`missing`: the executable was not found).
 */
export function chooseCommand(
  setting: Configured,
  lastWorking: readonly string[] | undefined,
  exists: (command: readonly string[]) => boolean,
  remote: boolean,
): CommandChoice {
  const parsed = serverCommand(setting.value);
  let problem: string;
  if ("problem" in parsed) {
    problem = parsed.problem;
  } else if (exists(parsed.command)) {
    return { command: parsed.command };
  } else {
    problem = `cannot find the server executable "${parsed.command[0]}"`;
    if (remote && setting.source === "default") {
      problem +=
        " (in a remote window VS Code reads tandem.server.command from the Remote or Workspace settings, not from User settings)";
    }
  }
  if (lastWorking !== undefined && exists(lastWorking)) {
    return {
      command: [...lastWorking],
      warning: `${problem}; using the last command that worked: ${lastWorking.join(" ")}`,
    };
  }
  if ("problem" in parsed) {
    return { problem, missing: false };
  }
  return {
    problem:
      `${problem}. Install tandem (pip install -e '.[default-model]' in a checkout, or make demo) and point the ` +
      `setting tandem.server.command at it.`,
    missing: true,
  };
}
