// Sends chat completions to a gateway and sums what its answers report, so a script can compare
// the ledger with what clients were served:
//   node chat_load.mjs URL KEY SERVICE COUNT [CONCURRENCY]
// Every other request is streamed (with stream_options.include_usage). Prints one JSON line:
// {"sent", "ok", "status": {code: n}, "prompt", "completion", "total"} where the token sums
// cover the answers that reached the client whole (200, and a stream ending in [DONE]).
const [url, key, service, countText, concurrencyText] = process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText || 1);
const result = { sent: 0, ok: 0, status: {}, prompt: 0, completion: 0, total: 0 };

async function one(i) {
  const stream = i % 2 === 1;
  const body = {
    model: service,
    messages: [{ role: 'user', content: `replica request number ${i}` }],
    stream,
  };
  if (stream) body.stream_options = { include_usage: true };
  result.sent++;
  let res;
  try {
    res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
  } catch (e) {
    result.status.fetch_error = (result.status.fetch_error || 0) + 1;
    return;
  }
  result.status[res.status] = (result.status[res.status] || 0) + 1;
  const text = await res.text();
  if (res.status !== 200) return;
  let usage = null;
  if (stream) {
    if (!text.includes('data: [DONE]')) return;
    for (const line of text.split('\n')) {
      if (!line.startsWith('data: {')) continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.usage) usage = chunk.usage;
    }
  } else {
    usage = JSON.parse(text).usage;
  }
  if (!usage) return;
  result.ok++;
  result.prompt += usage.prompt_tokens;
  result.completion += usage.completion_tokens;
  result.total += usage.total_tokens;
}

let next = 0;
async function worker() {
  while (next < count) await one(next++);
}
await Promise.all(Array.from({ length: concurrency }, worker));
console.log(JSON.stringify(result));
