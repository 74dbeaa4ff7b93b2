// Page benchmarks in headless Chromium with WebGPU (SwiftShader unless the
// machine has a GPU): medians of
// - Run to the first layer's row and to the finished run (the bundled model);
// - Run to the graph ranked by measured effect (every candidate ablated);
// - drawing the circuit canvas with at least 10,000 edges (a synthetic model).
// `make bench-page` builds the page and the CLI first.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { serveStatic } from './serve.mjs';

const root = path.resolve(import.meta.dirname, '../..');
const cli = process.env.CIRCUITSCOPE_BIN || path.join(root, 'target/debug/circuitscope');
const chrome = process.env.CHROME || '/usr/lib/chromium/chromium';
const RUNS = 9;
const FRAMES = 31;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const server = await serveStatic(path.join(root, 'dist'));
const browser = await chromium.launch({ executablePath: chrome, args: ['--no-sandbox', '--enable-unsafe-webgpu'] });
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
await page.goto(server.url);
await page.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
const backend = await page.getByTestId('backend').textContent();

// One run of the sample prompt, timed from the click in the page itself.
const timeRun = () =>
  page.evaluate(async () => {
    const main = document.querySelector('main');
    const rows = () => document.querySelectorAll('[data-testid=layer-row]').length;
    const measured = () => document.querySelector('[data-testid=ranking]')?.dataset.measured;
    const runs = Number(main.dataset.runs);
    const times = { first: null, last: null, effects: null };
    let cleared = false;
    const t0 = performance.now();
    const look = () => {
      const now = performance.now() - t0;
      if (!cleared && rows() === 0) cleared = true;
      if (cleared && times.first === null && rows() >= 1) times.first = now;
      if (times.last === null && Number(main.dataset.runs) > runs) times.last = now;
      if (times.last !== null && times.effects === null && measured()) times.effects = now;
    };
    const observer = new MutationObserver(look);
    observer.observe(document.body, { childList: true, subtree: true, attributes: true });
    document.querySelector('[data-testid=run-button]').click();
    await new Promise((resolve) => {
      const wait = () => (times.effects !== null ? resolve() : setTimeout(wait, 2));
      wait();
    });
    observer.disconnect();
    return times;
  });

const runs = [];
for (let i = 0; i < RUNS; i++) runs.push(await timeRun());

// A synthetic model dense enough for 10,000 edges among 64 nodes per site.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'circuitscope-bench-'));
const shape = { n_layer: 4, d_model: 128, n_head: 4, d_head: 32, d_mlp: 512, vocab_size: 512, block_size: 64, afrac: 0.5, rms_norm: true };
fs.writeFileSync(path.join(dir, 'shape.json'), JSON.stringify(shape));
execFileSync(cli, ['synthetic', '--config', path.join(dir, 'shape.json'), '--density', '0.25', '--seed', '1', '--out', path.join(dir, 'model')]);
await page.getByTestId('rank-by').selectOption('activation');
await page.getByTestId('model-files').setInputFiles(['config.json', 'model.safetensors'].map((f) => path.join(dir, 'model', f)));
await page.locator('[data-testid=model-status][data-source*="model.safetensors"]').waitFor({ timeout: 120_000 });
await page.getByTestId('prompt-input').fill(Array.from({ length: 32 }, (_, i) => (i * 37) % 512).join(', '));
await page.locator('[data-testid=run-button]:enabled').click();
await page.getByTestId('rank-by').selectOption('activation');
await page.getByTestId('nodes-per-site').fill('64');
const canvas = page.getByTestId('circuit-canvas');
await page.locator('[data-testid=circuit-canvas][data-nodes]:not([data-nodes="0"])').waitFor({ timeout: 120_000 });
const edges = Number(await canvas.getAttribute('data-edges'));
const nodes = Number(await canvas.getAttribute('data-nodes'));

// Frames timed to the pixels (getImageData waits for the canvas to be
// rasterised): hovering on and off a node (the cached scene plus the
// overlay), dragging (the cached scene shifted), zooming with the wheel (the
// cached scene scaled) and the sharp redraw once the wheel is still (the
// whole scene).
const frames = await page.evaluate(async (count) => {
  const c = document.querySelector('[data-testid=circuit-canvas]');
  const box = c.getBoundingClientRect();
  const css = box.width / c.width;
  // The first node's centre (column 0, row 0 of the page's layout).
  const node = { clientX: box.x + (30 + 22) * css, clientY: box.y + (64 + 15) * css };
  const empty = { clientX: box.x + 5 * css, clientY: box.y + 5 * css };
  const frame = async (type, init) => {
    const t0 = performance.now();
    c.dispatchEvent(new (type === 'wheel' ? WheelEvent : MouseEvent)(type, { bubbles: true, cancelable: true, ...init }));
    await new Promise((r) => setTimeout(r, 0));
    c.getContext('2d').getImageData(0, 0, 1, 1);
    return { total: performance.now() - t0, draw: Number(c.dataset.drawMs) };
  };
  const out = { hover: [], drag: [], zoom: [] };
  for (let i = 0; i < count; i++) out.hover.push(await frame('mousemove', i % 2 ? empty : node));
  await frame('mousedown', empty);
  for (let i = 0; i < count; i++) {
    out.drag.push(await frame('mousemove', { clientX: empty.clientX + 4 * (i + 1), clientY: empty.clientY + 2 * (i + 1) }));
  }
  await frame('mouseup', empty);
  for (let i = 0; i < count; i++) out.zoom.push(await frame('wheel', { deltaY: i % 2 ? 100 : -100, ...node }));
  // Once the wheel is still, the scene is redrawn sharp at the new scale.
  out.redraw = [];
  for (let i = 0; i < 5; i++) {
    await frame('wheel', { deltaY: -100, ...node });
    await new Promise((r) => setTimeout(r, 400));
    const t0 = performance.now();
    c.getContext('2d').getImageData(0, 0, 1, 1);
    out.redraw.push({ total: Number(c.dataset.drawMs) + performance.now() - t0, draw: Number(c.dataset.drawMs) });
  }
  return out;
}, FRAMES);

await browser.close();
server.close();
const ms = (x) => `${x.toFixed(1)} ms`;
console.log(`Backend: ${backend}`);
console.log('| measure | median |\n|---|---|');
console.log(`| Run to the first layer on the page | ${ms(median(runs.map((r) => r.first)))} |`);
console.log(`| Run to the last layer and the predictions | ${ms(median(runs.map((r) => r.last)))} |`);
console.log(`| Run to the graph ranked by measured effect | ${ms(median(runs.map((r) => r.effects)))} |`);
for (const [what, list] of Object.entries(frames)) {
  const label = `Canvas, ${edges} edges and ${nodes} nodes, ${what} frame`;
  console.log(`| ${label}: event to pixels | ${ms(median(list.map((f) => f.total)))} |`);
  console.log(`| ${label}: drawing calls only | ${ms(median(list.map((f) => f.draw)))} |`);
}
