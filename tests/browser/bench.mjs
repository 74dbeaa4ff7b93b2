// Page benchmarks in headless Chromium with WebGPU (SwiftShader unless the
// machine has a GPU): medians of
// - opening the page with the default model, in fresh browser contexts:
//   navigation to the first prediction and to the first circuit graph
//   (BENCH_ONLY=open measures only this);
// - Run to the first layer's row and to the finished run (the bundled model);
// - Run to the graph ranked by attribution, and to its shown nodes confirmed
//   by ablation (the default ranking); Run to the graph ranked by measured
//   effect (every candidate ablated) (BENCH_ONLY=run stops after these);
// - drawing the circuit canvas with at least 10,000 edges (a synthetic model);
// - the converted model of the released 0.4B shape: loading it from a URL,
//   and a 256-token prompt to the first layer, to the finished run, to the
//   graph ranked by attribution and to its nodes confirmed.
// BENCH_ONLY=prune measures instead Find circuit by learned masks, on each
// task of the bundled model (64 examples, 200 steps) and on the converted
// 0.4B shape with a byte-level tokenizer (64 examples of about 64 tokens,
// BENCH_PRUNE_STEPS steps, default 2: a step there
// takes seconds to minutes on a software adapter; 0 leaves it out), timed
// from the progress line and then cancelled, or with BENCH_PRUNE_WHOLE=1 the
// whole run to its circuit;
// BENCH_PRUNE_TASKS=a,b picks the bundled model's tasks.
// BENCH_ONLY=examples measures dataset examples computed in the page.
// BENCH_ONLY=inspect measures a circuit's task distributions and block
// deltas in the page: the bundled model's quote circuit, and a 32-node
// circuit on the converted 0.4B shape (with the bundled tokenizer).
// BENCH_ONLY=release measures OpenAI's release in the page: the released
// shape's final_model.pt fetched by ranges from a local mirror (time, the
// renderer's memory), and the stored model opened again without the host.
// BENCH_ONLY=released measures only the released 0.4B shape's 256-token
// runs (to the first and last layer) and the memory after them, each build
// (this one and BENCH_BASELINE's) in a browser of its own, BENCH_ROUNDS
// rounds in turns; ranked by activation unless BENCH_RANK says otherwise.
// `make bench-page` builds the page and the CLI first.
import assert from 'node:assert/strict';
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
const ms = (x) => `${x.toFixed(1)} ms`;

// A synthetic model of the released 0.4B shape (1 in 1000 weights), written
// dense as the release is and converted with `tokenizer`'s files, in a new
// folder `circuitscope-bench-<name>-*`; the dense file is deleted unless kept.
function releasedShape(name, tokenizer, { keepDense = false } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `circuitscope-bench-${name}-`));
  const shapeFile = path.join(root, 'src/cli/released_shape.json');
  const large = path.join(dir, 'large');
  execFileSync(cli, ['synthetic', '--config', shapeFile, '--density', '0.001', '--seed', '3', '--out', path.join(dir, 'dense')]);
  execFileSync(cli, ['convert', '--in', path.join(dir, 'dense/model.safetensors'), '--config', shapeFile, '--tokenizer', tokenizer, '--out', large]);
  if (!keepDense) fs.rmSync(path.join(dir, 'dense'), { recursive: true });
  return { dir, large };
}

// Opens the model folder served at `url` in `tab` (the page is open) and
// waits until it has loaded.
async function loadFromUrl(tab, url) {
  await tab.getByTestId('model-url').fill(url);
  await tab.getByTestId('load-url').click();
  await tab.locator(`[data-testid=model-status][data-source="${url.replace(/\/$/, '')}"]`).waitFor({ timeout: 300_000 });
}

// Opening the page: milliseconds from navigation (performance.now() counts
// from it) to the first prediction, the first graph and the graph ranked by
// measured effect, each in a fresh context (nothing cached but the HTTP
// cache). BENCH_BASELINE=<another build's dist> measures that build too, in
// turns with this one, for an old/new comparison in the same run.
const OPENS = ['released', 'release'].includes(process.env.BENCH_ONLY) ? 0 : 5;
const builds = [['this build', server]];
if (process.env.BENCH_BASELINE) builds.push(['baseline', await serveStatic(path.resolve(process.env.BENCH_BASELINE))]);
const opens = new Map(builds.map(([name]) => [name, []]));
for (let i = 0; i < OPENS; i++) {
  for (const [name, served] of builds) {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const fresh = await context.newPage();
    await fresh.addInitScript(() => {
      window.opened = {};
      const look = () => {
        const seen = (key, selector) => {
          if (window.opened[key] === undefined && document.querySelector(selector)) window.opened[key] = performance.now();
        };
        seen('prediction', '[data-testid=prediction]');
        seen('graph', '[data-testid=circuit-canvas][data-nodes]:not([data-nodes="0"])');
        seen('attributed', '[data-testid=ranking][data-attributed]');
        seen('confirmed', '[data-testid=ranking][data-confirmed]');
        // A build from before attribution ranks by measured effect.
        seen('effects', '[data-testid=ranking][data-measured]');
      };
      new MutationObserver(look).observe(document, { childList: true, subtree: true, attributes: true });
    });
    await fresh.goto(served.url);
    await fresh.locator('[data-testid=ranking][data-confirmed], [data-testid=ranking][data-measured]').first().waitFor({ state: 'attached', timeout: 120_000 });
    opens.get(name).push(await fresh.evaluate(() => window.opened));
    await context.close();
  }
}
if (OPENS > 0) console.log('| measure | median |\n|---|---|');
for (const [name, list] of OPENS > 0 ? opens : []) {
  const label = builds.length > 1 ? ` (${name})` : '';
  console.log(`| Opening the page${label}: navigation to the first prediction | ${ms(median(list.map((o) => o.prediction)))} |`);
  console.log(`| Opening the page${label}: navigation to the first circuit graph | ${ms(median(list.map((o) => o.graph)))} |`);
  const row = (what, key) => list.some((o) => o[key] !== undefined) && console.log(`| Opening the page${label}: navigation to ${what} | ${ms(median(list.map((o) => o[key])))} |`);
  row('the graph ranked by attribution', 'attributed');
  row('its shown nodes confirmed by ablation', 'confirmed');
  row('the graph ranked by measured effect', 'effects');
}
if (process.env.BENCH_ONLY === 'open') {
  await browser.close();
  for (const [, served] of builds) served.close();
  process.exit(0);
}

// Resident size in MB of Chromium's renderer (the tab: wasm and JS) or GPU
// process (the device's buffers): the largest such process.
const rss = (type) =>
  Math.max(...execFileSync('ps', ['-eo', 'rss,args']).toString().split('\n').filter((l) => l.includes(`--type=${type}`)).map((l) => Number(l.trim().split(' ')[0]) / 1024));

// The longest prefix of some Python source that the tokenizer in `model`
// makes at most `tokens` tokens, and its length in tokens.
const promptOf = (model, tokens) => {
  const source = fs.readFileSync(path.join(root, 'src/tasks/corpus.rs'), 'utf8');
  const count = (text) => JSON.parse(execFileSync(cli, ['tokenize', '--tokenizer', model, '--text', text, '--json'])).ids.length;
  let [lo, hi] = [0, 4000];
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (count(source.slice(0, mid)) <= tokens) lo = mid; else hi = mid - 1;
  }
  return { prompt: source.slice(0, lo), tokens: count(source.slice(0, lo)) };
};

// One run of the prompt in `tab`'s box, timed from the click in the page itself,
// until `until`: the run's end (`last`), the graph ranked by attribution
// (`attributed`), its nodes confirmed (`confirmed`), or ranked by measured
// effect (`effects`).
const timeRunIn = (tab, until) =>
  tab.evaluate(async (until) => {
    const main = document.querySelector('main');
    const rows = () => document.querySelectorAll('[data-testid=layer-row]').length;
    const ranking = () => document.querySelector('[data-testid=ranking]')?.dataset ?? {};
    const runs = Number(main.dataset.runs);
    const times = { first: null, last: null, attributed: null, confirmed: null, effects: null };
    let cleared = false;
    const t0 = performance.now();
    const look = () => {
      const now = performance.now() - t0;
      if (!cleared && rows() === 0) cleared = true;
      if (cleared && times.first === null && rows() >= 1) times.first = now;
      if (times.last === null && Number(main.dataset.runs) > runs) times.last = now;
      if (times.last === null) return;
      if (times.attributed === null && ranking().attributed) times.attributed = now;
      if (times.confirmed === null && ranking().confirmed) times.confirmed = now;
      if (times.effects === null && ranking().measured) times.effects = now;
    };
    const observer = new MutationObserver(look);
    observer.observe(document.body, { childList: true, subtree: true, attributes: true });
    document.querySelector('[data-testid=run-button]').click();
    await new Promise((resolve) => {
      const wait = () => (times[until] !== null ? resolve() : setTimeout(wait, 2));
      wait();
    });
    observer.disconnect();
    return times;
  }, until);

if (process.env.BENCH_ONLY === 'released') {
  // The released shape alone: each build (and BENCH_BASELINE's) in a browser
  // of its own, in turns: load the converted model from a URL, run a
  // 256-token prompt RELEASED_RUNS times, then read the processes' memory.
  await browser.close();
  const { large } = releasedShape('released', path.join(root, 'tests/tokenizer'));
  const largeServer = await serveStatic(large, { cors: true });
  const { prompt, tokens } = promptOf(large, 256);
  const RELEASED_RUNS = 5;
  const results = new Map(builds.map(([name]) => [name, { first: [], last: [], renderer: [], gpu: [] }]));
  for (let round = 0; round < Number(process.env.BENCH_ROUNDS ?? 1); round++) {
    for (const [name, served] of builds) {
      const own = await chromium.launch({ executablePath: chrome, args: ['--no-sandbox', '--enable-unsafe-webgpu'] });
      const tab = await own.newPage({ viewport: { width: 1600, height: 1000 } });
      await tab.goto(served.url);
      await tab.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
      // Ranked by activation (BENCH_RANK=attribution keeps the default: each
      // run then starts while the last one's attribution is under way).
      await tab.getByTestId('rank-by').selectOption(process.env.BENCH_RANK ?? 'activation');
      await loadFromUrl(tab, largeServer.url);
      await tab.locator('[data-testid=run-button]:enabled').waitFor({ timeout: 300_000 });
      await tab.getByTestId('prompt-input').fill(prompt);
      const r = results.get(name);
      for (let i = 0; i < RELEASED_RUNS; i++) {
        const t = await timeRunIn(tab, 'last');
        r.first.push(t.first);
        r.last.push(t.last);
        console.error(`${name}: run ${i + 1}: first layer ${ms(t.first)}, last ${ms(t.last)}`);
      }
      // The graph of the last run drawn, then memory.
      await tab.locator('[data-testid=circuit-canvas][data-nodes]:not([data-nodes="0"])').waitFor({ timeout: 120_000 });
      r.renderer.push(rss('renderer'));
      r.gpu.push(rss('gpu-process'));
      await own.close();
    }
  }
  largeServer.close();
  for (const [, served] of builds) served.close();
  console.log(`Released 0.4B shape, ${tokens}-token prompt, ${RELEASED_RUNS} runs per build and round`);
  console.log('| measure | ' + builds.map(([name]) => name).join(' | ') + ' |');
  console.log('|---|' + builds.map(() => '---|').join(''));
  const row = (label, key, format) => console.log(`| ${label} | ${builds.map(([name]) => format(median(results.get(name)[key]))).join(' | ')} |`);
  row('Run to the first layer on the page', 'first', ms);
  row('Run to the last layer and the predictions', 'last', ms);
  row('Renderer resident memory after the runs', 'renderer', (x) => `${x.toFixed(0)} MB`);
  row('GPU process resident memory after the runs', 'gpu', (x) => `${x.toFixed(0)} MB`);
  process.exit(0);
}

// Dataset examples computed in the page (BENCH_ONLY=examples): every node of
// the bundled model over EXAMPLES_TOKENS tokens of the generated corpus, from
// the click to the examples ready; then the released 0.4B shape's rate
// over 2048 tokens (its 180,224 nodes' histograms alone are 231 MB).
if (process.env.BENCH_ONLY === 'examples') {
  const compute = async (tab, tokens) => {
    await tab.locator('.examples-panel summary').click();
    await tab.getByTestId('examples-tokens').fill(String(tokens));
    await tab.getByTestId('examples-tokens').dispatchEvent('change');
    const t0 = Date.now();
    await tab.getByTestId('compute-examples').click();
    await tab.getByTestId('examples-progress').waitFor({ state: 'attached', timeout: 60_000 });
    await tab.locator('[data-testid=examples-status]').filter({ hasText: 'Examples over' }).filter({ hasNotText: '1048576' }).waitFor({ timeout: 1_800_000 });
    return Date.now() - t0;
  };
  const EXAMPLES_TOKENS = Number(process.env.EXAMPLES_TOKENS ?? 100_000);
  const times = [];
  for (let i = 0; i < Number(process.env.BENCH_ROUNDS ?? 3); i++) {
    const tab = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await tab.goto(server.url);
    await tab.locator('[data-testid=examples-status][data-ready=true]').waitFor({ state: 'attached', timeout: 120_000 });
    times.push(await compute(tab, EXAMPLES_TOKENS));
    console.error(`bundled model, ${EXAMPLES_TOKENS} tokens: ${ms(times.at(-1))} (${await tab.getByTestId('backend').textContent()})`);
    await tab.close();
  }
  const { large } = releasedShape('examples', path.join(root, 'tests/tokenizer'));
  const largeServer = await serveStatic(large, { cors: true });
  const tab = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await tab.goto(server.url);
  await tab.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
  await loadFromUrl(tab, largeServer.url);
  await tab.locator('[data-testid=run-button]:enabled').waitFor({ timeout: 300_000 });
  const released = await compute(tab, 2048);
  const renderer = rss('renderer');
  largeServer.close();
  console.log('| measure | median |\n|---|---|');
  console.log(`| Dataset examples in the page, bundled model, every node over ${EXAMPLES_TOKENS} tokens: click to ready (${times.length} runs) | ${ms(median(times))} |`);
  console.log(`| Dataset examples in the page, released 0.4B shape, 2048 tokens: click to ready (rate) | ${ms(released)} (${(2048 / (released / 1000)).toFixed(0)} tokens/s) |`);
  console.log(`| Renderer resident memory after the released shape's examples | ${renderer.toFixed(0)} MB |`);
  await browser.close();
  server.close();
  process.exit(0);
}

// OpenAI's release in the page (BENCH_ONLY=release): a synthetic model of
// the released shape written as the release's mirror (`write-release`: a
// 1.65 GB dense final_model.pt), served locally, fetched by ranges and
// converted in the page, the renderer's memory sampled meanwhile; then the
// stored model opened again in new tabs of the same browser profile, the
// host stopped (BENCH_ROUNDS times, default 3).
if (process.env.BENCH_ONLY === 'release') {
  const { dir, large } = releasedShape('release', path.join(root, 'www/models/python_tasks'));
  const mirror = path.join(dir, 'mirror');
  execFileSync(cli, ['write-release', '--model', large, '--name', 'csp_bench', '--out', mirror]);
  const ptBytes = fs.statSync(path.join(mirror, 'models/csp_bench/final_model.pt')).size;
  const host = await serveStatic(mirror, { cors: true });
  const context = await browser.newContext();
  const tab = await context.newPage();
  await tab.goto(server.url);
  await tab.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
  const before = rss('renderer');
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, rss('renderer')); }, 250);
  await tab.getByTestId('release-panel').locator('summary').click();
  await tab.getByTestId('release-base').fill(host.url);
  await tab.getByTestId('release-name').fill('csp_bench');
  const t0 = Date.now();
  await tab.locator('[data-testid=release-fetch]:enabled').click();
  const source = `[data-testid=model-status][data-source^="csp_bench"]`;
  await tab.locator(source).waitFor({ timeout: 1_800_000 });
  const fetched = Date.now() - t0;
  await tab.locator('[data-testid=stored-model][data-name=csp_bench]').waitFor({ timeout: 120_000 });
  clearInterval(sampler);
  const after = rss('renderer');
  const ranged = host.log.filter((r) => r.path.endsWith('final_model.pt') && r.method === 'GET');
  await tab.close();
  await host.close();
  const opens = [];
  for (let i = 0; i < Number(process.env.BENCH_ROUNDS ?? 3); i++) {
    const again = await context.newPage();
    await again.goto(server.url);
    await again.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
    await again.getByTestId('release-panel').locator('summary').click();
    const open = again.locator('[data-testid=stored-model][data-name=csp_bench] [data-testid=stored-open]');
    await open.waitFor();
    const t1 = Date.now();
    await open.click();
    await again.locator(source).waitFor({ timeout: 300_000 });
    opens.push(Date.now() - t1);
    console.error(`stored model opened in ${opens.at(-1)} ms`);
    await again.close();
  }
  console.log('| measure | median |\n|---|---|');
  console.log(`| Released 0.4B shape as the release's ${(ptBytes / 1e6).toFixed(1)} MB final_model.pt from a local mirror: Fetch to converted, loaded and stored (one run; ${ranged.length} range requests) | ${ms(fetched)} |`);
  console.log(`| The tab's renderer resident memory before / at most during / after | ${before.toFixed(0)} MB / ${peak.toFixed(0)} MB / ${after.toFixed(0)} MB |`);
  console.log(`| The stored model opened again, the host stopped (${opens.length} new tabs) | ${ms(median(opens))} |`);
  await browser.close();
  server.close();
  fs.rmSync(dir, { recursive: true });
  process.exit(0);
}

// A circuit's views in the page (BENCH_ONLY=inspect): from the run done to
// every graph node's values over the task's held-out examples (the
// inspector's task distribution) and to the circuit's block deltas.
if (process.env.BENCH_ONLY === 'inspect') {
  const views = async (tab, t0) => {
    const timeTo = async (locator) => (await locator.first().waitFor({ timeout: 1_800_000 }), Date.now() - t0);
    const [distribution, blocks] = await Promise.all([timeTo(tab.getByTestId('answer-class')), timeTo(tab.getByTestId('block-delta'))]);
    const examples = async (testid) => tab.getByTestId(testid).getAttribute('data-examples');
    return { distribution, blocks, distributionExamples: await examples('distribution-examples'), blockExamples: await examples('block-examples') };
  };
  const trained = path.join(root, 'www/models/python_tasks');
  const tour = JSON.parse(fs.readFileSync(path.join(trained, 'tours.json'), 'utf8')).tours.find((t) => t.task === 'single_double_quote');
  const bundled = [];
  for (let i = 0; i < Number(process.env.BENCH_ROUNDS ?? 3); i++) {
    const tab = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await tab.goto(`${server.url}#${tour.steps[2].view}`);
    await tab.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
    bundled.push(await views(tab, Date.now()));
    console.error(JSON.stringify(bundled.at(-1)));
    await tab.close();
  }
  // The released shape with the bundled model's tokenizer, samples and
  // tasks, and a 32-node circuit written for its weights: 4 nodes a layer, one
  // in each of the attention's read and values and the MLP's neurons and write.
  const { large } = releasedShape('inspect', trained);
  for (const file of ['samples.json', 'tasks.json']) fs.copyFileSync(path.join(trained, file), path.join(large, file));
  const sha = execFileSync(cli, ['info', '--model', large]).toString().match(/sha256 ([0-9a-f]{64})/)[1];
  const nodes = [...Array(8).keys()].flatMap((l) => [`${l}.attn.act_in[${3 + l}]`, `${l}.attn.v[${5 + l}]`, `${l}.mlp.post_act[${7 + l}]`, `${l}.mlp.resid_delta[${9 + l}]`]);
  const loss = { loss: 0.5, accuracy: 0.5 };
  const circuit = {
    format: 'circuitscope.circuit', version: 1, model: { name: 'released-shape', weights_sha256: sha }, task: 'single_double_quote', nodes, edges: [],
    mean_ablation: { source: 'samples.json', prompts: 0, positions: 0, values: nodes.map(() => 0) },
    faithfulness: { target_loss: 5, examples: 0, full: loss, circuit: loss, without_circuit: loss }, curve: [], method: { name: 'benchmark', settings: null, seconds: 0 },
  };
  const largeServer = await serveStatic(large, { cors: true });
  const tab = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await tab.goto(server.url);
  await tab.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
  await loadFromUrl(tab, largeServer.url);
  console.error('released shape loaded');
  // Its prompt run (the graph needs a run), then the circuit opened.
  const runs = Number(await tab.locator('main').getAttribute('data-runs'));
  await tab.locator('[data-testid=run-button]:enabled').click({ timeout: 300_000 });
  await tab.locator(`main[data-runs="${runs + 1}"]`).waitFor({ timeout: 600_000 });
  await tab.getByTestId('circuit-file').setInputFiles({ name: 'released.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(circuit)) });
  await tab.locator(`[data-testid=circuit-canvas][data-nodes="${nodes.length}"]`).waitFor({ timeout: 300_000 });
  const drawn = Date.now();
  console.error('released shape: its prompt run, the circuit drawn');
  // Select the circuit's first drawn node where the page lays it out (the
  // node table says where), once the canvas has its size.
  await tab.waitForTimeout(1000);
  const canvas = tab.getByTestId('circuit-canvas');
  const box = await canvas.boundingBox();
  const scale = box.width / (await canvas.evaluate((c) => c.width));
  const first = await tab.locator('[data-testid=node-table] tbody tr').first().evaluate((tr) => ({ column: Number(tr.dataset.column), row: Number(tr.dataset.row), label: tr.dataset.label }));
  const t0 = Date.now();
  await tab.mouse.click(box.x + (30 + 44 * (first.column + 0.5)) * scale, box.y + (64 + 30 * (first.row + 0.5)) * scale);
  await tab.getByTestId('node-inspector').locator('h2').filter({ hasText: first.label.split(' ')[0] }).waitFor({ timeout: 60_000 });
  const released = await views(tab, t0);
  released.blocks += t0 - drawn;
  const renderer = rss('renderer');
  largeServer.close();
  console.log('| measure | median |\n|---|---|');
  console.log(`| Bundled model, quote circuit (35 nodes): run done to every node's task distribution (${bundled[0].distributionExamples} examples; ${bundled.length} runs) | ${ms(median(bundled.map((b) => b.distribution)))} |`);
  console.log(`| The same: run done to the block deltas (${bundled[0].blockExamples} examples) | ${ms(median(bundled.map((b) => b.blocks)))} |`);
  console.log(`| Released 0.4B shape, 32-node circuit: node clicked to every node's task distribution (${released.distributionExamples} examples) | ${ms(released.distribution)} |`);
  console.log(`| The same: circuit drawn to the block deltas (${released.blockExamples} examples, 16 blocks) | ${ms(released.blocks)} |`);
  console.log(`| Renderer resident memory after | ${renderer.toFixed(0)} MB |`);
  await browser.close();
  server.close();
  process.exit(0);
}

const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
await page.goto(server.url);
await page.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
await page.locator('[data-testid=backend]:not([data-backend=probing])').waitFor({ timeout: 120_000 });
const backend = await page.getByTestId('backend').textContent();

if (process.env.BENCH_ONLY === 'prune') {
  // Find circuit, timed from the click to the circuit listed; its size.
  const find = async (task, examples, steps, target = 0.15) => {
    await page.getByTestId('search-method').selectOption('masks');
    for (const [id, value] of [['search-examples', examples], ['search-steps', steps], ['search-target', target]]) {
      await page.getByTestId(id).fill(String(value));
      await page.getByTestId(id).dispatchEvent('change');
    }
    // When each stage begins, from the progress line: the first step, the
    // bisection, the held-out figures.
    await page.evaluate(() => {
      window.stages = {};
      const t0 = performance.now();
      const look = () => {
        const text = document.querySelector('[data-testid=search-progress]')?.textContent ?? '';
        for (const [stage, pattern] of [['step 1', /step 1 of/], ['bisecting', /bisecting/], ['held out', /held-out/]]) {
          if (window.stages[stage] === undefined && pattern.test(text)) window.stages[stage] = performance.now() - t0;
        }
      };
      window.stagesObserver = new MutationObserver(look);
      window.stagesObserver.observe(document.body, { childList: true, subtree: true, characterData: true });
    });
    const t0 = Date.now();
    await page.locator(`[data-testid=find-circuit][data-task=${task}]:enabled`).click();
    const found = page.locator(`tr[data-task=${task}] [data-testid=circuit][data-origin=found]`);
    await found.waitFor({ timeout: 3_600_000 });
    const ms = Date.now() - t0;
    const stages = await page.evaluate(() => (window.stagesObserver.disconnect(), window.stages));
    return { ms, stages, nodes: await found.getAttribute('data-nodes'), text: await found.textContent() };
  };
  const rows = [];
  const tasks = process.env.BENCH_PRUNE_TASKS?.split(',').filter(Boolean) ?? ['single_double_quote', 'bracket_counting', 'set_or_string', 'bracket_type', 'self_or_cls'];
  for (const task of tasks) {
    const r = await find(task, 64, 200);
    rows.push(`| Find circuit by learned masks, bundled model, ${task} (64 examples, 200 steps): click to circuit listed | ${ms(r.ms)} (${r.nodes} nodes) |`);
    console.error(rows.at(-1));
  }
  // The released shape, with the bundled model's tokenizer, samples and tasks.
  const steps = Number(process.env.BENCH_PRUNE_STEPS ?? 2);
  if (steps === 0) {
    for (const line of rows) console.log(line);
    process.exit(0);
  }
  const bundled = path.join(root, 'www/models/python_tasks');
  const { dir } = releasedShape('prune', bundled);
  for (const file of ['samples.json', 'tasks.json']) fs.copyFileSync(path.join(bundled, file), path.join(dir, 'large', file));
  // A byte-level tokenizer (no merges), so that a task's examples are about
  // 64 tokens long (a byte each) rather than the bundled tokenizer's ~20.
  const bundledEncoder = JSON.parse(fs.readFileSync(path.join(bundled, 'encoder.json'), 'utf8'));
  const bytes = Object.fromEntries(Object.entries(bundledEncoder).filter(([, id]) => id < 256));
  fs.writeFileSync(path.join(dir, 'large/encoder.json'), JSON.stringify({ ...bytes, '<|endoftext|>': 256 }));
  fs.writeFileSync(path.join(dir, 'large/vocab.bpe'), '#version: 0.2\n');
  // Byte by byte, some tasks' answers start alike (`]` and `]]`): the quote task's prompts only.
  const quotes = JSON.parse(fs.readFileSync(path.join(bundled, 'tasks.json'), 'utf8')).filter((t) => t.task === 'single_double_quote');
  fs.writeFileSync(path.join(dir, 'large/tasks.json'), JSON.stringify(quotes));
  const largeServer = await serveStatic(path.join(dir, 'large'), { cors: true });
  await loadFromUrl(page, largeServer.url);
  if (process.env.BENCH_PRUNE_WHOLE) {
    // Synthetic weights know no task: a loose target, as the CLI's run with --target-loss 5.
    const r = await find('single_double_quote', 64, steps, 5);
    rows.push(`| Find circuit by learned masks, released 0.4B shape, single_double_quote (64 examples, ${steps} steps, target loss 5): click to circuit listed | ${ms(r.ms)} (${r.nodes} nodes) |`);
    for (const [stage, at] of Object.entries(r.stages)) rows.push(`| The same: click to ${stage} | ${ms(at)} |`);
  } else {
    // The steps alone, from the progress line, then Cancel.
    await page.getByTestId('search-method').selectOption('masks');
    for (const [id, value] of [['search-examples', 64], ['search-steps', 200]]) {
      await page.getByTestId(id).fill(String(value));
      await page.getByTestId(id).dispatchEvent('change');
    }
    const t0 = Date.now();
    await page.locator('[data-testid=find-circuit][data-task=single_double_quote]:enabled').click();
    const at = [];
    for (let step = 1; step <= steps; step++) {
      await page.locator(`[data-testid=search-progress][data-step="${step}"]`).waitFor({ timeout: 3_600_000 });
      at.push(Date.now() - t0);
    }
    const where = await page.getByTestId('search-progress').getAttribute('data-backend');
    await page.getByTestId('cancel-search').click();
    const per = at.slice(1).map((t, i) => t - at[i]);
    rows.push(`| Find circuit by learned masks, released 0.4B shape, single_double_quote: click to step 1 (32 examples; means, probes, first chunks) | ${ms(at[0])} (${where}) |`);
    if (per.length) rows.push(`| The same: one further step of 32 examples (median of ${per.length}) | ${ms(median(per))} |`);
  }
  await browser.close();
  server.close();
  largeServer.close();
  console.log(`backend: ${backend}`);
  for (const line of rows) console.log(line);
  process.exit(0);
}

const timeRun = (until) => timeRunIn(page, until);

const runs = [];
for (let i = 0; i < RUNS; i++) runs.push(await timeRun('confirmed'));
await page.getByTestId('rank-by').selectOption('effect');
await page.locator('[data-testid=ranking][data-measured]').waitFor({ state: 'attached', timeout: 120_000 });
const effectRuns = [];
for (let i = 0; i < 3; i++) effectRuns.push(await timeRun('effects'));
const runRows = () => {
  console.log(`Backend: ${backend}`);
  console.log(`| Run to the first layer on the page | ${ms(median(runs.map((r) => r.first)))} |`);
  console.log(`| Run to the last layer and the predictions | ${ms(median(runs.map((r) => r.last)))} |`);
  console.log(`| Run to the graph ranked by attribution | ${ms(median(runs.map((r) => r.attributed)))} |`);
  console.log(`| Run to its shown nodes confirmed by ablation | ${ms(median(runs.map((r) => r.confirmed)))} |`);
  console.log(`| Run to the graph ranked by measured effect (every candidate ablated; 3 runs) | ${ms(median(effectRuns.map((r) => r.effects)))} |`);
};
if (process.env.BENCH_ONLY === 'run') {
  runRows();
  await browser.close();
  server.close();
  process.exit(0);
}

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

// The released shape, written dense as the release is and converted.
const large = path.join(dir, 'large');
const shapeFile = path.join(root, 'src/cli/released_shape.json');
execFileSync(cli, ['synthetic', '--config', shapeFile, '--density', '0.001', '--seed', '3', '--out', path.join(dir, 'dense')]);
execFileSync(cli, ['convert', '--in', path.join(dir, 'dense/model.safetensors'), '--config', shapeFile, '--tokenizer', path.join(root, 'tests/tokenizer'), '--out', large]);
// The same weights as the release's checkpoint format, when Python is here to write it.
const checkpoint = path.join(dir, 'final_model.pt');
let python = true;
try {
  execFileSync('python3', [path.join(root, 'tests/fixtures/write_pt.py'), '--f32', path.join(dir, 'dense/model.safetensors'), checkpoint]);
} catch {
  python = false;
}
fs.rmSync(path.join(dir, 'dense'), { recursive: true });
const largeServer = await serveStatic(large, { cors: true });
const loads = [];
const largeSource = largeServer.url.replace(/\/$/, '');
for (let i = 0; i < 3; i++) {
  if (i > 0) {
    await page.getByTestId('model-picker').selectOption('paper_rms_topk_sink');
    await page.locator('[data-testid=model-status][data-source="models/paper_rms_topk_sink"]').waitFor({ timeout: 120_000 });
  }
  const t0 = Date.now();
  await page.getByTestId('model-url').fill(largeServer.url);
  await page.getByTestId('load-url').click();
  await page.locator(`[data-testid=model-status][data-source="${largeSource}"]`).waitFor({ timeout: 300_000 });
  loads.push(Date.now() - t0);
}
await page.locator('[data-testid=run-button]:enabled').waitFor({ timeout: 300_000 });
// 256 tokens: the longest prefix of some Python source that is no longer.
const { prompt, tokens: promptTokens } = promptOf(large, 256);
await page.getByTestId('prompt-input').fill(prompt);
// The runs alone (an attribution under way would hold the GPU: the ranking
// is still by activation, as the canvas above left it; its control shows
// once there are predictions), then attributed and confirmed, from a run's click.
assert.equal(await page.evaluate(() => document.querySelector('[data-testid=rank-by]').value), 'activation');
const largeRuns = [];
for (let i = 0; i < 5; i++) largeRuns.push(await timeRun('last'));
await page.getByTestId('rank-by').selectOption('attribution');
await page.locator('[data-testid=ranking][data-confirmed]').waitFor({ state: 'attached', timeout: 600_000 });
const largeAttributed = [];
for (let i = 0; i < 3; i++) largeAttributed.push(await timeRun('confirmed'));
// Memory after the runs.
const memory = { renderer: rss('renderer'), gpu: rss('gpu-process') };

// The checkpoint picked in a fresh tab, converted as it is read.
let pt = null;
if (python) {
  await page.close();
  const fresh = await browser.newPage();
  await fresh.goto(server.url);
  await fresh.locator('main[data-runs="1"]').waitFor({ timeout: 120_000 });
  const before = rss('renderer');
  const t0 = Date.now();
  await fresh.getByTestId('model-files').setInputFiles([shapeFile, checkpoint, path.join(root, 'tests/tokenizer/encoder.json'), path.join(root, 'tests/tokenizer/vocab.bpe')]);
  await fresh.locator('[data-testid=model-status][data-source*="final_model.pt"]').waitFor({ timeout: 600_000 });
  pt = { ms: Date.now() - t0, bytes: fs.statSync(checkpoint).size, before, after: rss('renderer') };
}

await browser.close();
server.close();
largeServer.close();
runRows();
console.log(`| Released 0.4B shape, converted (${(fs.statSync(path.join(large, 'model.safetensors')).size / 1e6).toFixed(1)} MB): URL to loaded | ${ms(median(loads))} |`);
console.log(`| Released 0.4B shape, ${promptTokens}-token prompt: run to the first layer on the page | ${ms(median(largeRuns.map((r) => r.first)))} |`);
console.log(`| Released 0.4B shape, ${promptTokens}-token prompt: run to the last layer and the predictions | ${ms(median(largeRuns.map((r) => r.last)))} |`);
console.log(`| Released 0.4B shape, ${promptTokens}-token prompt: run to every node ranked by attribution (3 runs) | ${ms(median(largeAttributed.map((r) => r.attributed)))} |`);
console.log(`| Released 0.4B shape, ${promptTokens}-token prompt: run to the shown nodes confirmed (within the page's 20 s budget; 3 runs) | ${ms(median(largeAttributed.map((r) => r.confirmed)))} |`);
console.log(`| Released 0.4B shape: renderer / GPU process resident memory after the runs | ${memory.renderer.toFixed(0)} MB / ${memory.gpu.toFixed(0)} MB |`);
if (pt) {
  console.log(`| Released 0.4B shape as a ${(pt.bytes / 1e6).toFixed(1)} MB PyTorch checkpoint, picked: to converted and loaded (one run) | ${ms(pt.ms)} |`);
  console.log(`| The tab's renderer resident memory before / after converting it | ${pt.before.toFixed(0)} MB / ${pt.after.toFixed(0)} MB |`);
}
for (const [what, list] of Object.entries(frames)) {
  const label = `Canvas, ${edges} edges and ${nodes} nodes, ${what} frame`;
  console.log(`| ${label}: event to pixels | ${ms(median(list.map((f) => f.total)))} |`);
  console.log(`| ${label}: drawing calls only | ${ms(median(list.map((f) => f.draw)))} |`);
}
