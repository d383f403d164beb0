import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { findExecutable } from "../src/executable";
import {
  DEFAULT_COMMAND,
  chooseCommand,
  configured,
  sameCommand,
  serverCommand,
  serverEnv,
  serverKeys,
  serverSettings,
} from "../src/settings";

const PACKAGE = JSON.parse(fs.readFileSync(path.resolve(__dirname, "..", "..", "package.json"), "utf8"));
const PROPERTIES: Record<
  string,
  { default?: unknown; type?: unknown; description?: string; markdownDescription?: string }
> = PACKAGE.contributes.configuration.properties;

// The server's settings and defaults (lsp_server/config.py, README "Settings").
const SERVER_DEFAULTS: Record<string, unknown> = {
  "local.modelPath": "",
  "local.chatModelPath": "",
  "local.nGpuLayers": "auto",
  "local.contextSize": 4096,
  "local.flashAttention": true,
  "local.threads": null,
  "local.endpoint": "",
  "local.endpointKind": "auto",
  "local.endpointApiKey": "",
  "local.endpointUser": "",
  "local.energyUsdPerHour": null,
  "completion.debounceMs": "auto",
  "completion.multiline": "auto",
  "completion.decodeAhead": "auto",
  "completion.minConfidence": "auto",
  "completion.maxTokens": 96,
  "completion.promptTokens": 1536,
  "completion.enabled": true,
  "completion.recentChunks": 8,
  "cloud.model": "gpt-4o",
  "cloud.baseUrl": "",
  "cloud.dailyBudgetUsd": null,
  "cloud.monthlyBudgetUsd": null,
  "cloud.overBudget": "local",
  "cloud.prices": {},
  routes: { explain: "auto", debug: "auto", refactor: "auto" },
  "privacy.cloudDeny": [".env*", "*.pem", "*.key", "id_rsa*", "secrets.*"],
};

describe("contributed settings", () => {
  it("has one tandem.* setting per server key, with the server's default", () => {
    const keys = serverKeys(Object.keys(PROPERTIES));
    assert.deepEqual(new Set(keys), new Set(Object.keys(SERVER_DEFAULTS)));
    for (const [key, value] of Object.entries(SERVER_DEFAULTS)) {
      assert.deepEqual(PROPERTIES[`tandem.${key}`].default, value, key);
    }
  });

  it("describes every setting", () => {
    for (const [name, schema] of Object.entries(PROPERTIES)) {
      assert.ok((schema.description ?? schema.markdownDescription ?? "").length > 20, name);
    }
  });

  it("keeps the extension's own settings out of the server's", () => {
    const keys = serverKeys([
      "tandem.server.command",
      "tandem.refactor.showDiff",
      "tandem.trace.server",
      "tandem.cloud.model",
      "other.x",
    ]);
    assert.deepEqual(keys, ["cloud.model"]);
    assert.deepEqual(PROPERTIES["tandem.server.command"].default, DEFAULT_COMMAND);
  });
});

describe("serverSettings", () => {
  const keys = [
    "local.modelPath",
    "local.nGpuLayers",
    "completion.debounceMs",
    "cloud.dailyBudgetUsd",
    "routes",
    "privacy.cloudDeny",
  ];

  it("nests the values the user set, as the server reads them", () => {
    const user: Record<string, unknown> = {
      "local.modelPath": "~/models/qwen2.5-coder-1.5b.gguf",
      "local.nGpuLayers": 0,
      "completion.debounceMs": 40,
      routes: { explain: "cloud" },
      "privacy.cloudDeny": ["*.secret"],
    };
    assert.deepEqual(
      serverSettings(keys, (key) => user[key]),
      {
        local: { modelPath: "~/models/qwen2.5-coder-1.5b.gguf", nGpuLayers: 0 },
        completion: { debounceMs: 40 },
        routes: { explain: "cloud" },
        privacy: { cloudDeny: ["*.secret"] },
      },
    );
  });

  it("leaves out what is unset, empty or null, so the server's defaults and TANDEM_MODEL apply", () => {
    const user: Record<string, unknown> = { "local.modelPath": "", "cloud.dailyBudgetUsd": null };
    assert.deepEqual(
      serverSettings(keys, (key) => user[key]),
      {},
    );
  });

  it("keeps false and zero", () => {
    assert.deepEqual(serverSettings(["completion.enabled", "cloud.dailyBudgetUsd"], () => 0 as unknown).cloud, {
      dailyBudgetUsd: 0,
    });
    assert.deepEqual(
      serverSettings(["completion.enabled"], () => false),
      { completion: { enabled: false } },
    );
  });
});

describe("serverCommand", () => {
  it("defaults to tandem serve", () => {
    assert.deepEqual(serverCommand(undefined), { command: ["tandem", "serve"] });
  });

  it("takes an array of strings", () => {
    assert.deepEqual(serverCommand(["/venv/bin/python", "-m", "lsp_server", "serve"]), {
      command: ["/venv/bin/python", "-m", "lsp_server", "serve"],
    });
  });

  for (const bad of ["tandem serve", [], ["tandem", 3], [""]]) {
    it(`refuses ${JSON.stringify(bad)} and says what it wants`, () => {
      const result = serverCommand(bad);
      assert.ok("problem" in result && result.problem.includes('["tandem", "serve"]'));
    });
  }
});

describe("configured", () => {
  it("takes the most specific value VS Code has: folder, workspace, user, default", () => {
    const all = { defaultValue: ["d"], globalValue: ["u"], workspaceValue: ["w"], workspaceFolderValue: ["f"] };
    assert.deepEqual(configured(all), { value: ["f"], source: "folder" });
    assert.deepEqual(configured({ ...all, workspaceFolderValue: undefined }), { value: ["w"], source: "workspace" });
    assert.deepEqual(configured({ defaultValue: ["d"], globalValue: ["u"] }), { value: ["u"], source: "user" });
    assert.deepEqual(configured({ defaultValue: ["d"] }), { value: ["d"], source: "default" });
    assert.deepEqual(configured(undefined), { value: undefined, source: "default" });
  });
});

describe("chooseCommand", () => {
  const VENV = ["/venv/bin/tandem", "serve"];
  const exists = (command: readonly string[]): boolean => command[0] === "/venv/bin/tandem";

  it("starts the configured command when its executable exists", () => {
    assert.deepEqual(chooseCommand({ value: VENV, source: "user" }, ["/old/tandem", "serve"], exists, false), {
      command: VENV,
    });
  });

  it("falls back to the last command that worked when the configured one cannot be found, and says so", () => {
    const choice = chooseCommand({ value: ["/typo/tandem", "serve"], source: "user" }, VENV, exists, false);
    assert.deepEqual(choice, {
      command: VENV,
      warning:
        'cannot find the server executable "/typo/tandem"; using the last command that worked: /venv/bin/tandem serve',
    });
  });

  it("falls back the same way when the setting is not a command", () => {
    const choice = chooseCommand({ value: "tandem serve", source: "workspace" }, VENV, exists, false);
    assert.ok("command" in choice && sameCommand(choice.command, VENV));
    assert.ok("command" in choice && choice.warning?.startsWith("tandem.server.command must be an array"));
  });

  it("in a remote window, says where VS Code reads the setting when only the default is left", () => {
    const remote = chooseCommand({ value: [...DEFAULT_COMMAND], source: "default" }, VENV, exists, true);
    assert.ok("command" in remote && sameCommand(remote.command, VENV));
    assert.match(
      ("command" in remote && remote.warning) || "",
      /^cannot find the server executable "tandem" \(in a remote window VS Code reads tandem\.server\.command from the Remote or Workspace settings, not from User settings\); using the last command that worked/,
    );
    const local = chooseCommand({ value: [...DEFAULT_COMMAND], source: "default" }, VENV, exists, false);
    assert.doesNotMatch(("command" in local && local.warning) || "", /remote window/);
    const set = chooseCommand({ value: ["/remote/tandem", "serve"], source: "user" }, VENV, exists, true);
    assert.doesNotMatch(("command" in set && set.warning) || "", /remote window/, "a Remote settings value");
  });

  it("says why nothing can start when there is no working command to fall back to", () => {
    const missing = chooseCommand({ value: ["/typo/tandem"], source: "user" }, undefined, exists, false);
    assert.ok("problem" in missing && missing.missing);
    assert.ok(
      "problem" in missing && missing.problem.startsWith('cannot find the server executable "/typo/tandem". Install'),
    );
    const gone = chooseCommand({ value: ["/typo/tandem"], source: "user" }, ["/gone/tandem"], exists, false);
    assert.ok("problem" in gone && gone.missing, "the last command is gone too");
    const invalid = chooseCommand({ value: [], source: "user" }, undefined, exists, false);
    assert.ok("problem" in invalid && !invalid.missing && invalid.problem.includes('["tandem", "serve"]'));
  });
});

describe("serverEnv", () => {
  it("adds the stored key, leaves the environment alone otherwise", () => {
    assert.deepEqual(serverEnv({ PATH: "/bin" }, "sk-1"), { PATH: "/bin", OPENAI_API_KEY: "sk-1" });
    assert.deepEqual(serverEnv({ PATH: "/bin", OPENAI_API_KEY: "sk-env" }, undefined), {
      PATH: "/bin",
      OPENAI_API_KEY: "sk-env",
    });
  });
});

describe("findExecutable", () => {
  const files = new Set(["/venv/bin/tandem", "/usr/bin/python3", "C:\\tools\\tandem.EXE"]);
  const check = (file: string): boolean => files.has(file);

  it("looks a bare name up on PATH", () => {
    assert.equal(findExecutable("tandem", { PATH: "/usr/bin:/venv/bin" }, "/", "linux", check), "/venv/bin/tandem");
    assert.equal(findExecutable("tandem", { PATH: "/usr/bin" }, "/", "linux", check), undefined);
  });

  it("checks a path as given, relative to the working directory", () => {
    assert.equal(findExecutable("/venv/bin/tandem", {}, "/", "linux", check), "/venv/bin/tandem");
    assert.equal(findExecutable("bin/tandem", {}, "/venv", "linux", check), "/venv/bin/tandem");
    assert.equal(findExecutable("/missing/tandem", { PATH: "/venv/bin" }, "/", "linux", check), undefined);
  });

  it("tries PATHEXT on Windows", () => {
    assert.equal(
      findExecutable("tandem", { PATH: "C:\\tools", PATHEXT: ".COM;.EXE" }, "C:\\", "win32", check),
      "C:\\tools\\tandem.EXE",
    );
  });

  it("finds a real executable on this machine", () => {
    assert.equal(
      findExecutable(path.basename(process.execPath), { PATH: path.dirname(process.execPath) }, "/"),
      process.execPath,
    );
  });
});
