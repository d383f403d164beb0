// What the status bar and the usage view show, from `tandem.status` and `tandem.usage`.
// No `vscode` import: unit-testable.

/** A ledger row as `tandem.usage` reports it. */
export interface UsageRow {
  backend: string;
  model: string;
  kind: string;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
}

export interface UsagePeriod {
  rows: UsageRow[];
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
}

/** The parts of `tandem.usage` the extension reads. */
export interface UsageReport {
  totals: UsageRow[];
  periods?: { today?: UsagePeriod; thisMonth?: UsagePeriod; allTime?: UsagePeriod };
  savedUsd?: number;
  localShare?: number;
  ledger?: string;
}

/** The parts of `tandem.status` the extension reads. */
export interface ServerStatus {
  model?: { state?: string; name?: string; file?: string; error?: string; gpuOffload?: unknown; fim?: string | null };
  counters?: Record<string, number>;
  /** Request to answer of the suggestions the model wrote. */
  latencyMs?: { count?: number; p50?: number; p95?: number };
  /** The same for typed-ahead hits (answered without the model), counted apart. */
  cacheHitLatencyMs?: { count?: number; p50?: number; p95?: number };
  /** Where the last suggestion's time went, in ms; `model` is 0 for a typed-ahead hit. */
  lastTiming?: { total?: number; model?: number };
  backends?: { cloud?: { configured?: boolean; healthy?: boolean | null; lastError?: string | null; model?: string } };
}

/** Everything the status bar item depends on. */
export interface View {
  phase: "starting" | "running" | "stopped" | "failed";
  paused: boolean;
  busy: boolean;
  problem?: string;
  status?: ServerStatus;
  usage?: UsageReport;
}

export interface StatusBarContent {
  text: string;
  /** Markdown. */
  tooltip: string;
  /** Plain text for screen readers: no Markdown, no icons. */
  label: string;
  command: string;
  error: boolean;
}

const CLOUD = "cloud";

/** 950, 1.2k, 3.4M. */
export function compact(n: number): string {
  if (n < 1000) {
    return String(Math.round(n));
  }
  const [value, unit] = n < 999_500 ? [n / 1e3, "k"] : [n / 1e6, "M"];
  return `${value >= 100 ? Math.round(value) : Number(value.toFixed(1))}${unit}`;
}

/** $0.00, <$0.01, $1.23. */
export function usd(amount: number): string {
  if (amount > 0 && amount < 0.01) {
    return "<$0.01";
  }
  return `$${amount.toFixed(2)}`;
}

/** Tokens and cloud cost of a period. */
export function periodTotals(period: UsagePeriod | undefined): { tokens: number; cloudUsd: number } {
  if (period === undefined) {
    return { tokens: 0, cloudUsd: 0 };
  }
  const cloudUsd = period.rows.filter((row) => row.backend === CLOUD).reduce((sum, row) => sum + row.costUsd, 0);
  return { tokens: period.promptTokens + period.completionTokens, cloudUsd };
}

/** The model's short name: no `.gguf`, at most 28 characters. */
export function modelName(status: ServerStatus | undefined): string {
  const name = (status?.model?.name || status?.model?.file || "model").replace(/\.gguf$/i, "");
  return name.length > 28 ? `${name.slice(0, 27)}…` : name;
}

/** Where commands go: `local`, `local+cloud`, or `local (cloud down)`. */
export function route(status: ServerStatus | undefined): string {
  const cloud = status?.backends?.cloud;
  if (!cloud?.configured) {
    return "local";
  }
  return cloud.healthy === false ? "local (cloud down)" : "local+cloud";
}

/** The status bar item: text, Markdown tooltip, plain label, click command, and whether it shows an error. */
export function statusBar(view: View): StatusBarContent {
  const state = view.status?.model?.state;
  const problem =
    view.problem ?? (state === "error" ? `model: ${view.status?.model?.error ?? "failed to load"}` : undefined);
  if (view.phase === "failed" || problem !== undefined) {
    const why = problem ?? "the server is not running";
    return {
      text: "$(error) tandem",
      tooltip: `**tandem: ${escape(why)}**\n\nClick to open the log.`,
      label: `tandem, error: ${why}. Opens the log.`,
      command: "tandem.showLog",
      error: true,
    };
  }
  if (view.phase === "stopped") {
    return {
      text: "$(debug-stop) tandem",
      tooltip: "tandem: the server is stopped.",
      label: "tandem: the server is stopped.",
      command: "tandem.menu",
      error: false,
    };
  }
  if (view.phase === "starting" || view.status === undefined) {
    return {
      text: "$(loading~spin) tandem",
      tooltip: "tandem: starting the server…",
      label: "tandem: starting the server.",
      command: "tandem.showLog",
      error: false,
    };
  }
  const icon = view.busy ? "$(sync~spin)" : view.paused ? "$(circle-slash)" : "$(sparkle)";
  const today = periodTotals(view.usage?.periods?.today);
  const ready = state === "ready";
  const model = ready ? modelName(view.status) : state === "loading" ? "loading model…" : (state ?? "starting");
  const parts = ready ? [model, route(view.status), `${compact(today.tokens)} tok`, usd(today.cloudUsd)] : [model];
  const spoken = ready
    ? [model, route(view.status), `${compact(today.tokens)} tokens today`, `cloud ${usd(today.cloudUsd)} today`]
    : [model];
  if (view.paused) {
    parts.push("paused");
    spoken.push("paused");
  }
  if (view.busy) {
    spoken.push("working");
  }
  return {
    text: `${icon} ${parts.join(" · ")}`,
    tooltip: tooltip(view),
    label: `tandem: ${spoken.join(", ")}`,
    command: "tandem.menu",
    error: false,
  };
}

function tooltip(view: View): string {
  const status = view.status;
  const model = status?.model;
  const cloud = status?.backends?.cloud;
  const today = periodTotals(view.usage?.periods?.today);
  const month = periodTotals(view.usage?.periods?.thisMonth);
  const lines = [
    `**tandem** — ${view.paused ? "inline completions paused" : "inline completions on"}`,
    "",
    `Model: ${escape(model?.name ?? model?.file ?? "?")} (${escape(model?.state ?? "?")}${model?.fim ? `, FIM ${escape(model.fim)}` : ""})`,
  ];
  if (model?.gpuOffload !== undefined) {
    lines.push(`GPU offload: ${escape(String(model.gpuOffload))}`);
  }
  lines.push(
    cloud?.configured
      ? `Cloud: ${escape(cloud.model ?? "configured")}${cloud.healthy === false ? ` — unavailable: ${escape(cloud.lastError ?? "")}` : ""}`
      : "Cloud: not configured (tandem: Set OpenAI API Key)",
    `Today: ${compact(today.tokens)} tokens, cloud ${usd(today.cloudUsd)}; this month: cloud ${usd(month.cloudUsd)}`,
  );
  const latency = status?.latencyMs;
  if (latency?.p50 !== undefined) {
    lines.push(
      `Suggestions the model wrote${latency.count ? ` (${latency.count})` : ""}: p50 ${latency.p50} ms, p95 ${latency.p95 ?? "?"} ms from request to answer`,
    );
  }
  const hits = status?.cacheHitLatencyMs;
  if (hits?.count) {
    lines.push(`Typed-ahead hits, answered without the model: ${hits.count}`);
  }
  const last = status?.lastTiming;
  if (last?.model) {
    lines.push(
      `Last suggestion the model wrote: ${Math.round(last.model)} ms in the model, ${Math.round(last.total ?? 0)} ms from request to answer`,
    );
  }
  lines.push("", "Click for the tandem menu.");
  return lines.join("  \n");
}

function escape(text: string): string {
  return text.replace(/[\\`*_{}[\]<>|#]/g, (char) => `\\${char}`);
}

/** `tandem.usage` as a Markdown page: one table per period. */
export function usageMarkdown(report: UsageReport): string {
  const periods: [string, UsagePeriod | undefined][] = [
    ["Today", report.periods?.today],
    ["This month", report.periods?.thisMonth],
    ["All time", report.periods?.allTime ?? { rows: report.totals, ...sums(report.totals) }],
  ];
  const out = ["# tandem usage", ""];
  for (const [title, period] of periods) {
    out.push(`## ${title}`, "");
    if (!period?.rows.length) {
      out.push("No requests.", "");
      continue;
    }
    out.push(
      "| backend | model | task | requests | prompt tokens | completion tokens | cost |",
      "|---|---|---|--:|--:|--:|--:|",
      ...period.rows.map(
        (row) =>
          `| ${cell(row.backend)} | ${cell(row.model)} | ${cell(row.kind)} | ${row.requests} | ${row.promptTokens} | ${row.completionTokens} | ${usd(row.costUsd)} |`,
      ),
      `| **total** | | | ${period.rows.reduce((sum, row) => sum + row.requests, 0)} | ${period.promptTokens} | ${period.completionTokens} | ${usd(period.costUsd)} |`,
      "",
    );
  }
  if (report.savedUsd !== undefined && report.localShare !== undefined) {
    out.push(
      `Local share of all tokens: ${Math.round(report.localShare * 100)}%; saved versus the cloud: ${usd(report.savedUsd)}.`,
      "",
    );
  }
  if (report.ledger) {
    out.push(`Ledger: \`${report.ledger}\``, "");
  }
  return out.join("\n");
}

function sums(rows: UsageRow[]): Omit<UsagePeriod, "rows"> {
  return {
    promptTokens: rows.reduce((sum, row) => sum + row.promptTokens, 0),
    completionTokens: rows.reduce((sum, row) => sum + row.completionTokens, 0),
    costUsd: rows.reduce((sum, row) => sum + row.costUsd, 0),
  };
}

function cell(text: string): string {
  return String(text).replace(/\|/g, "\\|");
}
