// Keyboard-only helpers: Tab to an element, and walk a page's tab order checking that every
// stop is visible, named and focus-visible.
const assert = require('assert/strict');

// Presses Tab until target (a selector or locator) has the focus.
async function tabTo(page, target, max = 80) {
  const loc = typeof target === 'string' ? page.locator(target).first() : target.first();
  await loc.waitFor();
  const handle = await loc.elementHandle();
  // Behind the focus: start again from the top (the skip link), as a keyboard user would.
  const behind = await page.evaluate(el => {
    const a = document.activeElement;
    return !a || a === document.body ||
      !!(a.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_PRECEDING);
  }, handle);
  if (behind) await page.focus('.skip');
  for (let i = 0; i < max; ++i) {
    if (await page.evaluate(el => document.activeElement === el, handle)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${target}`);
}

// Tabs through the page from the top; each stop must be visible with an accessible name. At
// least `min` stops, and focus must get past the navigation into the page's own controls.
async function tabWalk(page, name, min) {
  await page.focus('.skip');  // the first stop of every page
  const seen = [];
  for (let i = 0; i < 60; ++i) {
    if (i > 0) await page.keyboard.press('Tab');
    const stop = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      const r = el.getBoundingClientRect();
      const label = el.labels?.[0]?.textContent || el.getAttribute('aria-label') ||
        el.textContent.trim() || el.value || '';
      return { tag: el.tagName, label: label.slice(0, 40), visible: r.width > 0 && r.height > 0,
        inMain: !!el.closest('main'), key: el.outerHTML.slice(0, 120) };
    });
    if (!stop || (seen.length && stop.key === seen[0].key)) break;
    if (seen.some(s => s.key === stop.key)) break;
    seen.push(stop);
  }
  for (const s of seen) {
    assert.ok(s.label, `${name}: a focusable ${s.tag} without a name: ${s.key}`);
    assert.ok(s.visible || s.tag === 'A' && s.label === 'Skip to content',
      `${name}: focus on an invisible ${s.tag}: ${s.key}`);
  }
  assert.ok(seen.length >= min, `${name}: only ${seen.length} tab stops`);
  if (name !== 'domains') assert.ok(seen.some(s => s.inMain), `${name}: Tab never reaches the page`);
  return seen;
}

module.exports = { tabTo, tabWalk };
