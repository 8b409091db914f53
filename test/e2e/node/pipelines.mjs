// Pipelines end to end, driven by test/e2e/55_pipelines.sh: a bounded, seeded property test.
// Random inserts, updates of the input and of other columns, and deletes run against two
// pipelines (a real[] column, and a table of chunks), interleaved with bursts of upstream 503s,
// a kill -9 of the pipeline worker and a server restart. When the queues drain, every row's
// embedding is exactly that of its current input (the mock's embedding is a function of the
// text), no embedding of a deleted row remains, and updates of other columns called nothing.
// Then: a row whose input is always refused lands in inference.pipeline_errors after
// inference.pipeline_max_attempts with the upstream's message, and retry_failed requeues it.
// PGI_PIPELINE_SEED replays a run; PGI_PIPELINE_ROUNDS sets its length.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

import { check, checkEq, finish, sleep, sql } from './common.mjs';

const require = createRequire(import.meta.url);
const mockCommon = require('../../mock/lib/common.js');

const MOCK = process.env.MOCK_URL;
const SEED = Number(process.env.PGI_PIPELINE_SEED || Date.now() % 1000000);
const ROUNDS = Number(process.env.PGI_PIPELINE_ROUNDS || 8);
const OPS = 40;  // per round
console.log(`     pipelines: seed ${SEED} (PGI_PIPELINE_SEED=${SEED} replays it), ${ROUNDS} rounds`);

// mulberry32: small, seedable, good enough to pick operations.
let state = SEED >>> 0;
function random() {
  state = (state + 0x6D2B79F5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (n) => Math.floor(random() * n);
const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'omega', 'river', 'stone', 'cloud', 'ember',
  'frost', 'maple', 'orbit', 'pixel', 'quartz', 'sonar', 'tundra'];
const phrase = (n) => Array.from({ length: n }, () => WORDS[pick(WORDS.length)]).join(' ');
const quote = (s) => `'${s.replace(/'/g, "''")}'`;

async function mock(method, path, body) {
  const r = await fetch(`${MOCK}${path}`, { method, headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body) });
  return r.json();
}
const scenario = (name) => mock('POST', '/_mock/scenario', { label: 'pl', scenario: name });
const upstreamRequests = async () => (await mock('GET', '/_mock/stats')).requests;

// pg_ctl on the test's cluster, as test/lib/cluster.sh runs it.
function pgCtl(...args) {
  const as = process.getuid() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
  const cmd = [...as, `${process.env.PG_BINDIR}/pg_ctl`, '-D', `${process.env.PG_DIR}/data`, '-l',
    `${process.env.PG_DIR}/server.log`, '-w', '-t', '60', ...args];
  execFileSync(cmd[0], cmd.slice(1), { stdio: 'ignore' });
}

// SQL that may meet a server restarting: tried again for up to 30 s.
async function sqlRetry(query) {
  for (let i = 0; ; i++) {
    try {
      return sql(query);
    } catch (e) {
      if (i >= 300) throw e;
      await sleep(100);
    }
  }
}

async function drained(name, seconds) {
  for (let i = 0; i < seconds * 10; i++) {
    const row = await sqlRetry(`SELECT queued, failed FROM inference.pipelines WHERE name = '${name}'`);
    if (row.startsWith('0|')) return true;
    await sleep(100);
  }
  return false;
}

const expected = (text) => mockCommon.embedding(text, 8);
const parseReal = (s) => s.replace(/[{}]/g, '').split(',').filter(Boolean).map((x) => Math.fround(Number(x)));
const sameVector = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

const ids = new Set();
let nextId = 1;
function randomOps() {
  const stmts = [];
  for (let i = 0; i < OPS; i++) {
    const roll = random();
    const existing = [...ids];
    if (roll < 0.35 || existing.length === 0) {
      const id = nextId++;
      ids.add(id);
      const title = phrase(2), body = phrase(6);
      stmts.push(`INSERT INTO pl_docs (id, title, body, other) VALUES (${id}, ${quote(title)}, ${quote(body)}, 0)`);
      stmts.push(`INSERT INTO pl_notes (id, note) VALUES (${id}, ${quote(phrase(30))})`);
    } else if (roll < 0.6) {
      const id = existing[pick(existing.length)];
      stmts.push(`UPDATE pl_docs SET body = ${quote(phrase(5))} WHERE id = ${id}`);
      stmts.push(`UPDATE pl_notes SET note = ${quote(phrase(25))} WHERE id = ${id}`);
    } else if (roll < 0.85) {
      const id = existing[pick(existing.length)];
      stmts.push(`UPDATE pl_docs SET other = other + 1 WHERE id = ${id}`);
    } else {
      const id = existing[pick(existing.length)];
      ids.delete(id);
      stmts.push(`DELETE FROM pl_docs WHERE id = ${id}`);
      stmts.push(`DELETE FROM pl_notes WHERE id = ${id}`);
    }
  }
  return stmts.join(';\n');
}

async function main() {
  await scenario('ok');
  sql(`SELECT inference.create_pipeline('pl_docs_emb', 'pl_docs', 'title || '' '' || body', 'pl-embed', destination => 'emb')`);
  sql(`SELECT inference.create_pipeline('pl_chunks', 'pl_notes', 'note', 'pl-embed', chunk_size => 40, chunk_overlap => 10)`);

  for (let round = 1; round <= ROUNDS; round++) {
    await sqlRetry(randomOps());
    if (round % 4 === 1) {
      // A burst of upstream 503s while changes keep coming.
      await scenario('unavailable');
      await sleep(300);
      await sqlRetry(randomOps());
      await sleep(700);
      await scenario('ok');
    } else if (round % 4 === 2) {
      // kill -9 of one of the pool's pipeline workers: the server resets every process and
      // recovers.
      const pids = (await sqlRetry("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_inference pipeline worker'"))
        .split('\n').filter(Boolean);
      if (pids.length) process.kill(Number(pids[Math.floor(random() * pids.length)]), 'SIGKILL');
      await sleep(500);
      await sqlRetry('SELECT 1');
    } else if (round % 4 === 3) {
      pgCtl('restart', '-m', 'fast');
      await sqlRetry('SELECT 1');
    }
  }
  await scenario('ok');
  check('the column pipeline\'s queue drains', await drained('pl_docs_emb', 60));
  check('the chunk pipeline\'s queue drains', await drained('pl_chunks', 60));

  // Every row's embedding is that of its current input.
  const rows = sql("SELECT id, title || ' ' || body, emb FROM pl_docs ORDER BY id").split('\n').filter(Boolean);
  let wrong = 0;
  for (const line of rows) {
    const [id, input, emb] = line.split('|');
    if (!emb || !sameVector(parseReal(emb), expected(input))) {
      wrong++;
      if (wrong <= 3) console.log(`     row ${id}: embedding ${emb} for ${JSON.stringify(input)}`);
    }
  }
  checkEq(`every one of ${rows.length} rows has the embedding of its current input`, 0, wrong);
  checkEq('the source kept exactly the rows the test kept', ids.size, rows.length);

  const notes = sql('SELECT id, note FROM pl_notes ORDER BY id').split('\n').filter(Boolean);
  let badChunks = 0;
  for (const line of notes) {
    const [id, note] = line.split('|');
    const chunks = sql(`SELECT chunk || '|' || embedding::text FROM pl_notes_pl_chunks WHERE id = ${id} ORDER BY chunk_seq`)
      .split('\n').filter(Boolean).map((l) => l.split('|'));
    const want = [];
    const chars = [...note];
    for (let first = 0; first < chars.length; first += 30) {
      want.push(chars.slice(first, first + 40).join(''));
      if (first + 40 >= chars.length) break;
    }
    const ok = chunks.length === want.length &&
      chunks.every(([text, emb], i) => text === want[i] && sameVector(parseReal(emb), expected(text)));
    if (!ok) badChunks++;
  }
  checkEq(`every note's chunks are those of its current text, each with its embedding (${notes.length} notes)`, 0, badChunks);
  checkEq('no chunk of a deleted row remains', '0',
    sql('SELECT count(*) FROM pl_notes_pl_chunks c WHERE NOT EXISTS (SELECT 1 FROM pl_notes n WHERE n.id = c.id)'));
  checkEq('nothing is left in the queues or the dead letters', '0',
    sql("SELECT count(*) FROM inference.pipeline_queue q WHERE q.pipeline LIKE 'pl_%'") +
    sql("SELECT count(*) FROM inference.pipeline_errors e WHERE e.pipeline LIKE 'pl_%'").replace(/^0$/, ''));

  // Updates of other columns call nothing.
  const before = await upstreamRequests();
  sql('UPDATE pl_docs SET other = other + 100');
  await sleep(300);
  check('updates of other columns drain', await drained('pl_docs_emb', 30));
  checkEq('updates of other columns made no upstream call', before, await upstreamRequests());

  // A paused pipeline queues but does not call.
  sql("SELECT inference.pause_pipeline('pl_docs_emb')");
  const paused = await upstreamRequests();
  sql(`UPDATE pl_docs SET body = body || ' paused' WHERE id IN (SELECT id FROM pl_docs ORDER BY id LIMIT 3)`);
  await sleep(1000);
  checkEq('a paused pipeline makes no call', paused, await upstreamRequests());
  check('a paused pipeline keeps its queue', Number(sql("SELECT queued FROM inference.pipelines WHERE name = 'pl_docs_emb'")) > 0);
  sql("SELECT inference.resume_pipeline('pl_docs_emb')");
  check('a resumed pipeline drains its queue', await drained('pl_docs_emb', 30));

  // An input the upstream always refuses: dead letters after the attempts, then requeued.
  sql('ALTER SYSTEM SET inference.pipeline_max_attempts = 3');
  sql('SELECT pg_reload_conf()');
  await sleep(300);
  sql(`INSERT INTO pl_docs (id, title, body, other) VALUES (100000, 'bad', 'poison pill', 0)`);
  let dead = '';
  for (let i = 0; i < 200 && !dead; i++) {
    dead = sql("SELECT attempts || '|' || error FROM inference.pipeline_errors WHERE pipeline = 'pl_docs_emb' AND row_key = '{\"id\": 100000}'");
    if (!dead) await sleep(100);
  }
  const [attempts, error] = dead.split('|');
  checkEq('a row whose input always fails lands in pipeline_errors after 3 attempts', '3', attempts);
  check('with the upstream\'s message', /poison/.test(error ?? ''), error);
  checkEq('the other rows are not held back by it', '0', sql("SELECT count(*) FROM pl_docs WHERE emb IS NULL AND id <> 100000"));
  sql("UPDATE pl_docs SET body = 'fixed now' WHERE id = 100000");
  check('the fixed row is embedded', await drained('pl_docs_emb', 30));
  checkEq('and leaves the dead letters', '0', sql("SELECT count(*) FROM inference.pipeline_errors WHERE pipeline = 'pl_docs_emb'"));
  sql("UPDATE pl_docs SET body = 'poison again' WHERE id = 100000");
  for (let i = 0; i < 200; i++) {
    if (sql("SELECT count(*) FROM inference.pipeline_errors WHERE pipeline = 'pl_docs_emb'") === '1') break;
    await sleep(100);
  }
  checkEq('retry_failed requeues the dead letters', '1', sql("SELECT inference.retry_failed('pl_docs_emb')"));
  checkEq('which are queued again', '1', sql("SELECT queued FROM inference.pipelines WHERE name = 'pl_docs_emb'"));
  sql('ALTER SYSTEM RESET inference.pipeline_max_attempts');
  sql('SELECT pg_reload_conf()');
}

await main();
finish();
