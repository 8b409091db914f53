// Gateway governance end to end, driven by test/e2e/50_governance.sh:
//   node governance.mjs run     rate limits across both listeners, token budgets counted from
//                               streams of all three protocols and from pass-through (which a
//                               key may be refused), a mixed run whose usage and
//                               metrics are predicted exactly; the predictions go to $GOV_STATE
//   node governance.mjs verify  after a clean restart: the ledger holds exactly the predicted
//                               usage, and the periodic flush works
// Every request goes on a new connection, so the kernel spreads them over both listeners
// (SO_REUSEPORT); each answer that reached the limiter says which listener gave it. Prints one
// PASS/FAIL line per check, like test/lib/check.sh.
import fs from 'node:fs';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

import { call, check, checkEq, finish, json, sleep, sql, words } from './common.mjs';

const STATE = process.env.GOV_STATE;
const MODE = process.argv[2];

// The data events of an SSE body, parsed (the final [DONE] left out).
const events = (r) => r.text.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
  .map((l) => JSON.parse(l.slice(6)));

// The upstream usage as the ledger counts it: a total-only count is prompt tokens, a missing
// total is prompt + completion (src/core/usage_counters.h).
function normalise(u) {
  if (!u) return { prompt: 0, completion: 0, total: 0 };
  let prompt = u.prompt_tokens ?? 0, completion = u.completion_tokens ?? 0, total = u.total_tokens ?? 0;
  if (prompt === 0 && completion === 0) prompt = total;
  if (total === 0) total = prompt + completion;
  return { prompt, completion, total };
}
// The mock's usage for a chat (test/mock/README.md): words of every message, words of the reply.
function mockChatUsage(messages) {
  const prompt = messages.reduce((n, m) => n + words(m.content), 0);
  const completion = words(`echo: ${messages[messages.length - 1].content}`);
  return { prompt, completion, total: prompt + completion };
}

const chatBody = (model, text, extra = {}) => ({ model, messages: [{ role: 'user', content: text }], ...extra });

async function waitForKey(key) {
  for (let i = 0; i < 100; i++) {
    if ((await call('GET', '/v1/models', { key })).status === 200) return true;
    await sleep(50);
  }
  return false;
}

async function newKey(name, options = '') {
  const key = sql(`SELECT inference.create_access_key('${name}'${options})`);
  check(`key ${name} reaches the gateway`, await waitForKey(key));
  // One listener has it; the other reloads within its next 100 ms tick.
  await sleep(300);
  return key;
}

async function metrics() {
  const r = await call('GET', '/metrics');
  return { status: r.status, type: r.headers['content-type'], text: r.text,
           families: parsePrometheusTextFormat(r.text) };
}
// One service's series of a histogram family. The parser flattens the series of a labelled
// histogram into one, so each series goes through it alone, its service label taken off.
function histogram(text, name, service) {
  const tag = `service="${service.replace(/["\\]/g, '\\$&')}"`;
  const lines = text.split('\n')
    .filter((l) => l.startsWith(`# TYPE ${name} `) || (l.startsWith(`${name}_`) && l.includes(`{${tag}`)))
    .map((l) => l.replace(`{${tag},`, '{').replace(`{${tag}}`, ''));
  const family = parsePrometheusTextFormat(`${lines.join('\n')}\n`)[0];
  return family?.metrics[0] ?? { buckets: {}, count: '0', sum: '0' };
}
function sample(families, name, labels) {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((x) => Object.entries(labels).every(([k, v]) => (x.labels ?? {})[k] === v));
  if (!m) return 0;
  return Number(m.value ?? m.count);
}

// ------------------------------------------------------------------------------------------------

async function run() {
  const state = { keys: {}, expected: {}, expectedUsers: {} };
  const add = (rows, add) => {
    const e = rows ?? { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, errors: 0, rate_limited: 0 };
    for (const [k, v] of Object.entries(add)) e[k] += v;
    return e;
  };
  const expect = (key, service, counts) => {
    const services = (state.expected[key] ??= {});
    services[service] = add(services[service], counts);
  };
  // inference.usage_by_user: the same counts per (key, end user, service).
  const expectUser = (key, user, service, counts) => {
    const services = ((state.expectedUsers[key] ??= {})[user] ??= {});
    services[service] = add(services[service], counts);
  };

  // --- requests per minute: 5, burst 5 ------------------------------------------------------
  const rpmKey = await newKey('gov-rpm', ', requests_per_minute => 5, burst => 5');
  expect('gov-rpm', '', { requests: 1 });
  const replies = [];
  for (let i = 0; i < 20; i++) replies.push(await call('POST', '/v1/chat/completions', { key: rpmKey, body: chatBody('gw-openai', 'one two') }));
  checkEq('rpm 5, burst 5: exactly 5 successes, then 429s',
          [...Array(5).fill(200), ...Array(15).fill(429)], replies.map((r) => r.status));
  const served = {};
  for (const r of replies) {
    const l = r.headers['x-pg-inference-listener'];
    served[l] = served[l] ?? { 200: 0, 429: 0 };
    served[l][r.status]++;
  }
  check(`both listeners served the key and enforced one shared limit (${JSON.stringify(served)})`,
        Object.keys(served).sort().join() === '1,2');
  checkEq('successes carry x-ratelimit-remaining-requests, counting down',
          ['4', '3', '2', '1', '0'], replies.slice(0, 5).map((r) => r.headers['x-ratelimit-remaining-requests']));
  checkEq('successes carry x-ratelimit-limit-requests', '5', replies[0].headers['x-ratelimit-limit-requests']);
  checkEq('the first reset is when the bucket is full again', '12s', replies[0].headers['x-ratelimit-reset-requests']);
  const refused = replies[5];
  checkEq('a 429 is an OpenAI error with code rate_limit_exceeded', ['rate_limit_exceeded', 'rate_limit_error'],
          [json(refused)?.error?.code, json(refused)?.error?.type]);
  check('its message names the limit and the key', /requests per minute \(limit 5\) on access key "gov-rpm"/.test(json(refused)?.error?.message ?? ''), refused.text);
  checkEq('its x-ratelimit headers', ['5', '0', '1m0s'],
          ['limit', 'remaining', 'reset'].map((h) => refused.headers[`x-ratelimit-${h}-requests`]));
  const retryAfter = Number(refused.headers['retry-after']);
  check(`its retry-after is when one request is allowed again (${retryAfter} s)`, retryAfter >= 11 && retryAfter <= 12);
  check('no token headers without a token limit', refused.headers['x-ratelimit-limit-tokens'] === undefined);
  expect('gov-rpm', 'gw-openai', { requests: 20, rate_limited: 15 });
  for (const r of replies.slice(0, 5)) {
    const u = normalise(json(r)?.usage);
    expect('gov-rpm', 'gw-openai', { prompt_tokens: u.prompt, completion_tokens: u.completion, total_tokens: u.total });
  }
  // Waiting what the last 429 announced lets exactly one more request in.
  const last = replies[replies.length - 1];
  await sleep(Math.max(0, last.at + Number(last.headers['retry-after']) * 1000 + 100 - Date.now()));
  const again = await call('POST', '/v1/chat/completions', { key: rpmKey, body: chatBody('gw-openai', 'one two') });
  const after = await call('POST', '/v1/chat/completions', { key: rpmKey, body: chatBody('gw-openai', 'one two') });
  checkEq(`after the announced ${last.headers['retry-after']} s: one success, then 429 again`, [200, 429], [again.status, after.status]);
  const ua = normalise(json(again)?.usage);
  expect('gov-rpm', 'gw-openai', { requests: 2, rate_limited: 1, prompt_tokens: ua.prompt, completion_tokens: ua.completion, total_tokens: ua.total });

  // The same limit hit by 20 requests at once, all on their own connections.
  const burstKey = await newKey('gov-burst', ', requests_per_minute => 5');
  expect('gov-burst', '', { requests: 1 });
  const together = await Promise.all(Array.from({ length: 20 }, () =>
    call('POST', '/v1/embeddings', { key: burstKey, body: { model: 'gw-embed', input: 'a b c', encoding_format: 'float' } })));
  checkEq('20 concurrent requests against burst 5: exactly 5 get through',
          { 200: 5, 429: 15 }, together.reduce((m, r) => ({ ...m, [r.status]: (m[r.status] ?? 0) + 1 }), {}));
  check(`the concurrent requests were spread over both listeners`,
        new Set(together.map((r) => r.headers['x-pg-inference-listener'])).size === 2);
  expect('gov-burst', 'gw-embed', { requests: 20, rate_limited: 15, prompt_tokens: 15, total_tokens: 15 });
  // update_access_key(clear => ...) lifts the limit: the same key, its bucket empty, gets through.
  sql("SELECT inference.update_access_key('gov-burst', clear => '{requests_per_minute}')");
  await sleep(1000);  // both listeners reload on their 100 ms tick
  const lifted = await Promise.all(Array.from({ length: 10 }, () =>
    call('POST', '/v1/embeddings', { key: burstKey, body: { model: 'gw-embed', input: 'a b c', encoding_format: 'float' } })));
  checkEq('after clearing requests_per_minute, 10 more requests all get through',
          Array(10).fill(200), lifted.map((r) => r.status));
  check('and carry no x-ratelimit-*-requests headers',
        lifted.every((r) => r.headers['x-ratelimit-limit-requests'] === undefined));
  expect('gov-burst', 'gw-embed', { requests: 10, prompt_tokens: 30, total_tokens: 30 });

  // --- tenant limits: shared by every key of the tenant, beside each key's own ---------------
  // Hourly limits, so that nothing refills while the test runs (one request per 72 s at most).
  sql("SELECT inference.set_tenant_limits('gov-tenant', requests_per_hour => 50)");
  const tenantA = await newKey('gov-tenant-a', ", tenant => 'gov-tenant', requests_per_hour => 100");
  const tenantB = await newKey('gov-tenant-b', ", tenant => 'gov-tenant'");
  expect('gov-tenant-a', '', { requests: 1 });
  expect('gov-tenant-b', '', { requests: 1 });
  const embed = { model: 'gw-embed', input: 'a b c', encoding_format: 'float' };
  const shared = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    call('POST', '/v1/embeddings', { key: i % 2 ? tenantB : tenantA, body: embed })
      .then((r) => ({ ...r, who: i % 2 ? 'b' : 'a' }))));
  checkEq('two keys of a tenant limited to 50 an hour, 200 concurrent requests: exactly 50 get through',
          { 200: 50, 429: 150 }, shared.reduce((m, r) => ({ ...m, [r.status]: (m[r.status] ?? 0) + 1 }), {}));
  check('the tenant\'s requests were spread over both listeners',
        new Set(shared.map((r) => r.headers['x-pg-inference-listener'])).size === 2);
  const tenantRefusal = shared.find((r) => r.status === 429);
  check('a 429 names the tenant\'s limit, the tenant and the key',
        /requests per hour \(limit 50\) on tenant "gov-tenant" of access key "gov-tenant-[ab]"/
          .test(json(tenantRefusal)?.error?.message ?? ''), tenantRefusal?.text);
  const okA = shared.filter((r) => r.status === 200 && r.who === 'a').length;
  const okB = 50 - okA;
  expect('gov-tenant-a', 'gw-embed', { requests: 100, rate_limited: 100 - okA, prompt_tokens: 3 * okA, total_tokens: 3 * okA });
  expect('gov-tenant-b', 'gw-embed', { requests: 100, rate_limited: 100 - okB, prompt_tokens: 3 * okB, total_tokens: 3 * okB });
  // What the tenant refused took nothing from the key's own limit: without the tenant's
  // limits, key a has exactly 100 - (its successes) left this hour.
  sql("SELECT inference.set_tenant_limits('gov-tenant')");
  await sleep(1000);  // both listeners reload on their 100 ms tick
  const own = await Promise.all(Array.from({ length: 100 }, () =>
    call('POST', '/v1/embeddings', { key: tenantA, body: embed })));
  checkEq(`without the tenant's limits, key a gets exactly its own remaining ${100 - okA}`,
          100 - okA, own.filter((r) => r.status === 200).length);
  expect('gov-tenant-a', 'gw-embed', { requests: 100, rate_limited: okA, prompt_tokens: 3 * (100 - okA), total_tokens: 3 * (100 - okA) });
  // A tenant's token budget is charged by every key's answers: 9 tokens are three embeddings.
  // Key a has spent its own hour: a third key of the tenant shares the budget with b.
  sql("SELECT inference.set_tenant_limits('gov-tenant', tokens_per_hour => 9)");
  const tenantC = await newKey('gov-tenant-c', ", tenant => 'gov-tenant'");
  expect('gov-tenant-c', '', { requests: 1 });
  const spent = [];
  for (let i = 0; i < 5; i++) spent.push(await call('POST', '/v1/embeddings', { key: i % 2 ? tenantC : tenantB, body: embed }));
  checkEq('a tenant budget of 9 tokens: three 3-token answers over both keys, then 429',
          [200, 200, 200, 429, 429], spent.map((r) => r.status));
  check('the refusal names tokens per hour of the tenant',
        /tokens per hour \(limit 9\) on tenant "gov-tenant"/.test(json(spent[3])?.error?.message ?? ''), spent[3].text);
  // b, c, b, c, b: c's answer at i=1 succeeded and its i=3 was refused.
  expect('gov-tenant-b', 'gw-embed', { requests: 3, rate_limited: 1, prompt_tokens: 6, total_tokens: 6 });
  expect('gov-tenant-c', 'gw-embed', { requests: 2, rate_limited: 1, prompt_tokens: 3, total_tokens: 3 });
  sql("SELECT inference.set_tenant_limits('gov-tenant')");

  // --- limits per end user of a key: 50 a minute each ----------------------------------------
  const usersKey = await newKey('gov-users', ', user_requests_per_minute => 50');
  expect('gov-users', '', { requests: 1 });
  const started = Date.now();
  const perUser = await Promise.all(Array.from({ length: 500 }, (_, i) =>
    call('POST', '/v1/embeddings', { key: usersKey, body: embed, extra: { 'x-user-id': `u${i % 5}` } })
      .then((r) => ({ ...r, user: `u${i % 5}` }))));
  const elapsed = Date.now() - started;
  // A minute's 50 refill one per 1.2 s: a run longer than that may let one more in per user.
  const extra = Math.floor(elapsed / 1200);
  const okPerUser = ['u0', 'u1', 'u2', 'u3', 'u4'].map((u) =>
    perUser.filter((r) => r.user === u && r.status === 200).length);
  check(`5 users x 100 concurrent requests, 50 a minute each: 50 successes per user (${okPerUser}, ${elapsed} ms)`,
        okPerUser.every((n) => n >= 50 && n <= 50 + extra), JSON.stringify(okPerUser));
  checkEq('every other answer is a 429', 500 - okPerUser.reduce((a, b) => a + b, 0),
          perUser.filter((r) => r.status === 429).length);
  check('the users\' requests were spread over both listeners',
        new Set(perUser.map((r) => r.headers['x-pg-inference-listener'])).size === 2);
  const userRefusal = perUser.find((r) => r.status === 429);
  check('a 429 names the limit, the end user and the key',
        /requests per minute \(limit 50\) on end user "u[0-4]" of access key "gov-users"/
          .test(json(userRefusal)?.error?.message ?? ''), userRefusal?.text);
  const usersOk = okPerUser.reduce((a, b) => a + b, 0);
  expect('gov-users', 'gw-embed', { requests: 500, rate_limited: 500 - usersOk, prompt_tokens: 3 * usersOk, total_tokens: 3 * usersOk });
  okPerUser.forEach((ok, i) => expectUser('gov-users', `u${i}`, 'gw-embed',
    { requests: 100, rate_limited: 100 - ok, prompt_tokens: 3 * ok, total_tokens: 3 * ok }));
  // A request naming no user is under the key's own limits only (it has none here).
  const anonymous = await call('POST', '/v1/embeddings', { key: usersKey, body: embed });
  checkEq('a request without a user id is not under the per-user limit', 200, anonymous.status);
  expect('gov-users', 'gw-embed', { requests: 1, prompt_tokens: 3, total_tokens: 3 });
  // Tokens per user, the user named by the body: 6 tokens are two 3-token embeddings.
  const userTokensKey = await newKey('gov-user-tokens', ', user_tokens_per_hour => 6');
  expect('gov-user-tokens', '', { requests: 1 });
  const byBody = [];
  for (const u of ['x', 'x', 'x', 'y']) byBody.push(await call('POST', '/v1/embeddings', { key: userTokensKey, body: { ...embed, user: u } }));
  checkEq('6 tokens an hour per user (named by the body): x gets two answers, y has its own budget',
          [200, 200, 429, 200], byBody.map((r) => r.status));
  expect('gov-user-tokens', 'gw-embed', { requests: 4, rate_limited: 1, prompt_tokens: 9, total_tokens: 9 });
  expectUser('gov-user-tokens', 'x', 'gw-embed', { requests: 3, rate_limited: 1, prompt_tokens: 6, total_tokens: 6 });
  expectUser('gov-user-tokens', 'y', 'gw-embed', { requests: 1, prompt_tokens: 3, total_tokens: 3 });
  // The ledger keeps any UTF-8 id of up to 256 bytes as it came; other ids are refused.
  const odd = ['zoë \u{1F600} "quoted"', 'é'.repeat(128)];
  for (const u of odd) {
    checkEq(`an end user id of ${Buffer.byteLength(u)} bytes of UTF-8 is taken`, 200,
            (await call('POST', '/v1/embeddings', { key: userTokensKey, body: { ...embed, user: u } })).status);
    expectUser('gov-user-tokens', u, 'gw-embed', { requests: 1, prompt_tokens: 3, total_tokens: 3 });
  }
  expect('gov-user-tokens', 'gw-embed', { requests: 2, prompt_tokens: 6, total_tokens: 6 });
  const tooLong = await call('POST', '/v1/embeddings', { key: userTokensKey, body: { ...embed, user: 'é'.repeat(129) } });
  check('an end user id over 256 bytes is refused with 400 invalid_user',
        tooLong.status === 400 && json(tooLong)?.error?.code === 'invalid_user', tooLong.text);
  expect('gov-user-tokens', 'gw-embed', { requests: 1, errors: 1 });

  // --- SQL callers: counted under role:<calling role> -----------------------------------------
  // The role set by SET ROLE is the one counted. Embeddings go in two batches (two upstream
  // requests of one call); a failing call counts as an error.
  const asRole = (q) => sql(`SET ROLE gov_sql_caller; ${q}`).split('\n').pop();  // the last result
  checkEq('inference.chat from SQL answers', 'echo: one two three',
          asRole("SELECT inference.chat('gw-openai', 'one two three')"));
  const chatTokens = mockChatUsage([{ content: 'one two three' }]);
  expect('role:gov_sql_caller', 'gw-openai', { requests: 1, prompt_tokens: chatTokens.prompt,
    completion_tokens: chatTokens.completion, total_tokens: chatTokens.total });
  // Priced: their cost is in the ledger too (checked after the restart).
  sql("SELECT inference.set_price('gw-embed', 0.02, 0)");
  checkEq('inference.encode_text_batch from SQL answers, in two batches', '3',
          asRole(`SET inference.embedding_batch_size = 2;
                  SELECT count(*) FROM inference.encode_text_batch('gw-embed', ARRAY['a b', 'c d e', 'f'])`));
  expect('role:gov_sql_caller', 'gw-embed', { requests: 1, prompt_tokens: 6, total_tokens: 6 });
  asRole(`DO $$ BEGIN PERFORM inference.chat('gov-err', 'fails'); EXCEPTION WHEN OTHERS THEN NULL; END $$`);
  expect('role:gov_sql_caller', 'gov-err', { requests: 1, errors: 1 });

  // --- tokens per hour, counted from streams of all three protocols --------------------------
  const prompt = 'alpha beta gamma';  // 3 prompt tokens, "echo: alpha beta gamma" 4 completion
  const budget = 3 * 7;
  const tokensKey = await newKey('gov-tokens', `, tokens_per_hour => ${budget}`);
  expect('gov-tokens', '', { requests: 1 });
  let left = budget;
  for (const service of ['gw-openai', 'gw-claude', 'gw-gemini']) {
    const r = await call('POST', '/v1/chat/completions', { key: tokensKey, body: chatBody(service, prompt, { stream: true }) });
    const evs = events(r);
    checkEq(`${service} stream admitted with ${left} tokens left`, [200, String(budget), String(left)],
            [r.status, r.headers['x-ratelimit-limit-tokens'], r.headers['x-ratelimit-remaining-tokens']]);
    check(`${service} stream: no usage chunk for a caller who did not ask`, evs.every((e) => !e.usage));
    expect('gov-tokens', service, { requests: 1, prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    left -= 7;
  }
  for (const service of ['gw-openai', 'gw-claude']) {
    const r = await call('POST', '/v1/chat/completions', { key: tokensKey, body: chatBody(service, prompt, { stream: true }) });
    checkEq(`a spent token budget refuses ${service} with 429`, [429, 'rate_limit_exceeded'], [r.status, json(r)?.error?.code]);
    checkEq(`  with the token headers`, [String(budget), '0'],
            [r.headers['x-ratelimit-limit-tokens'], r.headers['x-ratelimit-remaining-tokens']]);
    check(`  and retry-after until a token is back (${r.headers['retry-after']} s)`,
          Number(r.headers['retry-after']) >= 170 && Number(r.headers['retry-after']) <= 172);
    check('  and says which limit', /tokens per hour \(limit 21\)/.test(json(r)?.error?.message ?? ''), r.text);
    expect('gov-tokens', service, { requests: 1, rate_limited: 1 });
  }

  // --- pass-through is accounted like every route -------------------------------------------
  // A token-limited key: pass-through chat, plain and streamed, charged exactly the mock's usage;
  // the spent budget stops it; a path whose usage the gateway cannot read is refused.
  const ptKey = await newKey('gov-pt', `, tokens_per_hour => ${budget}`);
  expect('gov-pt', '', { requests: 1 });
  const ptPath = '/inferenceservices/gw-openai/v1/chat/completions';
  const ptBody = (extra = {}) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: prompt }], ...extra });
  let ptLeft = budget;
  for (const [label, extra] of [['plain', {}], ['streamed', { stream: true, stream_options: { include_usage: true } }],
                                ['plain again', {}]]) {
    const r = await call('POST', ptPath, { key: ptKey, body: ptBody(extra) });
    const u = normalise(extra.stream ? events(r).find((e) => e.usage)?.usage : json(r)?.usage);
    checkEq(`pass-through ${label} chat with ${ptLeft} tokens left: 200, the mock's usage`,
            [200, String(ptLeft), 7], [r.status, r.headers['x-ratelimit-remaining-tokens'], u.total]);
    expect('gov-pt', 'gw-openai', { requests: 1, prompt_tokens: u.prompt, completion_tokens: u.completion, total_tokens: u.total });
    ptLeft -= u.total;
  }
  for (const extra of [{}, { stream: true }]) {
    const r = await call('POST', ptPath, { key: ptKey, body: ptBody(extra) });
    checkEq(`a token budget spent through pass-through refuses it with 429${extra.stream ? ' (streamed)' : ''}`,
            [429, 'rate_limit_exceeded'], [r.status, json(r)?.error?.code]);
    expect('gov-pt', 'gw-openai', { requests: 1, rate_limited: 1 });
  }
  {
    const r = await call('GET', '/inferenceservices/gw-openai/v1/models', { key: ptKey });
    checkEq('a token-limited key gets 403 on a pass-through path whose usage is unreadable',
            [403, 'passthrough_path_not_metered'], [r.status, json(r)?.error?.code]);
    expect('gov-pt', 'gw-openai', { requests: 1, errors: 1 });
  }
  // passthrough => false: 403 on every /inferenceservices/ path, the /v1/ routes still served.
  const noPtKey = await newKey('gov-nopt', ', passthrough => false');
  expect('gov-nopt', '', { requests: 1 });
  for (const [method, path] of [['POST', ptPath], ['GET', '/inferenceservices/gw-openai/v1/models'],
                                ['POST', '/inferenceservices/gw-claude/v1/messages'],
                                ['GET', '/inferenceservices/no-such-service/x']]) {
    const r = await call(method, path, { key: noPtKey, body: method === 'POST' ? ptBody() : undefined });
    checkEq(`passthrough => false: ${method} ${path} is 403`, [403, 'passthrough_not_allowed'],
            [r.status, json(r)?.error?.code]);
    expect('gov-nopt', '', { requests: 1, errors: 1 });
  }
  {
    const r = await call('POST', '/v1/chat/completions', { key: noPtKey, body: chatBody('gw-openai', prompt) });
    checkEq('passthrough => false: /v1/chat/completions still answers', 200, r.status);
    const u = normalise(json(r)?.usage);
    expect('gov-nopt', 'gw-openai', { requests: 1, prompt_tokens: u.prompt, completion_tokens: u.completion, total_tokens: u.total });
  }

  // --- a mixed run: every protocol, streamed and not, upstream errors, 429s -------------------
  const admitted = 15;
  const mixedKey = await newKey('gov-mixed', `, requests_per_hour => ${admitted}`);
  expect('gov-mixed', '', { requests: 1 });
  const before = await metrics();
  const sent = [];  // [service, ledger status, tokens, reached the upstream, rate limited]
  const record = (service, r, tokens, { ledgerStatus = r.status, upstream = true } = {}) => {
    const limited = r.status === 429 && !upstream;
    sent.push({ service, status: ledgerStatus, tokens, upstream, limited });
    expect('gov-mixed', service, { requests: 1, prompt_tokens: tokens.prompt, completion_tokens: tokens.completion,
      total_tokens: tokens.total, errors: !limited && ledgerStatus >= 400 ? 1 : 0, rate_limited: limited ? 1 : 0 });
  };
  // A chat call and the tokens the upstream reported for it: from the answer, from the stream's
  // usage chunk, or (a stream without one) from the mock's formula.
  const chatCase = async (service, text, opts = {}) => {
    const messages = [...(opts.system ? [{ role: 'system', content: opts.system }] : []), { role: 'user', content: text }];
    const body = { model: service, messages, ...(opts.stream ? { stream: true } : {}),
                   ...(opts.usage ? { stream_options: { include_usage: true } } : {}) };
    const r = await call('POST', '/v1/chat/completions', { key: mixedKey, body });
    let tokens = normalise(null);
    if (r.status === 200 && !opts.stream) tokens = normalise(json(r).usage);
    else if (r.status === 200 && opts.usage) tokens = normalise(events(r).find((e) => e.usage)?.usage);
    else if (r.status === 200) tokens = mockChatUsage(messages);
    return { r, tokens };
  };
  for (const [service, text, opts] of [
    ['gw-openai', 'the quick brown fox', { system: 'be brief' }],
    ['gw-openai', 'streamed with usage please', { stream: true, usage: true }],
    ['gw-openai', 'streamed without usage', { stream: true }],
    ['gw-claude', 'hello claude how are you', { system: 'answer in one line' }],
    ['gw-claude', 'a streamed claude answer', { stream: true, usage: true }],
    ['gw-claude', 'another streamed one', { stream: true }],
    ['gw-gemini', 'hello gemini', {}],
    ['gw-gemini', 'gemini streamed without usage', { stream: true }],
    ['gw-gemini', 'gemini streamed with usage', { stream: true, usage: true }],
  ]) {
    const { r, tokens } = await chatCase(service, text, opts);
    check(`mixed: ${service} ${opts.stream ? 'streamed' : 'plain'} chat answers 200`, r.status === 200, r.text.slice(0, 300));
    if (opts.usage) check(`mixed: ${service} stream carries the usage asked for`, tokens.total > 0);
    record(service, r, tokens);
  }
  for (const [service, input] of [['gw-embed', ['first text here', 'second']], ['gw-gembed', ['gemini embeds this']]]) {
    const r = await call('POST', '/v1/embeddings', { key: mixedKey, body: { model: service, input, encoding_format: 'float' } });
    check(`mixed: ${service} embeddings answer 200`, r.status === 200, r.text.slice(0, 300));
    record(service, r, normalise(json(r)?.usage));
  }
  {
    const r = await call('POST', '/v1/rerank', { key: mixedKey, body: { model: 'gw-cohere', query: 'postgres extension', documents: ['a recipe', 'a postgres extension'] } });
    check('mixed: rerank answers 200', r.status === 200, r.text.slice(0, 300));
    record('gw-cohere', r, normalise(json(r)?.usage));
  }
  {
    const { r } = await chatCase('gov-err', 'this upstream fails');
    check(`mixed: a failing upstream is an error (${r.status})`, r.status >= 500, r.text.slice(0, 300));
    record('gov-err', r, normalise(null));
    const nf = await chatCase('gov-404', 'this upstream has no such model');
    check(`mixed: an upstream 404 is passed on (${nf.r.status})`, nf.r.status === 404, nf.r.text.slice(0, 300));
    record('gov-404', nf.r, normalise(null));
    // A stream the upstream breaks: the caller got 200 and an error event; the ledger says 502.
    const broken = await chatCase('gov-broken-stream', 'one two three four', { stream: true });
    check('mixed: a broken stream ends in an error event', broken.r.status === 200 && broken.r.text.includes('"error"'));
    // It reported no usage: it is charged one completion token per 4 characters it streamed.
    const streamed = broken.r.text.split('\n').filter((l) => l.startsWith('data: '))
      .map((l) => { try { return JSON.parse(l.slice(6)); } catch { return null; } })
      .reduce((n, j) => n + [...(j?.choices?.[0]?.delta?.content ?? '')].length, 0);
    const charged = Math.ceil(streamed / 4);
    check('mixed: the broken stream streamed some text', streamed > 0);
    record('gov-broken-stream', broken.r, { prompt: 0, completion: charged, total: charged },
           { ledgerStatus: 502 });
  }
  checkEq('mixed: the run made exactly as many admitted calls as the hourly limit', admitted, sent.length);
  for (let i = 0; i < 3; i++) {
    const { r } = await chatCase('gw-openai', 'over the hourly limit');
    checkEq(`mixed: request ${admitted + i + 1} is over requests_per_hour`, [429, String(admitted)],
            [r.status, r.headers['x-ratelimit-limit-requests']]);
    record('gw-openai', r, normalise(null), { upstream: false });
  }
  {
    const r = await call('POST', '/v1/chat/completions', { key: mixedKey, body: chatBody('no-such-service', 'x') });
    checkEq('mixed: an unknown model is 404', 404, r.status);
    record('', r, normalise(null), { upstream: false });
    const bad = await call('POST', '/v1/chat/completions', { key: mixedKey, raw: '{"model": ' });
    checkEq('mixed: malformed JSON is 400', 400, bad.status);
    record('', bad, normalise(null), { upstream: false });
  }

  // --- /metrics ---------------------------------------------------------------------------------
  const afterRun = await metrics();
  checkEq('/metrics answers 200 in the text format 0.0.4', [200, 'text/plain; version=0.0.4; charset=utf-8'],
          [afterRun.status, afterRun.type]);
  check('/metrics parses with a Prometheus text parser', afterRun.families.length >= 9);
  const d = (name, labels) => sample(afterRun.families, name, labels) - sample(before.families, name, labels);
  const hd = (name, service) => Number(histogram(afterRun.text, name, service).count) -
                                Number(histogram(before.text, name, service).count);
  const byService = {};
  for (const s of sent) {
    const b = (byService[s.service] ??= { codes: {}, prompt: 0, completion: 0, limited: 0, count: 0, upstream: 0 });
    b.codes[s.status] = (b.codes[s.status] ?? 0) + 1;
    b.prompt += s.tokens.prompt;
    b.completion += s.tokens.completion;
    b.limited += s.limited ? 1 : 0;
    b.count++;
    b.upstream += s.upstream ? 1 : 0;
  }
  const expectedCounters = {}, actualCounters = {};
  for (const [service, b] of Object.entries(byService)) {
    for (const [code, n] of Object.entries(b.codes)) {
      expectedCounters[`requests ${service} ${code}`] = n;
      actualCounters[`requests ${service} ${code}`] = d('pg_inference_gateway_requests_total', { service, code });
    }
    expectedCounters[`prompt ${service}`] = b.prompt;
    actualCounters[`prompt ${service}`] = d('pg_inference_gateway_tokens_total', { service, kind: 'prompt' });
    expectedCounters[`completion ${service}`] = b.completion;
    actualCounters[`completion ${service}`] = d('pg_inference_gateway_tokens_total', { service, kind: 'completion' });
    expectedCounters[`rate limited ${service}`] = b.limited;
    actualCounters[`rate limited ${service}`] = d('pg_inference_gateway_rate_limited_total', { service });
    expectedCounters[`latency count ${service}`] = b.count;
    actualCounters[`latency count ${service}`] = hd('pg_inference_gateway_request_duration_seconds', service);
    expectedCounters[`upstream latency count ${service}`] = b.upstream;
    actualCounters[`upstream latency count ${service}`] = hd('pg_inference_gateway_upstream_duration_seconds', service);
  }
  checkEq('/metrics counters moved by exactly the traffic sent (requests by service and code, tokens, 429s, histogram counts)',
          expectedCounters, actualCounters);
  const listenerDelta = d('pg_inference_gateway_listener_requests_total', { listener: '1' }) +
                        d('pg_inference_gateway_listener_requests_total', { listener: '2' });
  checkEq('the listeners together finished every request of the run', sent.length, listenerDelta);
  const h = histogram(afterRun.text, 'pg_inference_gateway_request_duration_seconds', 'gw-openai');
  const le = Object.entries(h.buckets).sort(([a], [b]) => (a === '+Inf' ? 1 : b === '+Inf' ? -1 : a - b));
  check('latency histograms have cumulative buckets up to +Inf = count, and a sum in seconds',
        le.length >= 10 && le.every(([, v], i) => i === 0 || Number(v) >= Number(le[i - 1][1])) &&
        Number(h.buckets['+Inf']) === Number(h.count) && Number(h.sum) > 0 && Number(h.sum) < 60, JSON.stringify(h));
  // Both listeners report the same totals: the counters come from shared memory.
  const counters = (m) => m.text.split('\n').filter((l) => /^pg_inference_gateway_(requests|tokens|rate_limited)_total/.test(l)).join('\n');
  const views = [];
  for (let i = 0; i < 8; i++) views.push(counters(await metrics()));
  check('every /metrics answer (both listeners) shows the same counters', views.every((v) => v === views[0]));

  // In flight: a slow call is visible while it runs.
  const freeKey = await newKey('gov-free');
  const slow = call('POST', '/v1/chat/completions', { key: freeKey, body: chatBody('gov-slow', 'take your time') });
  await sleep(500);
  const during = await metrics();
  const inFlight = (m) => ['1', '2'].reduce((n, l) => n + sample(m.families, 'pg_inference_gateway_in_flight_requests', { listener: l }), 0);
  checkEq('in_flight_requests counts a slow call while it runs', 1, inFlight(during));
  checkEq('the slow call answers', 200, (await slow).status);
  await sleep(300);
  checkEq('in_flight_requests is 0 once it is done', 0, inFlight(await metrics()));
  const ages = ['1', '2'].map((l) => sample(during.families, 'pg_inference_gateway_catalog_snapshot_age_seconds', { listener: l }));
  check(`catalog_snapshot_age_seconds per listener, fresh after a key change (${ages})`,
        ages.every((a) => a >= 0 && a < 2) && during.text.includes('catalog_snapshot_age_seconds{listener="2"}'));

  // Nothing reached the ledger yet (the flush interval is 1 h): the restart must flush it all.
  checkEq('usage waits in shared memory (no flush during the run)', '0',
          sql("SELECT count(*) FROM inference.usage WHERE key_name LIKE 'gov-%'"));
  state.keys = { rpm: rpmKey, burst: burstKey, tokens: tokensKey, mixed: mixedKey, free: freeKey, pt: ptKey, nopt: noPtKey };
  expect('gov-free', '', { requests: 1 });
  expect('gov-free', 'gov-slow', { requests: 1, ...(() => { const u = mockChatUsage([{ content: 'take your time' }]);
    return { prompt_tokens: u.prompt, completion_tokens: u.completion, total_tokens: u.total }; })() });
  fs.writeFileSync(STATE, JSON.stringify(state));
}

async function verify() {
  const state = JSON.parse(fs.readFileSync(STATE, 'utf8'));
  for (const [key, services] of Object.entries(state.expected)) {
    const rows = sql(`SELECT coalesce(json_object_agg(service, json_build_object('requests', requests,
        'prompt_tokens', prompt_tokens, 'completion_tokens', completion_tokens, 'total_tokens', total_tokens,
        'errors', errors, 'rate_limited', rate_limited) ORDER BY service), '{}')
        FROM inference.usage WHERE key_name = '${key}'`);
    const sorted = Object.fromEntries(Object.entries(services).sort(([a], [b]) => (a < b ? -1 : 1)));
    checkEq(`after a clean restart inference.usage of ${key} is exactly what was sent`, sorted, JSON.parse(rows));
  }
  // Per end user: the rows of usage_by_user are exactly the client's counts.
  const userRows = sql(`SELECT coalesce(json_object_agg(key_name || '/' || end_user || '/' || service,
      json_build_object('requests', requests, 'prompt_tokens', prompt_tokens,
        'completion_tokens', completion_tokens, 'total_tokens', total_tokens, 'errors', errors,
        'rate_limited', rate_limited)), '{}')
      FROM inference.usage_by_user WHERE key_name LIKE 'gov-%'`);
  const wanted = {};
  for (const [key, users] of Object.entries(state.expectedUsers)) {
    for (const [user, services] of Object.entries(users)) {
      for (const [service, counts] of Object.entries(services)) wanted[`${key}/${user}/${service}`] = counts;
    }
  }
  const byName = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
  checkEq(`after a clean restart inference.usage_by_user is exactly what each end user sent (${Object.keys(wanted).length} rows)`,
          byName(wanted), byName(JSON.parse(userRows)));
  checkEq("a SQL caller's embeddings cost 6 tokens at 0.02 per million", '0.00000012',
          sql(`SELECT trim_scale(cost)::text FROM inference.usage
                WHERE key_name = 'role:gov_sql_caller' AND service = 'gw-embed'`));
  checkEq('last_used_at of every key is its latest usage', '0', sql(`SELECT count(*) FROM inference.access_keys k
      WHERE k.name LIKE 'gov-%' AND k.last_used_at IS DISTINCT FROM
            (SELECT max(last_access_at) FROM inference.usage u WHERE u.key_name = k.name)`));
  checkEq('usage is kept per UTC day', '0', sql(`SELECT count(*) FROM inference.usage WHERE key_name LIKE 'gov-%'
      AND day NOT IN ((now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date - 1)`));

  // The periodic flush (default interval) adds new usage within a few seconds.
  const count = () => Number(sql(`SELECT coalesce(sum(requests), 0) FROM inference.usage WHERE key_name = 'gov-free'`));
  const start = count();
  check('the key works after the restart', await waitForKey(state.keys.free));
  const t0 = Date.now();
  let flushed = false;
  while (Date.now() - t0 < 8000 && !(flushed = count() === start + 1)) await sleep(100);
  check(`the periodic flush recorded new usage (${Date.now() - t0} ms)`, flushed);
}

if (MODE === 'run') await run();
else if (MODE === 'verify') await verify();
else throw new Error(`unknown mode ${MODE}`);
finish();
