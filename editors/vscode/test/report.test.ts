import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type ServerStatus,
  type UsageReport,
  type View,
  compact,
  modelName,
  route,
  statusBar,
  usageMarkdown,
  usd,
} from "../src/report";
import { RestartPolicy, giveUpMessage, lastError, startFailedMessage } from "../src/restart";
import { LineTail, levelOf } from "../src/serverLog";

const READY: ServerStatus = {
  model: { state: "ready", name: "gemma-3-270m-it-Q4_K_M.gguf", gpuOffload: false, fim: null },
  counters: { inlineRequests: 3 },
  latencyMs: { p50: 410.5, p95: 900 },
  backends: { cloud: { configured: false, healthy: false, lastError: null, model: "gpt-4o" } },
};

const USAGE: UsageReport = {
  totals: [],
  periods: {
    today: {
      rows: [
        {
          backend: "local",
          model: "gemma",
          kind: "completion",
          requests: 9,
          promptTokens: 5200,
          completionTokens: 300,
          costUsd: 0,
        },
        {
          backend: "cloud",
          model: "gpt-4o",
          kind: "explain",
          requests: 2,
          promptTokens: 1000,
          completionTokens: 400,
          costUsd: 0.0065,
        },
        {
          backend: "cloud",
          model: "gpt-4o",
          kind: "refactor",
          requests: 1,
          promptTokens: 800,
          completionTokens: 300,
          costUsd: 0.005,
        },
      ],
      promptTokens: 7000,
      completionTokens: 1000,
      costUsd: 0.0115,
    },
  },
};

function view(change: Partial<View> = {}): View {
  return { phase: "running", paused: false, busy: false, status: READY, usage: USAGE, ...change };
}

describe("status bar", () => {
  const cases: [string, Partial<View>, string][] = [
    ["ready, local only", {}, "$(sparkle) gemma-3-270m-it-Q4_K_M · local · 8k tok · $0.01"],
    ["while a request runs", { busy: true }, "$(sync~spin) gemma-3-270m-it-Q4_K_M · local · 8k tok · $0.01"],
    ["paused", { paused: true }, "$(circle-slash) gemma-3-270m-it-Q4_K_M · local · 8k tok · $0.01 · paused"],
    ["model loading", { status: { model: { state: "loading" } } }, "$(sparkle) loading model…"],
    ["no usage yet", { usage: undefined }, "$(sparkle) gemma-3-270m-it-Q4_K_M · local · 0 tok · $0.00"],
    [
      "cloud configured",
      { status: { ...READY, backends: { cloud: { configured: true, healthy: true } } } },
      "$(sparkle) gemma-3-270m-it-Q4_K_M · local+cloud · 8k tok · $0.01",
    ],
    [
      "cloud failing",
      { status: { ...READY, backends: { cloud: { configured: true, healthy: false, lastError: "429" } } } },
      "$(sparkle) gemma-3-270m-it-Q4_K_M · local (cloud down) · 8k tok · $0.01",
    ],
    ["starting", { phase: "starting", status: undefined }, "$(loading~spin) tandem"],
    ["stopped", { phase: "stopped" }, "$(debug-stop) tandem"],
  ];
  for (const [name, change, text] of cases) {
    it(name, () => {
      const content = statusBar(view(change));
      assert.equal(content.text, text);
      assert.equal(content.error, false);
    });
  }

  it("shows an error that opens the log: a failed start", () => {
    const content = statusBar(view({ phase: "failed", problem: "cannot find the server executable" }));
    assert.deepEqual([content.text, content.command, content.error], ["$(error) tandem", "tandem.showLog", true]);
    assert.ok(content.tooltip.includes("cannot find the server executable"));
  });

  it("shows an error that opens the log: a model that failed to load", () => {
    const content = statusBar(view({ status: { model: { state: "error", error: "not a GGUF file: x.bin" } } }));
    assert.deepEqual([content.text, content.command, content.error], ["$(error) tandem", "tandem.showLog", true]);
    assert.ok(content.tooltip.includes("not a GGUF file: x.bin"));
  });

  it("puts the details in the tooltip", () => {
    const { tooltip, command } = statusBar(view());
    assert.equal(command, "tandem.menu");
    assert.ok(tooltip.includes("Cloud: not configured"));
    assert.ok(tooltip.includes("Today: 8k tokens, cloud $0.01"));
    assert.ok(tooltip.includes("p50 410.5 ms, p95 900 ms"));
  });

  it("gives screen readers a plain label: no Markdown, no icons", () => {
    const views: Partial<View>[] = [
      {},
      { busy: true, paused: true },
      { status: { model: { state: "loading" } } },
      { phase: "starting", status: undefined },
      { phase: "stopped" },
      { phase: "failed", problem: "cannot find the server executable" },
      { status: { model: { state: "error", error: "not a GGUF file: x_y.bin" } } },
    ];
    for (const change of views) {
      const { label } = statusBar(view(change));
      assert.match(label, /^tandem[:,] \S/);
      assert.doesNotMatch(label, /[*`\\]|\$\(/, label);
    }
    assert.equal(
      statusBar(view({ busy: true, paused: true })).label,
      "tandem: gemma-3-270m-it-Q4_K_M, local, 8k tokens today, cloud $0.01 today, paused, working",
    );
    assert.equal(
      statusBar(view({ phase: "failed", problem: "cannot find the server executable" })).label,
      "tandem, error: cannot find the server executable. Opens the log.",
    );
  });

  it("does not pass typed-ahead hits off as model latency", () => {
    const hits = {
      ...READY,
      latencyMs: { count: 30, p50: 410.5, p95: 900 },
      cacheHitLatencyMs: { count: 12, p50: 0.2, p95: 0.4 },
    };
    const { tooltip } = statusBar(view({ status: { ...hits, lastTiming: { total: 0.4, model: 0 } } }));
    assert.ok(
      tooltip.includes("Suggestions the model wrote (30): p50 410.5 ms, p95 900 ms from request to answer"),
      tooltip,
    );
    assert.ok(tooltip.includes("Typed-ahead hits, answered without the model: 12"), tooltip);
    assert.doesNotMatch(
      tooltip,
      /Last suggestion the model wrote/,
      "the last answer was a typed-ahead hit: no model time to show",
    );
    const generated = statusBar(view({ status: { ...hits, lastTiming: { total: 612.8, model: 401.2 } } }));
    assert.ok(
      generated.tooltip.includes("Last suggestion the model wrote: 401 ms in the model, 613 ms from request to answer"),
      generated.tooltip,
    );
  });

  it("formats numbers", () => {
    assert.deepEqual([0, 950, 1234, 12_345, 999_999, 1_250_000].map(compact), [
      "0",
      "950",
      "1.2k",
      "12.3k",
      "1M",
      "1.3M",
    ]);
    assert.deepEqual([0, 0.004, 0.0115, 12.5].map(usd), ["$0.00", "<$0.01", "$0.01", "$12.50"]);
    assert.equal(
      modelName({ model: { name: "qwen2.5-coder-1.5b-instruct-q8_0-with-a-long-name.gguf" } }),
      "qwen2.5-coder-1.5b-instruct…",
    );
    assert.equal(route(undefined), "local");
  });
});

describe("usage page", () => {
  it("has a table per period with a total row", () => {
    const page = usageMarkdown({ ...USAGE, savedUsd: 0.02, localShare: 0.6, ledger: "/data/ledger.sqlite3" });
    assert.ok(page.includes("## Today\n\n| backend | model | task |"));
    assert.ok(page.includes("| cloud | gpt-4o | explain | 2 | 1000 | 400 | <$0.01 |"));
    assert.ok(page.includes("| **total** | | | 12 | 7000 | 1000 | $0.01 |"));
    assert.ok(page.includes("## This month\n\nNo requests."));
    assert.ok(page.includes("Local share of all tokens: 60%"));
    assert.ok(page.includes("Ledger: `/data/ledger.sqlite3`"));
  });

  it("falls back to the totals rows for all time", () => {
    const page = usageMarkdown({ totals: USAGE.periods?.today?.rows ?? [] });
    assert.ok(page.includes("## All time\n\n| backend"));
  });
});

describe("restarts", () => {
  it("allows three restarts within three minutes, then stops", () => {
    const policy = new RestartPolicy();
    const t0 = 1_000_000;
    assert.deepEqual(
      [0, 1000, 2000, 3000].map((dt) => policy.crashed(t0 + dt)),
      [
        { restart: true, crashes: 1 },
        { restart: true, crashes: 2 },
        { restart: true, crashes: 3 },
        { restart: false, crashes: 4 },
      ],
    );
  });

  it("forgets crashes older than the window, and all of them on a manual restart", () => {
    const policy = new RestartPolicy(3, 60_000);
    for (const t of [0, 10_000, 20_000]) {
      policy.crashed(t);
    }
    assert.deepEqual(policy.crashed(70_000), { restart: true, crashes: 2 }); // the crashes at 0 and 10 s are out of the window
    policy.reset();
    assert.deepEqual(policy.crashed(70_001), { restart: true, crashes: 1 });
  });

  it("says why it gave up: exit status and the last error line", () => {
    const stderr = ["INFO loading", "Traceback (most recent call last):", "ValueError: not a GGUF file", "INFO bye"];
    const text = giveUpMessage(4, 180_000, { code: 1, signal: null }, stderr);
    assert.ok(
      text.startsWith("The tandem server stopped 4 times in 3 minutes (exit code 1) and will not be restarted."),
    );
    assert.ok(text.includes("Last output: ValueError: not a GGUF file"));
    assert.ok(giveUpMessage(4, 180_000, { code: null, signal: "SIGKILL" }, []).includes("(killed by SIGKILL)"));
    assert.equal(lastError(["a", "b"]), "b");
    assert.equal(lastError([]), undefined);
    assert.equal(
      startFailedMessage("connection closed", { code: 2, signal: null }, [
        "usage: tandem",
        "tandem: error: unrecognized arguments: --stdio",
      ]),
      "the server stopped before it was ready (exit code 2): tandem: error: unrecognized arguments: --stdio — see the log (tandem: Show Log).",
    );
  });
});

describe("server log", () => {
  it("takes the level from Python's log records; a traceback keeps its record's level", () => {
    const lines = [
      "2025-11-23 19:55:01,123 INFO lsp_server.server: model loaded",
      "2025-11-23 19:55:02,001 ERROR lsp_server.server: generation failed",
      "Traceback (most recent call last):",
      '  File "x.py", line 1',
      "2025-11-23 19:55:03,000 WARNING lsp_server.config: tandem setting ignored",
      "2025-11-23 19:55:03,000 DEBUG pygls: sent",
    ];
    const levels: string[] = [];
    let level: ReturnType<typeof levelOf> | undefined;
    for (const line of lines) {
      level = levelOf(line, level);
      levels.push(level);
    }
    assert.deepEqual(levels, ["info", "error", "error", "error", "warn", "debug"]);
    assert.equal(levelOf("llama_model_load: loaded", undefined), "warn");
  });

  it("keeps the last lines", () => {
    const tail = new LineTail(2);
    for (const line of ["a", "", "b", "c"]) {
      tail.add(line);
    }
    assert.deepEqual(tail.text, ["b", "c"]);
  });
});
