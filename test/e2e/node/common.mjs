// What the e2e clients share: one PASS/FAIL line per check, like test/lib/check.sh, an exit
// status the calling script can count, SQL through psql and HTTP on a connection per request.
import { execFileSync } from 'node:child_process';
import http from 'node:http';

let failures = 0;

export function check(name, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}`);
  if (!ok) {
    failures++;
    if (detail) console.log(`     ${detail}`);
  }
}
export function checkEq(name, expected, actual) {
  const e = JSON.stringify(expected), a = JSON.stringify(actual);
  check(name, e === a, `expected ${e}, got ${a}`);
}
// The mock upstream counts tokens as words (test/mock/README.md); predictions count the same way.
export const words = (s) => s.split(/\s+/).filter(Boolean).length;

export function finish() {
  process.exit(failures ? 1 : 0);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One statement in the gateway's database (postgres), its rows as psql -At prints them.
export function sql(query) {
  return execFileSync('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-h', process.env.PG_DIR,
    '-p', process.env.PG_PORT, '-U', 'postgres', '-d', 'postgres', '-c', query]).toString().trim();
}

// One HTTP request to the gateway on its own connection, so that the kernel spreads requests
// over the listeners (SO_REUSEPORT).
export function call(method, path, { key, body, raw, extra = {} } = {}) {
  const gateway = new URL(process.env.GATEWAY_URL);
  return new Promise((resolve, reject) => {
    const headers = { ...extra };
    if (key) headers.authorization = `Bearer ${key}`;
    let data;
    if (body !== undefined || raw !== undefined) {
      data = raw ?? JSON.stringify(body);
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(data);
    }
    const req = http.request({ host: gateway.hostname, port: gateway.port, path, method, headers,
                               agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text, at: Date.now() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

export const json = (r) => { try { return JSON.parse(r.text); } catch { return null; } };
