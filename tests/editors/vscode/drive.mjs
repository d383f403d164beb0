// Drives a real VS Code (code-server in headless Chromium, through puppeteer-core) with the
// tandem extension installed from its .vsix, against the real server: types like a user, waits
// for what the workbench draws, and writes a record as JSON for test_vscode.py.
// Run: node drive.mjs   (inputs in $TANDEM_VSCODE_TEST, a JSON object; see test_vscode.py)
import * as fs from "node:fs";
import * as path from "node:path";
import puppeteer from "puppeteer-core";

const input = JSON.parse(process.env.TANDEM_VSCODE_TEST);
const TIMEOUT = input.timeoutMs;
const record = { steps: [] };

function save() {
  fs.writeFileSync(input.result, JSON.stringify(record, null, 2));
}

/** Poll `check` (sync or async) until it returns a truthy value; fail after `ms` saying what was awaited. */
async function until(what, check, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Text of the first file under `dir` whose name matches `pattern`, or "" while there is none. */
function readLog(dir, pattern) {
  if (!fs.existsSync(dir)) {
    return "";
  }
  const found = fs.readdirSync(dir, { recursive: true }).find((name) => pattern.test(String(name)));
  return found ? fs.readFileSync(path.join(dir, String(found)), "utf8") : "";
}
const serverLog = () => readLog(input.logs, /tandem\.tandem[/\\]tandem\.log$/);
const assistLog = () => readLog(input.logs, /tandem Assist\.log$/);
const count = (text, pattern) => (text.match(pattern) ?? []).length;

const browser = await puppeteer.launch({
  executablePath: input.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", `--user-data-dir=${input.profile}`],
  defaultViewport: { width: 1100, height: 660 },
});
const page = await browser.newPage();
page.setDefaultTimeout(TIMEOUT);

/** Save a screenshot of the smallest box around `selectors`' elements (the whole page when none). */
async function shot(name, ...selectors) {
  const boxes = [];
  for (const selector of selectors) {
    boxes.push(await (await page.waitForSelector(selector)).boundingBox());
  }
  const pad = 8;
  const viewport = page.viewport();
  const x = Math.max(0, Math.min(...boxes.map((b) => b.x)) - pad);
  const y = Math.max(0, Math.min(...boxes.map((b) => b.y)) - pad);
  const clip = boxes.length && {
    x,
    y,
    width: Math.min(viewport.width, Math.max(...boxes.map((b) => b.x + b.width)) + pad) - x,
    height: Math.min(viewport.height, Math.max(...boxes.map((b) => b.y + b.height)) + pad) - y,
  };
  await page.screenshot({ path: path.join(input.shots, `${name}.png`), ...(clip ? { clip } : {}) });
}

/** The status bar item's text and accessible label. */
const statusItem = () =>
  page.evaluate(() => {
    const item = document.getElementById("tandem.tandem.tandem.status");
    return item ? { text: item.textContent.trim(), label: item.getAttribute("aria-label") } : null;
  });

/** Ready: the status bar item names the model and counts tokens (not "tandem" or "loading model…"). */
const ready = async () => / tok · \$/.test((await statusItem())?.text ?? "");

/** The ghost text on screen: its first line (after the cursor) and the lines below, spaces as spaces. */
const ghost = () =>
  page.evaluate(() => {
    const text = (selector) =>
      [...document.querySelectorAll(selector)].map((node) => node.textContent.replace(/\u00a0/g, " "));
    const first = text(".ghost-text-decoration");
    return first.length ? { first: first.join(""), more: text(".suggest-preview-text") } : null;
  });

/** Run a command from the palette by its title, as a user does. */
async function palette(title) {
  await page.keyboard.press("F1");
  await page.waitForSelector(".quick-input-widget input:focus");
  await page.keyboard.type(title);
  await page.waitForFunction(
    (t) =>
      [...document.querySelectorAll(".quick-input-list .monaco-list-row")].some((row) =>
        row.getAttribute("aria-label")?.startsWith(t),
      ),
    {},
    title,
  );
  await page.keyboard.press("Enter");
}

/** Type like a user: a key at a time, a pause between words. */
async function typeSlowly(text) {
  for (const word of text.split(/(?<= )/)) {
    await page.keyboard.type(word, { delay: 60 });
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** Type `lines` at the end of the file (Enter between them), then wait for ghost text. */
async function typeAndWaitForGhost(lines) {
  await page.keyboard.press("Escape");
  await page.keyboard.down("Control");
  await page.keyboard.press("End");
  await page.keyboard.up("Control");
  for (const [i, line] of lines.entries()) {
    if (i > 0) {
      await page.keyboard.press("Enter");
    }
    await typeSlowly(line);
  }
  await until("ghost text", ghost);
  return ghost();
}

async function step(name, body) {
  const entry = { name };
  record.steps.push(entry);
  save();
  await body(entry);
  entry.done = true;
  save();
}

/** Select whole lines `first`..`last` (1-based) and run a tandem command on them; wait for its answer. */
async function assist(title, first, last) {
  const answers = count(assistLog(), /^_.*_$/gm);
  await page.keyboard.press("Escape");
  await page.keyboard.down("Control");
  await page.keyboard.press("Home");
  await page.keyboard.up("Control");
  for (let i = 1; i < first; i++) {
    await page.keyboard.press("ArrowDown");
  }
  await page.keyboard.down("Shift");
  for (let i = first; i < last; i++) {
    await page.keyboard.press("ArrowDown");
  }
  await page.keyboard.press("End");
  await page.keyboard.up("Shift");
  await palette(title);
  // the answer ends with an italic footer line naming who served it
  await until(`the answer to ${title}`, () => count(assistLog(), /^_.*_$/gm) > answers, input.assistTimeoutMs);
  const log = assistLog();
  return log.slice(log.lastIndexOf("\n## "));
}

try {
  await step("open", async (entry) => {
    await page.goto(`${input.url}/?folder=${encodeURIComponent(input.folder)}`);
    await page.waitForSelector(".monaco-workbench .part.statusbar");
    await until("the status bar to show the loaded model", ready);
    entry.status = await statusItem();
    // Quick Open; on a fresh profile the file's row comes once the folder is indexed
    await page.keyboard.down("Control");
    await page.keyboard.press("p");
    await page.keyboard.up("Control");
    await page.waitForSelector(".quick-input-widget input:focus");
    await page.keyboard.type(path.basename(input.file));
    await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${path.basename(input.file)}"]`);
    await page.keyboard.press("Enter");
    await page.waitForSelector(".monaco-editor.focused");
  });

  await step("ghost", async (entry) => {
    entry.ghost = await typeAndWaitForGhost(input.typed);
    await shot(
      "vscode-ghost-text",
      ".tabs-and-actions-container",
      ".monaco-editor .view-line:has(.ghost-text-decoration)",
    );
    // Tab takes what is shown (it may have grown since: the suggestion streams)
    entry.shown = await until("ghost text", ghost);
    await page.keyboard.press("Tab");
    // What was shown goes; the rest of a suggestion that was still growing, or the next one (prefetched after
    // an accept), may show at once in its place, so wait for this ghost text to go, not for any
    await until("the ghost text to go", async () => (await ghost())?.first !== entry.shown.first);
    await page.keyboard.down("Control");
    await page.keyboard.press("s");
    await page.keyboard.up("Control");
    // (code-server may also save on its own: wait for the accepted text, not for any change)
    entry.saved = await until("the file to be saved with the accepted text", () => {
      const text = fs.readFileSync(input.file, "utf8");
      return text.includes(entry.shown.first) && text;
    });
  });

  await step("status", async (entry) => {
    await until("the status to count tokens", async () => !/· 0 tok ·/.test((await statusItem()).text));
    entry.status = await statusItem();
    await page.hover('[id="tandem.tandem.tandem.status"]');
    const hover = await page.waitForSelector(".workbench-hover", { visible: true });
    entry.tooltip = await hover.evaluate((node) => node.textContent);
    await shot("vscode-status", ".workbench-hover", '[id="tandem.tandem.tandem.status"]');
    await page.mouse.move(300, 300);
  });

  await step("settings", async (entry) => {
    // as a user does: add a line to settings.json in the editor and save it
    const changes = count(serverLog(), /settings changed/g);
    await palette("Preferences: Open User Settings (JSON)");
    await page.waitForSelector('.tab.active[aria-label*="settings.json"]');
    await page.waitForSelector(".monaco-editor.focused");
    await page.keyboard.down("Control");
    await page.keyboard.press("End");
    await page.keyboard.up("Control");
    await page.keyboard.press("Home");
    await page.keyboard.press("ArrowLeft");
    await page.keyboard.type(",");
    await page.keyboard.press("Enter");
    await typeSlowly(input.settingsLine);
    await page.keyboard.down("Control");
    await page.keyboard.press("s");
    await page.keyboard.up("Control");
    await until("the extension to see the change", () => count(serverLog(), /settings changed/g) > changes);
    entry.settings = fs.readFileSync(input.userSettings, "utf8");
    await page.keyboard.down("Control");
    await page.keyboard.press("w");
    await page.keyboard.up("Control");
    await page.waitForSelector(`.tab.active[aria-label*="${path.basename(input.file)}"]`);
    await page.waitForSelector(".monaco-editor.focused");
    entry.ghost = await typeAndWaitForGhost(input.typedAfterSettings);
  });

  await step("restarts", async (entry) => {
    entry.count = 0;
    for (let i = 0; i < input.restarts; i++) {
      const loads = count(serverLog(), /INFO lsp_server\S*: loaded /g);
      await palette("tandem: Restart Server");
      await until(
        `restart ${i + 1} to load the model`,
        () => count(serverLog(), /INFO lsp_server\S*: loaded /g) > loads,
      );
      await until(`restart ${i + 1} to be ready`, ready);
      entry.count += 1;
      save();
    }
    entry.ghost = await typeAndWaitForGhost(input.typedAfterRestarts);
  });

  await step("explain_local", async (entry) => {
    entry.answer = await assist("tandem: Explain", ...input.explainLines);
  });

  await step("explain_cloud", async (entry) => {
    const starts = count(serverLog(), /\] starting /g);
    await palette("tandem: Set OpenAI API Key");
    await page.waitForSelector('.quick-input-widget input[type="password"]:focus');
    await page.keyboard.type(input.apiKey);
    await page.keyboard.press("Enter");
    await until("the server to restart with the key", () => count(serverLog(), /\] starting /g) > starts);
    await until("the status bar to show the loaded model", ready);
    entry.answer = await assist("tandem: Explain", ...input.explainLines);
    await shot("vscode-explain");
  });
} catch (error) {
  record.error = String(error?.stack ?? error);
  await page.screenshot({ path: path.join(input.shots, "failure.png") }).catch(() => {});
} finally {
  record.notifications = await page
    .evaluate(() => [...document.querySelectorAll(".notification-list-item")].map((n) => n.textContent))
    .catch(() => []);
  save();
  await browser.close();
}
