// Opens the live page in a real headless Chromium (Debian's `chromium`) over
// the DevTools protocol, watches it while a run happens, and reports what the
// page itself showed (its <body data-*>), plus a screenshot.
//
//   node --experimental-websocket tests/browser/live-page.mjs URL ANSWERS SHOT.png
//
// With a file:// URL (a client's --report file) it only loads it and prints
// what the picture holds (dots by colour, expected waves, the verdict).
//
// Prints `ready` once the page is loaded (the caller then starts the run), then
// one JSON line when the page shows ANSWERS answers and nothing in flight:
// {"maxInUse":…, "maxWaiting":…, "answers":…, "waves":…, …}. Exits non-zero
// on any failure; gives up after 120 s. No npm package: Node's own WebSocket.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, wantAnswers, shot] = process.argv.slice(2);
if (!url || !wantAnswers || !shot) {
  console.error("usage: live-page.mjs URL ANSWERS SHOT.png");
  process.exit(2);
}
if (typeof WebSocket === "undefined") {
  console.error("this Node has no WebSocket: run with --experimental-websocket (Node >= 20.10)");
  process.exit(2);
}
const browser = process.env.CHROMIUM || "chromium";
const profile = mkdtempSync(join(tmpdir(), "poolscope-chromium-"));
const chrome = spawn(browser, [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`,
  "--window-size=1280,900", "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
let chromeErr = "";
chrome.stderr.on("data", (d) => { chromeErr += d; });
const deadline = Date.now() + 120_000;
const fail = (msg) => {
  console.error(`live-page: ${msg}`);
  if (chromeErr) console.error(chromeErr.split("\n").slice(-5).join("\n"));
  chrome.kill("SIGKILL");
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* a temp dir */ }
  process.exit(1);
};
setTimeout(() => fail("gave up after 120 s"), 120_000).unref();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Stops Chromium, waits for it (at most 3 s), removes its profile.
const finish = async (code) => {
  const exited = new Promise((r) => chrome.once("exit", r));
  chrome.kill("SIGTERM");
  await Promise.race([exited, sleep(3000)]);
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* a temp dir */ }
  process.exit(code);
};

// Chromium writes its port to DevToolsActivePort in the profile.
let port;
while (!port) {
  if (Date.now() > deadline) fail("Chromium did not start");
  const f = join(profile, "DevToolsActivePort");
  if (existsSync(f)) port = readFileSync(f, "utf8").split("\n")[0];
  else await sleep(100);
}
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const page = targets.find((t) => t.type === "page");
if (!page) fail("no page target");
const ws = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((ok, ko) => { ws.onopen = ok; ws.onerror = () => ko(new Error("websocket")); });
let nextId = 1;
const pending = new Map();
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.id && pending.has(msg.id)) {
    const { ok, ko } = pending.get(msg.id);
    pending.delete(msg.id);
    msg.error ? ko(new Error(JSON.stringify(msg.error))) : ok(msg.result);
  }
};
const send = (method, params = {}) => new Promise((ok, ko) => {
  const id = nextId++;
  pending.set(id, { ok, ko });
  ws.send(JSON.stringify({ id, method, params }));
});
const dataset = async () => {
  const r = await send("Runtime.evaluate", {
    expression: "JSON.stringify(Object.assign({}, document.body.dataset))", returnByValue: true,
  });
  return JSON.parse(r.result.value || "{}");
};

await send("Page.enable");
await send("Page.navigate", { url });

// A client's --report file: no server, no polling; read what it draws.
if (url.startsWith("file:")) {
  let state;
  for (;;) {
    state = await send("Runtime.evaluate", { expression: "document.readyState", returnByValue: true });
    if (state.result.value === "complete") break;
    if (Date.now() > deadline) fail("the report did not load");
    await sleep(100);
  }
  const seen = await send("Runtime.evaluate", {
    returnByValue: true,
    expression: `JSON.stringify({
      dots: document.querySelectorAll('svg rect[fill="#1a7f37"]').length,
      errors: document.querySelectorAll('svg rect[fill="#c0152f"], svg rect[fill="#b35900"]').length,
      expected: [...document.querySelectorAll('svg rect[stroke-dasharray]')].length,
      verdict: document.querySelector('p').textContent,
      external: [...document.querySelectorAll('script[src], link[href], img[src]')].length })`,
  });
  const png = await send("Page.captureScreenshot", { format: "png" });
  writeFileSync(shot, Buffer.from(png.data, "base64"));
  console.log(seen.result.value);
  ws.close();
  await finish(0);
}
// Loaded and polling: the page has drawn at least once.
while (!(await dataset()).run) {
  if (Date.now() > deadline) fail("the page never rendered /live");
  await sleep(100);
}
console.log("ready");
let d;
for (;;) {
  d = await dataset();
  if (Number(d.answers) >= Number(wantAnswers) && Number(d.inUse) === 0 && Number(d.waiting) === 0) break;
  if (Date.now() > deadline) fail(`the page showed ${d.answers} answers, waiting for ${wantAnswers}`);
  await sleep(100);
}
await sleep(600); // one more poll so the picture is final
const png = await send("Page.captureScreenshot", { format: "png" });
writeFileSync(shot, Buffer.from(png.data, "base64"));
const text = await send("Runtime.evaluate", { expression: "document.getElementById('run-text').textContent", returnByValue: true });
console.log(JSON.stringify({ ...d, runText: text.result.value }));
ws.close();
await finish(0);
