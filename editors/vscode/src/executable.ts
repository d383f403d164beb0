// Finding the server's executable before starting it, so that a missing one gets a helpful
// message instead of the language client's generic "couldn't create connection".
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

/** Whether `file` is a file this process may execute. */
export function isExecutable(file: string): boolean {
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile()) {
      return false;
    }
    fs.accessSync(file, process.platform === "win32" ? fs.constants.F_OK : fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The path `command` runs: itself when it names a path (`~` expanded, relative to `cwd`),
 * else the first match on `PATH` (with `PATHEXT` on Windows); undefined when nothing matches.
 */
export function findExecutable(
  command: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  platform: NodeJS.Platform = process.platform,
  check: (file: string) => boolean = isExecutable,
): string | undefined {
  const paths = platform === "win32" ? path.win32 : path.posix;
  const extensions =
    platform === "win32" ? ["", ...(env.PATHEXT ?? ".EXE;.CMD;.BAT;.COM").split(";").filter(Boolean)] : [""];
  const expanded = command.startsWith("~/") ? paths.join(os.homedir(), command.slice(2)) : command;
  const candidates = (base: string): string[] => extensions.map((ext) => base + ext);
  if (expanded.includes("/") || (platform === "win32" && expanded.includes("\\"))) {
    return candidates(paths.resolve(cwd, expanded)).find(check);
  }
  const dirs = (env.PATH ?? env.Path ?? "").split(paths.delimiter).filter(Boolean);
  for (const dir of dirs) {
    const found = candidates(paths.join(dir, expanded)).find(check);
    if (found !== undefined) {
      return found;
    }
  }
  return undefined;
}
