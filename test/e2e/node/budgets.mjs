// Budgets in money end to end, driven by test/e2e/53_budgets.sh: a key's budget and a tenant's
// shared by two keys hold exactly under 64 concurrent clients spread over both listeners, the
// ledger's cost never passes them, LISTEN inference_budget hears each threshold once, and a new
// period (the budget clock moved a day on) renews them. Each request's reservation equals its
// real cost (a prompt whose estimate is its count, max_tokens the reply's length), so exactly
// as many requests as the budget covers get through, in whatever order they arrive.
import { spawn } from 'node:child_process';

import { call, check, checkEq, finish, json, sleep, sql } from './common.mjs';

const SERVICE = 'bud-chat';
// 14 one-letter words: the mock counts 14 prompt tokens, and the gateway's estimate is
// ceil(27 characters / 4) + 4 for the message + 3 for the reply's priming = 14 as well.
const PROMPT = Array(14).fill('a').join(' ');
const MAX_TOKENS = 5;  // the mock's reply "echo: a a a ..." cut to 5 words
// Prices per million tokens: input 1, output 2, so a request costs 14 + 10 = 24 millionths.
const COST = '0.000024';
const BUDGET = '0.0024';  // exactly 100 requests
const TOTAL = 160;
const CLIENTS = 64;

const body = (stream) => ({ model: SERVICE, messages: [{ role: 'user', content: PROMPT }],
  max_tokens: MAX_TOKENS, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) });

// Sends TOTAL requests from CLIENTS concurrent clients, the keys taken in turn; streamed and not
// alternate.
async function flood(keys) {
  const results = [];
  let next = 0;
  const client = async () => {
    while (next < TOTAL) {
      const i = next++;
      results.push(await call('POST', '/v1/chat/completions',
        { key: keys[i % keys.length], body: body(i % 2 === 1) }));
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
  return results;
}

async function waitForKey(key) {
  for (let i = 0; i < 100; i++) {
    if ((await call('GET', '/v1/models', { key })).status === 200) {
      await sleep(300);  // the other listener reloads within its 100 ms tick
      return true;
    }
    await sleep(50);
  }
  return false;
}

// A psql session that LISTENs; stop() runs one more statement (psql prints the notifications
// that arrived meanwhile before its result) and returns their payloads.
function listen() {
  const psql = spawn('psql', ['-X', '-h', process.env.PG_DIR, '-p', process.env.PG_PORT,
    '-U', 'postgres', '-d', 'postgres'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  psql.stdout.on('data', (c) => (out += c));
  psql.stdin.write('LISTEN inference_budget;\n');
  return {
    stop: () => new Promise((resolve) => {
      psql.on('close', () => {
        const payloads = [...out.matchAll(/Asynchronous notification "inference_budget" with payload "(.*)" received/g)]
          .map((m) => JSON.parse(m[1]));
        resolve(payloads);
      });
      psql.stdin.write('SELECT 1;\n\\q\n');
    }),
  };
}

// Waits for the usage writer to record `requests` requests of the keys in the ledger.
async function ledger(names, requests) {
  const list = names.map((n) => `'${n}'`).join(',');
  let row = '';
  for (let i = 0; i < 100; i++) {
    row = sql(`SELECT sum(requests), sum(rate_limited), sum(cost) FROM inference.usage
                WHERE key_name IN (${list}) AND service = '${SERVICE}'`);
    if (Number(row.split('|')[0]) >= requests) break;
    await sleep(100);
  }
  const [req, limited, cost] = row.split('|');
  return { requests: Number(req), rate_limited: Number(limited), cost };
}

function summary(results) {
  const by = {};
  for (const r of results) {
    const tag = r.status === 200 ? 200 : `${r.status} ${json(r)?.error?.code}`;
    by[tag] = (by[tag] ?? 0) + 1;
  }
  return by;
}

async function main() {
  sql(`SELECT inference.set_price('${SERVICE}', 1, 2)`);
  const keyA = sql(`SELECT inference.create_access_key('bud-a', budget => ${BUDGET}, budget_period => 'day')`);
  const team1 = sql(`SELECT inference.create_access_key('bud-t1', tenant => 'bud-team')`);
  const team2 = sql(`SELECT inference.create_access_key('bud-t2', tenant => 'bud-team')`);
  sql(`SELECT inference.set_tenant_limits('bud-team', budget => ${BUDGET}, budget_period => 'week')`);
  check('the budgeted keys reach the gateway',
    (await waitForKey(keyA)) && (await waitForKey(team1)) && (await waitForKey(team2)));

  const listener = listen();
  await sleep(200);

  // A key's own budget.
  const a = await flood([keyA]);
  checkEq(`a key's budget of ${BUDGET} (100 requests) under ${CLIENTS} clients: 100 answered, then 429 budget_exceeded`,
    { 200: 100, '429 budget_exceeded': TOTAL - 100 }, summary(a));
  check('the requests were spread over both listeners',
    new Set(a.map((r) => r.headers['x-pg-inference-listener'])).size === 2);
  // A request refused while others were in flight may find the budget held rather than spent;
  // once they are answered, it is spent.
  const refusal = await call('POST', '/v1/chat/completions', { key: keyA, body: body(false) });
  const message = json(refusal)?.error?.message ?? '';
  check('the 429 says whose budget it is and when it renews',
    /day budget of access key 'bud-a', 0\.0024 USD, is used up: 0\.0024 spent\. It renews at \d{4}-\d\d-\d\dT00:00:00Z\./.test(message),
    message);
  check('the 429 has a retry-after until the renewal',
    Number(refusal.headers['retry-after']) > 0 && Number(refusal.headers['retry-after']) <= 86400,
    refusal.headers['retry-after']);
  const ledgerA = await ledger(['bud-a'], TOTAL + 1);
  checkEq('the ledger has every request of the key, the refused ones as rate limited',
    { requests: TOTAL + 1, rate_limited: TOTAL - 100 + 1 }, { requests: ledgerA.requests, rate_limited: ledgerA.rate_limited });
  checkEq('the ledger\'s cost is exactly the budget (spent <= budget)', BUDGET, ledgerA.cost.replace(/0+$/, ''));
  checkEq('inference.budgets shows it spent', BUDGET,
    sql(`SELECT spent FROM inference.budgets WHERE budget_of = 'key' AND name = 'bud-a'`).replace(/0+$/, ''));

  // A tenant's budget, shared by two keys.
  const t = await flood([team1, team2]);
  checkEq(`a tenant's budget shared by two keys: 100 answered in all, then 429 budget_exceeded`,
    { 200: 100, '429 budget_exceeded': TOTAL - 100 }, summary(t));
  check('both keys of the tenant were answered', new Set(t.filter((r) => r.status === 200)
    .map((r) => r.headers['x-pg-inference-listener'])).size === 2);
  const tenantMessage = json(t.find((r) => r.status === 429))?.error?.message ?? '';
  check('the tenant\'s 429 names the tenant and its week', /week budget of tenant 'bud-team' \(of access key 'bud-t[12]'\)/.test(tenantMessage), tenantMessage);
  const ledgerT = await ledger(['bud-t1', 'bud-t2'], TOTAL);
  checkEq('the tenant\'s ledger cost is exactly its budget', BUDGET, ledgerT.cost.replace(/0+$/, ''));

  // Alerts: each threshold once per budget and period.
  await sleep(500);
  const alerts = await listener.stop();
  const heard = alerts.map((p) => `${p.budget_of}:${p.budget_of === 'key' ? p.key : p.tenant}:${p.period}:${p.threshold}`).sort();
  checkEq('LISTEN inference_budget heard 50, 80 and 100 % once for each budget',
    ['key:bud-a:day:100', 'key:bud-a:day:50', 'key:bud-a:day:80',
     'tenant:bud-team:week:100', 'tenant:bud-team:week:50', 'tenant:bud-team:week:80'], heard);
  const full = alerts.find((p) => p.budget_of === 'key' && p.threshold === 100);
  checkEq('an alert carries the spending, the budget and the currency',
    { spent: BUDGET, budget: BUDGET, currency: 'USD' },
    { spent: full?.spent, budget: full?.budget, currency: full?.currency });

  // Raising a budget takes effect for the next request.
  sql(`SELECT inference.update_access_key('bud-a', budget => ${BUDGET} + ${COST})`);
  let raised = 0;
  for (let i = 0; i < 20 && raised !== 200; i++) {
    raised = (await call('POST', '/v1/chat/completions', { key: keyA, body: body(false) })).status;
    if (raised !== 200) await sleep(100);
  }
  checkEq('a raised budget lets one more request in', 200, raised);
  checkEq('and no more than it covers', 429,
    (await call('POST', '/v1/chat/completions', { key: keyA, body: body(false) })).status);

  // A new period renews them: the budget clock moved on a week.
  sql(`ALTER SYSTEM SET inference.budget_clock_offset = '7d'`);
  sql('SELECT pg_reload_conf()');
  await sleep(500);
  const renewed = [];
  for (let i = 0; i < 4; i++)
    renewed.push((await call('POST', '/v1/chat/completions', { key: i % 2 ? keyA : team1, body: body(false) })).status);
  checkEq('a new period renews the key\'s and the tenant\'s budgets', [200, 200, 200, 200], renewed);
  sql('ALTER SYSTEM RESET inference.budget_clock_offset');
  sql('SELECT pg_reload_conf()');
}

await main();
finish();
