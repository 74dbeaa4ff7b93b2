// The page in headless Chromium: with WebGPU (SwiftShader) it runs on the GPU
// and shows layers one by one; without WebGPU it says so and runs on the CPU.
// Either way it must show the CLI's top-5 predictions for the golden tokens;
// bad input shows the error banner.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { serveStatic } from './serve.mjs';

const root = path.resolve(import.meta.dirname, '../..');
const golden = path.join(root, 'tests/golden/paper_rms_topk_sink');
const cli = process.env.CIRCUITSCOPE_BIN || path.join(root, 'target/debug/circuitscope');
const chrome = process.env.CHROME || '/usr/lib/chromium/chromium';

const FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

let server;
let browser; // with WebGPU
let cpuBrowser; // without: requestAdapter() gives null

before(async () => {
  server = await serveStatic(path.join(root, 'dist'));
  browser = await chromium.launch({ executablePath: chrome, args: [...FLAGS, '--enable-unsafe-webgpu'] });
  cpuBrowser = await chromium.launch({ executablePath: chrome, args: FLAGS });
});

after(async () => {
  await browser?.close();
  await cpuBrowser?.close();
  server?.close();
});

const tokens = JSON.parse(fs.readFileSync(path.join(golden, 'tokens.json'), 'utf8'));
const config = JSON.parse(fs.readFileSync(path.join(root, 'www/models/default/config.json'), 'utf8'));

/// The CLI's JSON output for `command` on the bundled model with `ids`.
function cliJson(command, extra = [], ids = tokens) {
  const args = [command, '--model', path.join(root, 'www/models/default'), '--tokens', ids.join(','), ...extra, '--json'];
  return JSON.parse(execFileSync(cli, args));
}

function cliPredictions(extra = [], ids = tokens) {
  return cliJson('forward', extra, ids).predictions.map((p) => String(p.token));
}

/// The drawn circuit canvas, scrolled into view, and where on the screen a
/// node of `circuitscope graph --json` sits (the page's layout: 44 px columns
/// from x = 30, 30 px rows from y = 64, before any zoom or pan).
async function circuitCanvas(page) {
  const canvas = page.getByTestId('circuit-canvas');
  await page.locator('[data-testid=circuit-canvas][data-nodes]:not([data-nodes="0"])').waitFor();
  await canvas.scrollIntoViewIfNeeded();
  const box = await canvas.boundingBox();
  const scale = box.width / (await canvas.evaluate((c) => c.width));
  const at = (n) => [box.x + (30 + 44 * (n.column + 0.5)) * scale, box.y + (64 + 30 * (n.row + 0.5)) * scale];
  return { canvas, at };
}

/// A fresh page with the model loaded and the backend chosen; collects
/// uncaught errors (a Rust panic in wasm shows up here).
async function openPage(on = browser) {
  const page = await on.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(server.url);
  await page.locator('[data-testid=model-status][data-ready=true]').waitFor({ timeout: 60_000 });
  await page.locator('[data-testid=backend]:not([data-backend=probing])').waitFor({ timeout: 60_000 });
  return { page, errors };
}

/// Runs the golden tokens; returns the predictions shown and the layer-row
/// counts the page went through while the run streamed in.
async function runGolden(page) {
  await page.evaluate(() => {
    window.rowCounts = [];
    new MutationObserver(() => {
      const n = document.querySelectorAll('[data-testid=layer-row]').length;
      if (n !== window.rowCounts.at(-1)) window.rowCounts.push(n);
    }).observe(document.body, { childList: true, subtree: true });
  });
  await page.getByTestId('token-input').fill(tokens.join(', '));
  await page.getByTestId('run-button').click();
  await page.getByTestId('prediction').first().waitFor();
  const shown = await page.getByTestId('prediction').evaluateAll((items) => items.map((li) => li.dataset.token));
  return { shown, rowCounts: await page.evaluate(() => window.rowCounts) };
}

test('on WebGPU the layers stream in one by one and the predictions are the CLI\'s', async () => {
  const { page, errors } = await openPage();
  assert.equal(await page.getByTestId('backend').getAttribute('data-backend'), 'gpu');
  const { shown, rowCounts } = await runGolden(page);
  assert.deepEqual(shown, cliPredictions());
  assert.equal(await page.getByTestId('layer-row').count(), config.n_layer);
  // Layer 0 was on the page on its own before the rest arrived.
  const visible = rowCounts.filter((n) => n > 0);
  assert.equal(visible[0], 1, `row counts seen: ${rowCounts}`);
  assert.equal(visible.at(-1), config.n_layer);
  assert.equal(await page.getByTestId('error-banner').count(), 0);
  assert.deepEqual(errors, []);
  await page.close();
});

test('the circuit graph is the CLI\'s; clicking a node opens the inspector; ablating it changes the predictions as the CLI\'s --zero does', async () => {
  const expected = cliJson('graph');
  const { page, errors } = await openPage();
  await runGolden(page);
  const { canvas, at } = await circuitCanvas(page);
  assert.equal(Number(await canvas.getAttribute('data-nodes')), expected.nodes.length);
  assert.equal(Number(await canvas.getAttribute('data-edges')), expected.edges.length);

  // More nodes per site: the same graph as the CLI's with --per-site 20.
  const wide = cliJson('graph', ['--per-site', '20']);
  await page.getByTestId('nodes-per-site').fill('20');
  await page.locator(`[data-testid=circuit-canvas][data-nodes="${wide.nodes.length}"]`).waitFor();
  assert.equal(Number(await canvas.getAttribute('data-edges')), wide.edges.length);
  await page.getByTestId('nodes-per-site').fill('8');
  await page.locator(`[data-testid=circuit-canvas][data-nodes="${expected.nodes.length}"]`).waitFor();

  // Click the strongest edge's target node, placed as the page lays nodes out.
  const strongest = expected.edges.reduce((a, b) => (b.strength > a.strength ? b : a));
  const node = expected.nodes[strongest.to];
  await page.mouse.move(...at(node));
  await assert.doesNotReject(page.getByTestId('node-tooltip').filter({ hasText: node.label }).waitFor({ timeout: 5_000 }));
  await page.mouse.click(...at(node));
  const inspector = page.getByTestId('node-inspector');
  await inspector.waitFor();
  assert.equal(await inspector.locator('h2').textContent(), node.label);
  assert.match(await inspector.textContent(), new RegExp(expected.nodes[strongest.from].label.replace(/[[\]().]/g, '\\$&')));

  // Ablate it: the predictions become the CLI's with the same node zeroed.
  const name = node.label.split(' ')[0];
  const ablatedExpected = cliPredictions(['--zero', name]);
  assert.notDeepEqual(ablatedExpected, cliPredictions(), 'the ablation must change the top 5');
  await page.getByTestId('ablate-button').click();
  await page.getByTestId('ablation-list').filter({ hasText: name }).waitFor();
  await page.getByRole('heading', { name: /with 1 node\(s\) ablated/ }).waitFor();
  const shown = async () => page.getByTestId('prediction').evaluateAll((items) => items.map((li) => li.dataset.token));
  assert.deepEqual(await shown(), ablatedExpected);

  // One click clears all ablations and brings the clean predictions back.
  await page.getByTestId('clear-ablations').click();
  await page.getByRole('heading', { name: 'Next token', exact: true }).waitFor();
  assert.equal(await page.getByTestId('ablation-list').count(), 0);
  assert.deepEqual(await shown(), cliPredictions());
  assert.deepEqual(errors, []);
  await page.close();
});

test('the circuit zooms about the cursor and pans by dragging', async () => {
  const expected = cliJson('graph');
  const { page, errors } = await openPage();
  await runGolden(page);
  const { at } = await circuitCanvas(page);
  const tooltip = page.getByTestId('node-tooltip');
  const [a, b] = [expected.nodes[0], expected.nodes.find((n) => n.column === expected.nodes[0].column + 2)];

  // Zoom in over node a: it stays under the cursor; node b moves away from its old place.
  await page.mouse.move(...at(a));
  await page.mouse.wheel(0, -600);
  await page.mouse.move(at(a)[0] + 1, at(a)[1]);
  await tooltip.filter({ hasText: a.label }).waitFor({ timeout: 5_000 });
  await page.mouse.move(...at(b));
  await page.waitForTimeout(100);
  assert.ok(!(await tooltip.textContent()).includes(b.label), 'b is no longer where it was');

  // Reset, then drag the graph 2 columns left: b comes to a's old place.
  await page.getByTestId('reset-view').click();
  await page.mouse.move(...at(b));
  await page.mouse.down();
  await page.mouse.move(at(a)[0], at(b)[1], { steps: 5 });
  await page.mouse.up();
  await page.mouse.move(at(a)[0] + 1, at(b)[1]);
  await tooltip.filter({ hasText: b.label }).waitFor({ timeout: 5_000 });
  assert.deepEqual(errors, []);
  await page.close();
});

test('selecting a token shows the predictions and the circuit at that position', async () => {
  const { page, errors } = await openPage();
  await runGolden(page);
  const at = 5;
  const graphAt = cliJson('graph', ['--position', String(at)]);
  const prefix = cliPredictions([], tokens.slice(0, at + 1));
  await page.locator(`[data-testid=token][data-position="${at}"]`).click();
  await page.getByRole('heading', { name: `Circuit at position ${at}` }).waitFor();
  const canvas = page.getByTestId('circuit-canvas');
  assert.equal(Number(await canvas.getAttribute('data-nodes')), graphAt.nodes.length);
  assert.equal(Number(await canvas.getAttribute('data-edges')), graphAt.edges.length);
  const shown = await page.getByTestId('prediction').evaluateAll((items) => items.map((li) => li.dataset.token));
  assert.deepEqual(shown, prefix, 'a causal model predicts at position 5 what it predicts after the first 6 tokens');
  assert.deepEqual(errors, []);
  await page.close();
});

test('without WebGPU the page says so and runs on the CPU', async () => {
  const { page, errors } = await openPage(cpuBrowser);
  const backend = page.getByTestId('backend');
  assert.equal(await backend.getAttribute('data-backend'), 'cpu');
  assert.match(await backend.textContent(), /CPU.*WebGPU is not available/);
  const { shown } = await runGolden(page);
  assert.deepEqual(shown, cliPredictions());
  assert.equal(await page.getByTestId('layer-row').count(), config.n_layer);
  const expected = cliJson('graph');
  const canvas = page.getByTestId('circuit-canvas');
  assert.equal(Number(await canvas.getAttribute('data-nodes')), expected.nodes.length);
  assert.equal(Number(await canvas.getAttribute('data-edges')), expected.edges.length);
  assert.deepEqual(errors, []);
  await page.close();
});

test('bad token input shows a clear error, not a crash', async () => {
  const { page, errors } = await openPage();
  for (const [input, message] of [
    ['1, 2, 999', 'token id 999 at position 2 is out of range'],
    ['1, two', '`two` is not a token id'],
    [Array(40).fill(1).join(','), '40 tokens are more than'],
    ['', 'no tokens'],
  ]) {
    await page.getByTestId('token-input').fill(input);
    await page.getByTestId('run-button').click();
    await assert.doesNotReject(page.getByTestId('error-banner').filter({ hasText: message }).waitFor({ timeout: 10_000 }), input);
    assert.equal(await page.getByTestId('prediction').count(), 0);
  }
  // The page still works after errors.
  await page.getByTestId('token-input').fill('1, 2, 3');
  await page.getByTestId('run-button').click();
  await page.getByTestId('prediction').first().waitFor();
  assert.equal(await page.getByTestId('error-banner').count(), 0);
  assert.deepEqual(errors, []);
  await page.close();
});
