// Shared helpers of the console tests: polling until a condition holds, and screenshots.
const path = require('path');

// Calls fn until it answers true; throws (with fn's last error) after ms.
async function eventually(fn, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch (e) { if (Date.now() > end) throw e; }
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise(r => setTimeout(r, 250));
  }
}

// Saves a full-page screenshot as SHOTS/name.png (SHOTS set by the test's main).
async function shot(page, name) {
  await page.screenshot({ path: path.join(module.exports.shots, `${name}.png`), fullPage: true });
}

module.exports = { eventually, shot, shots: '' };
