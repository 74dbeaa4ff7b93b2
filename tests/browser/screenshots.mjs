// The README's screenshots, from the built page in headless Chromium at
// 1440x900: the workspace with a task prompt run, its circuit shown and a
// node inspected (docs/screenshot.png), a classroom tour's second step
// (docs/tour.png), a node of the quote circuit with its label and its
// dataset examples (docs/examples.png), and the circuit's block deltas with a
// labelled node over the task (docs/task.png). `make screenshots` builds the page first.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { serveStatic } from './serve.mjs';

const root = path.resolve(import.meta.dirname, '../..');
const chrome = process.env.CHROME || '/usr/lib/chromium/chromium';
const server = await serveStatic(path.join(root, 'dist'));
const browser = await chromium.launch({ executablePath: chrome, args: ['--no-sandbox', '--enable-unsafe-webgpu'] });
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await page.goto(server.url);
await page.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
await page.locator('[data-testid=backend]:not([data-backend=probing])').waitFor({ timeout: 120_000 });

// A task's prompt, its bundled circuit, and the circuit's first node inspected.
await page.locator('[data-testid=task-prompt][data-task=single_double_quote]:enabled').click();
await page.locator('main[data-runs="2"]').waitFor({ timeout: 120_000 });
await page.locator('tr[data-task=single_double_quote] [data-origin=bundled] [data-testid=show-circuit]').click();
await page.locator('[data-testid=ranking][data-confirmed]').waitFor({ state: 'attached', timeout: 120_000 });
const canvas = page.getByTestId('circuit-canvas');
await page.locator('[data-testid=circuit-canvas][data-nodes]:not([data-nodes="0"])').waitFor();
const box = await canvas.boundingBox();
const scale = box.width / (await canvas.evaluate((c) => c.width));
// The circuit's most active node, where the page lays it out (the node table says where).
const rows = await page.locator('[data-testid=node-table] tbody tr').evaluateAll((trs) => trs.map((tr) => ({ a: Math.abs(Number(tr.dataset.activation)), column: Number(tr.dataset.column), row: Number(tr.dataset.row) })));
const node = rows.reduce((best, r) => (r.a > best.a ? r : best));
await page.mouse.click(box.x + (30 + 44 * (node.column + 0.5)) * scale, box.y + (64 + 30 * (node.row + 0.5)) * scale);
await page.getByTestId('node-inspector').waitFor();
await page.mouse.move(0, 0);
await page.waitForTimeout(300);
await page.screenshot({ path: path.join(root, 'docs/screenshot.png') });

// A classroom tour, at its second step.
await page.locator('[data-testid=start-tour][data-task=single_double_quote]:enabled').click();
await page.locator('[data-testid=tour][data-step="0"]').waitFor();
await page.locator('[data-testid=tour-next]:enabled').click();
await page.locator('[data-testid=tour][data-step="1"]').waitFor();
await page.locator('[data-testid=tour-next]:enabled').waitFor({ timeout: 120_000 });
await page.waitForTimeout(500);
await page.screenshot({ path: path.join(root, 'docs/tour.png') });

// A node of the quote circuit (0.attn.act_in[85], in the link's base 36) with its label and dataset examples.
await page.keyboard.press('Escape');
const tour = JSON.parse(fs.readFileSync(path.join(root, 'www/models/python_tasks/tours.json'), 'utf8')).tours.find((t) => t.task === 'single_double_quote');
const examples = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await examples.goto(`${server.url}#${tour.steps[2].view.replace(/sel=[^&]+/, 'sel=0.attn.act_in:2d')}`);
await examples.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
await examples.getByTestId('node-examples').getByTestId('example-row').first().waitFor({ timeout: 120_000 });
await examples.getByTestId('node-label').waitFor();
await examples.getByTestId('node-examples').scrollIntoViewIfNeeded();
await examples.waitForTimeout(500);
await examples.screenshot({ path: path.join(root, 'docs/examples.png') });

// The quote circuit with its block deltas over the graph, and node
// 0.mlp.resid_delta[21] (21 is `l` in base 36), given a label of one's own,
// over the task's examples.
const task = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await task.goto(`${server.url}#${tour.steps[2].view.replace(/sel=[^&]+/, 'sel=0.mlp.resid_delta:l')}&label.0.mlp.resid_delta:l=which+quote+opened`);
await task.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
await task.getByTestId('block-delta').first().waitFor({ timeout: 120_000 });
await task.getByTestId('task-distribution').getByTestId('answer-class').first().waitFor({ timeout: 120_000 });
await task.getByTestId('task-distribution').scrollIntoViewIfNeeded();
await task.waitForTimeout(500);
await task.screenshot({ path: path.join(root, 'docs/task.png') });

await browser.close();
server.close();
console.log('wrote docs/screenshot.png, docs/tour.png, docs/examples.png and docs/task.png');
