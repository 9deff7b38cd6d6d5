// Opens a local HTML page in headless Chromium (puppeteer-core driving Debian's chromium), waits until every
// tf_facetex viewer on it (the page or its iframes) has drawn its first frame, takes a screenshot and prints a JSON
// report: {"console": [every console message and page error], "errors": [the error ones], "viewers": [{url, frames,
// error}], "screenshot": path}. Exits 1 on a timeout.
// Usage: NODE_PATH=~/.cache/tf_facetex/npm/node_modules node scripts/screenshot_page.js page.html out.png [W H]
const path = require("path");
const puppeteer = require("puppeteer-core");

async function main([page_path, out, width = "1100", height = "700"]) {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // WebGL on the CPU: SwiftShader through ANGLE (no GPU here).
    args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
           `--window-size=${width},${height}`],
  });
  const messages = [], errors = [];
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: +width, height: +height });
    const note = (kind, text, where) => {
      messages.push({ kind, text, where });
      if (kind === "error" || kind === "pageerror" || kind === "requestfailed") errors.push({ kind, text, where });
    };
    page.on("console", (msg) => note(msg.type(), msg.text(), msg.location() && msg.location().url));
    page.on("pageerror", (err) => note("pageerror", String(err), ""));
    page.on("requestfailed", (req) => note("requestfailed", `${req.url()} ${req.failure() && req.failure().errorText}`, ""));
    await page.goto("file://" + path.resolve(page_path), { waitUntil: "load", timeout: 120000 });
    const deadline = Date.now() + 120000;
    let viewers = [];
    for (;;) {
      viewers = [];
      for (const frame of page.frames()) {
        const state = await frame.evaluate(() => window.facetexViewer
          ? { frames: window.facetexViewer.frames, error: window.facetexViewer.error } : null).catch(() => null);
        if (state) viewers.push({ url: frame.url(), ...state });
      }
      const expected = await page.evaluate(() => document.querySelectorAll("iframe.viewer").length || 1);
      const done = viewers.length >= expected && viewers.every((v) => v.frames > 0 || v.error);
      if (done) break;
      if (Date.now() > deadline) {
        console.log(JSON.stringify({ timeout: true, console: messages, errors, viewers }));
        process.exit(1);
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    await page.screenshot({ path: out });
    // Where the viewers are on the screenshot (CSS px = screenshot px at device scale 1): [left, top, width, height].
    const rects = await page.evaluate(() => {
      const frames = [...document.querySelectorAll("iframe.viewer")];
      const boxes = frames.length ? frames : [document.getElementById("view")].filter(Boolean);
      return boxes.map((el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; });
    });
    console.log(JSON.stringify({ console: messages, errors, viewers, rects, screenshot: out }));
  } finally {
    await browser.close();
  }
}

main(process.argv.slice(2)).catch((err) => { console.error(err); process.exit(2); });
