// A headless Chromium (Debian's `chromium`, or $CHROMIUM) driven over the
// DevTools protocol with Node's own WebSocket (no npm package). Shared by the
// browser scripts that ask a page what it drew:
//
//   const b = await launch("name");       // Chromium started, one page attached
//   await b.navigate(url);
//   const v = await b.evaluate("1 + 1");  // by value
//   await b.screenshot("shot.png");
//   await b.finish(0);                     // stops Chromium, removes its profile, exits
//
// `b.fail(msg)` prints why, kills Chromium and exits 1. Every script gives up
// after `limitMs` (default 60 s).
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function launch(name, limitMs = 60_000) {
  if (typeof WebSocket === "undefined") {
    console.error(`${name}: this Node has no WebSocket: run with --experimental-websocket (Node >= 20.10)`);
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
  const deadline = Date.now() + limitMs;
  const fail = (msg) => {
    console.error(`${name}: ${msg}`);
    if (chromeErr) console.error(chromeErr.split("\n").slice(-5).join("\n"));
    chrome.kill("SIGKILL");
    try { rmSync(profile, { recursive: true, force: true }); } catch { /* a temp dir */ }
    process.exit(1);
  };
  setTimeout(() => fail(`gave up after ${limitMs / 1000} s`), limitMs).unref();
  chrome.once("exit", (code) => fail(`Chromium exited (${code})`));

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
  // An expression's value; a thrown exception fails the script.
  const evaluate = async (expression) => {
    const r = await send("Runtime.evaluate", { expression, returnByValue: true });
    if (r.exceptionDetails) fail(`${expression.slice(0, 60)}…: ${JSON.stringify(r.exceptionDetails)}`);
    return r.result.value;
  };
  await send("Page.enable");
  return {
    deadline,
    send,
    evaluate,
    fail,
    navigate: (url) => send("Page.navigate", { url }),
    // Polls `expression` every `everyMs` until it is truthy; returns its value.
    async waitFor(expression, what, everyMs = 100) {
      for (;;) {
        const v = await evaluate(expression);
        if (v) return v;
        if (Date.now() > deadline) fail(`${what}: not within ${limitMs / 1000} s`);
        await sleep(everyMs);
      }
    },
    async screenshot(file) {
      const png = await send("Page.captureScreenshot", { format: "png" });
      writeFileSync(file, Buffer.from(png.data, "base64"));
    },
    // Stops Chromium, waits for it (at most 3 s), removes its profile, exits.
    async finish(code) {
      ws.close();
      chrome.removeAllListeners("exit");
      const exited = new Promise((r) => chrome.once("exit", r));
      chrome.kill("SIGTERM");
      await Promise.race([exited, sleep(3000)]);
      try { rmSync(profile, { recursive: true, force: true }); } catch { /* a temp dir */ }
      process.exit(code);
    },
  };
}
