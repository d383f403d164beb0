// The cloud as the server sees it: an OpenAI-compatible HTTP server on 127.0.0.1 that streams
// scripted chat replies (no real cloud can be reached here) and records each request.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface Seen {
  path: string;
  authorization: string;
  body: { model?: string; messages?: { role: string; content: string }[]; max_tokens?: number };
}

export class ScriptedCloud {
  readonly seen: Seen[] = [];
  /** Replies for the next requests, in order; "Hello there." when none is left. */
  readonly replies: string[] = [];
  private readonly server: http.Server;

  private constructor() {
    this.server = http.createServer((request, response) => this.answer(request, response));
  }

  /** Start listening on a free port of 127.0.0.1. */
  static async start(): Promise<ScriptedCloud> {
    const cloud = new ScriptedCloud();
    await new Promise<void>((resolve) => cloud.server.listen(0, "127.0.0.1", resolve));
    return cloud;
  }

  /** The base URL, as `cloud.baseUrl` takes it. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private answer(request: http.IncomingMessage, response: http.ServerResponse): void {
    let raw = "";
    request.on("data", (chunk: Buffer) => {
      raw += chunk.toString("utf8");
    });
    request.on("end", () => {
      if (request.method === "GET" && request.url?.endsWith("/models")) {
        response.writeHead(200, { "Content-Type": "application/json" });
        response.end(JSON.stringify({ object: "list", data: [{ id: "gpt-4o", object: "model" }] }));
        return;
      }
      const body = raw ? JSON.parse(raw) : {};
      this.seen.push({ path: request.url ?? "", authorization: request.headers.authorization ?? "", body });
      const reply = this.replies.shift() ?? "Hello there.";
      const pieces = reply.match(/[\s\S]{1,6}/g) ?? [];
      const events: unknown[] = [
        { choices: [{ index: 0, delta: { role: "assistant" } }] },
        ...pieces.map((piece) => ({ choices: [{ index: 0, delta: { content: piece } }] })),
        { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] },
      ];
      const prompt = Math.floor(JSON.stringify(body.messages ?? "").length / 4);
      events.push({
        choices: [],
        usage: { prompt_tokens: prompt, completion_tokens: pieces.length, total_tokens: prompt + pieces.length },
      });
      response.writeHead(200, { "Content-Type": "text/event-stream", Connection: "close" });
      for (const event of events) {
        response.write(`data: ${JSON.stringify(event)}\n\n`);
      }
      response.end("data: [DONE]\n\n");
    });
  }
}
