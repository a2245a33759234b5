// The live page's "last minute" chart in a real headless Chromium: what the
// page itself says it drew (window.__drawn.history, one entry per line:
// points, max, last value, dashed), plus a screenshot of the chart.
//
//   node --experimental-websocket tests/browser/live-history.mjs URL LIMIT SHOT.png
//
// Prints `ready` once the page has drawn the chart (the caller then lowers the
// pool's limit to LIMIT and sends load), then one JSON line as soon as the
// chart shows LIMIT connections in use, requests waiting, PostgreSQL backends and
// the limit line at LIMIT — or, after 20 s, what it showed instead, with
// "timedOut": true. Exits non-zero only when the page cannot be read.
import { launch, sleep } from "./cdp.mjs";

const [url, wantLimit, shot] = process.argv.slice(2);
if (!url || !wantLimit || !shot) {
  console.error("usage: live-history.mjs URL LIMIT SHOT.png");
  process.exit(2);
}
const b = await launch("live-history");
await b.navigate(url);
const drawn = () => b.evaluate("JSON.stringify(window.__drawn || null)").then(JSON.parse);
await b.waitFor("Boolean(window.__drawn && window.__drawn.history.limit.points > 0)", "the page never drew the last minute");
console.log("ready");

const started = Date.now();
const shown = (d) => {
  const h = d.history;
  return h.inUse.max >= Number(wantLimit) && h.waiting.max >= 1 && h.backends.max >= 1 && h.limit.last === Number(wantLimit);
};
let d = await drawn();
while (!shown(d) && Date.now() - started < 20_000) {
  await sleep(100);
  d = await drawn();
}
const timedOut = !shown(d);
const waitedMs = Date.now() - started;
await b.evaluate("document.getElementById('history').scrollIntoView(), true");
await sleep(300); // the next poll redraws the chart where it now is
await b.screenshot(shot);
const canvas = await b.evaluate(`(() => {
  const c = document.getElementById('history');
  return { width: c.width, height: c.height, shownWidth: c.clientWidth };
})()`);
console.log(JSON.stringify({ ...d, canvas, waitedMs, timedOut }));
await b.finish(0);
