// The page in headless Chromium (with WebGPU enabled, as the GPU engine will
// need): it loads the bundled model, runs the golden tokens and must show the
// same top-5 predictions as the CLI; bad input shows the error banner.
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

let server;
let browser;

before(async () => {
  server = await serveStatic(path.join(root, 'dist'));
  browser = await chromium.launch({
    executablePath: chrome,
    args: [
      '--no-sandbox',
      '--enable-unsafe-webgpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

/// A fresh page with the model loaded; collects uncaught errors (a Rust panic
/// in wasm shows up here).
async function openPage() {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(server.url);
  await page.locator('[data-testid=model-status][data-ready=true]').waitFor({ timeout: 60_000 });
  return { page, errors };
}

test('the page predicts what the CLI predicts for the golden tokens', async () => {
  const tokens = JSON.parse(fs.readFileSync(path.join(golden, 'tokens.json'), 'utf8'));
  const expected = JSON.parse(
    execFileSync(cli, ['forward', '--model', path.join(root, 'www/models/default'), '--tokens', tokens.join(','), '--json']),
  ).predictions.map((p) => String(p.token));

  const { page, errors } = await openPage();
  await page.getByTestId('token-input').fill(tokens.join(', '));
  await page.getByTestId('run-button').click();
  await page.getByTestId('prediction').first().waitFor();
  const shown = await page.getByTestId('prediction').evaluateAll((items) => items.map((li) => li.dataset.token));
  assert.deepEqual(shown, expected);

  const config = JSON.parse(fs.readFileSync(path.join(root, 'www/models/default/config.json'), 'utf8'));
  assert.equal(await page.getByTestId('layer-row').count(), config.n_layer);
  assert.equal(await page.getByTestId('error-banner').count(), 0);
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
