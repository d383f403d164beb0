// Makes `require("vscode")` load the stand-in: import this before anything that imports vscode.
import Module = require("node:module");

const stub = require.resolve("./vscode");
const internal = Module as unknown as { _resolveFilename(request: string, ...rest: unknown[]): string };
const resolve = internal._resolveFilename;
internal._resolveFilename = function (request: string, ...rest: unknown[]): string {
  return request === "vscode" ? stub : resolve.call(this, request, ...rest);
};
