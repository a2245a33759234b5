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
import { launch, sleep } from "./cdp.mjs";

const [url, wantAnswers, shot] = process.argv.slice(2);
if (!url || !wantAnswers || !shot) {
  console.error("usage: live-page.mjs URL ANSWERS SHOT.png");
  process.exit(2);
}
const b = await launch("live-page", 120_000);
const dataset = async () =>
  JSON.parse((await b.evaluate("JSON.stringify(Object.assign({}, document.body.dataset))")) || "{}");
await b.navigate(url);

// A client's --report file: no server, no polling; read what it draws.
if (url.startsWith("file:")) {
  await b.waitFor("document.readyState === 'complete'", "the report did not load");
  const seen = await b.evaluate(`JSON.stringify({
      dots: document.querySelectorAll('svg rect[fill="#1a7f37"]').length,
      errors: document.querySelectorAll('svg rect[fill="#c0152f"], svg rect[fill="#b35900"]').length,
      expected: [...document.querySelectorAll('svg rect[stroke-dasharray]')].length,
      verdict: document.querySelector('p').textContent,
      external: [...document.querySelectorAll('script[src], link[href], img[src]')].length })`);
  await b.screenshot(shot);
  console.log(seen);
  await b.finish(0);
}
// Loaded and polling: the page has drawn at least once.
await b.waitFor("!!document.body.dataset.run", "the page never rendered /live");
console.log("ready");
let d;
for (;;) {
  d = await dataset();
  if (Number(d.answers) >= Number(wantAnswers) && Number(d.inUse) === 0 && Number(d.waiting) === 0) break;
  if (Date.now() > b.deadline) b.fail(`the page showed ${d.answers} answers, waiting for ${wantAnswers}`);
  await sleep(100);
}
await sleep(600); // one more poll so the picture is final
await b.screenshot(shot);
const runText = await b.evaluate("document.getElementById('run-text').textContent");
console.log(JSON.stringify({ ...d, runText }));
await b.finish(0);
