// A minimal static file server for the built page (dist/), for model
// folders and for a mirror of OpenAI's release, on a free loopback port, for
// the browser tests and the page benchmark. What a host allows is
// switchable while it runs (`server.options`), as hosts differ:
// - `cors`: other origins may read it; without, a page elsewhere is refused
//   as browsers do;
// - `ranges`: byte ranges (`Range:`, answered 206 with `Content-Range`,
//   honouring `If-Range`); without, every answer is the whole file, as some
//   hosts do.
// - `delay`: milliseconds each answer waits (a slow host, to cancel);
// - `head`: HEAD requests answered; without, 405 (hosts whose CORS rules
//   leave HEAD out).
// Every answer carries an ETag and Last-Modified from the file's size and
// time, so a changed file is seen as changed.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
  '.css': 'text/css',
  '.json': 'application/json',
};

export function serveStatic(dir, { cors = false, ranges = true, delay = 0, head = true } = {}) {
  const options = { cors, ranges, delay, head };
  // Requests answered, for tests that check what was (not) asked.
  const log = [];
  const server = http.createServer((req, res) => (options.delay > 0 ? setTimeout(() => answer(req, res), options.delay) : answer(req, res)));
  const answer = (req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    log.push({ method: req.method, path: urlPath, range: req.headers.range });
    const corsHeaders = options.cors
      ? {
          'access-control-allow-origin': '*',
          'access-control-allow-headers': 'range, if-range',
          'access-control-expose-headers': 'content-range, content-length, etag, last-modified, accept-ranges',
        }
      : {};
    if (req.method === 'HEAD' && !options.head) {
      res.writeHead(405, corsHeaders).end();
      return;
    }
    if (req.method === 'OPTIONS') {
      res.writeHead(options.cors ? 204 : 405, corsHeaders).end();
      return;
    }
    const file = path.join(dir, urlPath.endsWith('/') ? urlPath + 'index.html' : urlPath);
    if (!file.startsWith(dir) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, corsHeaders).end('not found');
      return;
    }
    const stat = fs.statSync(file);
    const etag = `"${stat.size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
    const headers = {
      ...corsHeaders,
      'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
      etag,
      'last-modified': stat.mtime.toUTCString(),
    };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
    const ifRange = req.headers['if-range'];
    const rangeHolds = !ifRange || ifRange === etag || ifRange === headers['last-modified'];
    if (options.ranges) headers['accept-ranges'] = 'bytes';
    if (options.ranges && range && rangeHolds) {
      const start = Number(range[1]);
      const end = Math.min(range[2] === '' ? stat.size - 1 : Number(range[2]), stat.size - 1);
      if (start >= stat.size || end < start) {
        res.writeHead(416, { ...corsHeaders, 'content-range': `bytes */${stat.size}` }).end();
        return;
      }
      res.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${stat.size}` });
      if (req.method === 'HEAD') return res.end();
      fs.createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { ...headers, 'content-length': stat.size });
    if (req.method === 'HEAD') return res.end();
    fs.createReadStream(file).pipe(res);
  };
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/`,
        options,
        log,
        close: () => new Promise((done) => {
          server.close(done);
          server.closeAllConnections();
        }),
      });
    });
  });
}

// `node tests/browser/serve.mjs DIR [--no-ranges] [--no-cors]`: serves DIR
// until stopped, printing its URL (for trying `fetch-release` by hand).
if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = path.resolve(process.argv[2] || '.');
  const served = await serveStatic(dir, { cors: !process.argv.includes('--no-cors'), ranges: !process.argv.includes('--no-ranges') });
  console.log(served.url);
}
