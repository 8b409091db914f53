// Loaded with `node --import` before the Portkey gateway (test/bench/gateway_compare.sh).
//
// Portkey 1.15.2 on Node 20 answers streamed chat and embeddings with "Something went wrong": it
// appends its x-portkey-* headers to the upstream fetch() Response, whose headers the fetch
// standard makes immutable (Portkey-AI/gateway issues #1389 and #1550; the fix proposed there,
// pull request #1551, copies the response first). This does the same copy one step earlier, for
// every upstream answer, so that Portkey can be measured on all three endpoints. It costs Portkey
// one Headers copy per request.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
    const r = await upstreamFetch(...args);
    return new Response(r.body, {
        status: r.status,
        statusText: r.statusText,
        headers: new Headers(r.headers),
    });
};
