// A sweep's --report file in a real headless Chromium: what each chart drew,
// read from the rendered SVG (the browser's own parse of every line's points,
// the dots, the dashed markers and where they stand), plus a screenshot.
//
//   node --experimental-websocket tests/browser/sweep-report.mjs file:///…/sweep.html SHOT.png
//
// Prints one JSON line:
// {"charts":[{"title", "limits":[…], "width", "lines":[{"name","points","xs":[…],"dots","shown"}],
//   "marks":[{"mark","limit","x","label","dashed","shown"}]}], "external", "scripts", "recommendation"}.
// Exits non-zero when the file cannot be loaded or read.
import { launch } from "./cdp.mjs";

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error("usage: sweep-report.mjs file:///…/sweep.html SHOT.png");
  process.exit(2);
}
const b = await launch("sweep-report");
await b.navigate(url);
await b.waitFor("document.readyState === 'complete' && document.querySelectorAll('svg').length > 0", "the report did not load");
const seen = await b.evaluate(`JSON.stringify({
  charts: [...document.querySelectorAll('svg')].map((svg) => {
    const shown = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 || r.height > 0; };
    return {
      title: svg.querySelector('text').textContent,
      limits: (svg.dataset.limits || '').split(',').filter(Boolean).map(Number),
      width: svg.getBoundingClientRect().width,
      lines: [...svg.querySelectorAll('polyline')].map((pl) => {
        const xs = [];
        for (let i = 0; i < pl.points.numberOfItems; i++) xs.push(pl.points.getItem(i).x);
        const colour = pl.getAttribute('stroke');
        return {
          name: pl.dataset.line,
          points: pl.points.numberOfItems,
          xs,
          dots: [...svg.querySelectorAll('circle')].filter((c) => c.getAttribute('fill') === colour).length,
          shown: shown(pl),
        };
      }),
      marks: [...svg.querySelectorAll('line[stroke-dasharray]')].map((m) => ({
        mark: m.dataset.mark,
        limit: Number(m.dataset.limit),
        x: m.x1.baseVal.value,
        label: m.nextElementSibling && m.nextElementSibling.textContent,
        dashed: m.getAttribute('stroke-dasharray'),
        shown: shown(m),
      })),
    };
  }),
  external: document.querySelectorAll('script[src], link[href], img[src], image, use[href]').length,
  scripts: document.querySelectorAll('script').length,
  recommendation: document.querySelector('p').textContent,
})`);
await b.screenshot(shot);
console.log(seen);
await b.finish(0);
