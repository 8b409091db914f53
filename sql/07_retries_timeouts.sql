-- Outbound HTTP behaviour: retries, upstream errors, cancellation, size cap.
SELECT mock.reset();
SELECT s.name
  FROM (VALUES ('flaky-svc', 'flaky:2'), ('broken-svc', 'server_error'),
               ('limited-svc', 'rate_limited:1'), ('hang-svc', 'hang')) v(n, label),
       LATERAL inference.register_external_service(n, 'gpt-4o-mini', mock.url(label),
                                                   api_key => 'sk-test-openai', validate => false) s;
SELECT name FROM inference.register_external_service('wrong-key-svc', 'gpt-4o-mini', mock.url('wrongkey'),
                                                     api_key => 'sk-wrong', validate => false);

-- A flaky upstream (two 503s, then fine) succeeds after two retries.
SELECT inference.chat('flaky-svc', 'third time lucky');
SELECT r->>'status' AS status FROM mock.requests('flaky:2') r ORDER BY (r->>'seq')::int;

-- An upstream 500's own message reaches the SQL error (after the retries).
SELECT inference.chat('broken-svc', 'hi');
SELECT count(*) AS attempts FROM mock.requests('server_error');

-- A 401 is never retried.
SELECT mock.error_of($$SELECT inference.chat('wrong-key-svc', 'hi')$$);
SELECT count(*) AS attempts FROM mock.requests('wrongkey');

-- A 429 with retry-after: 1 waits about a second before the retry.
SET inference.max_retries = 1;
SELECT mock.error_of($$SELECT inference.chat('limited-svc', 'hi')$$);
SELECT count(*) AS attempts,
       (max((r->>'time_ms')::bigint) - min((r->>'time_ms')::bigint)) BETWEEN 900 AND 2500
           AS waited_about_a_second
  FROM mock.requests('rate_limited:1') r;
RESET inference.max_retries;

-- statement_timeout aborts an in-flight transfer with PostgreSQL's own error ...
SET statement_timeout = '500ms';
SELECT inference.chat('hang-svc', 'hello?');
RESET statement_timeout;
-- ... and the next call in the same session works.
SELECT inference.chat('flaky-svc', 'still here');

-- inference.request_timeout bounds one request.
SET inference.request_timeout = '300ms';
SET inference.max_retries = 0;
SELECT mock.error_of($$SELECT inference.chat('hang-svc', 'hello?')$$);
RESET inference.request_timeout;

-- A service's own request_timeout takes the place of inference.request_timeout for its calls.
SELECT name FROM inference.update_external_service('hang-svc', request_timeout => '300ms');
SELECT mock.error_of($$SELECT inference.chat('hang-svc', 'hello?')$$);
SELECT request_timeout FROM inference.services WHERE name = 'hang-svc';
SELECT mock.error_of($$SELECT inference.update_external_service('hang-svc', request_timeout => '-1 second')$$);
SELECT mock.error_of($$SELECT inference.register_external_service('x-svc', 'gpt-4o-mini', mock.url('x'), request_timeout => '2 days')$$);
-- '0' puts it back on inference.request_timeout.
SELECT name FROM inference.update_external_service('hang-svc', request_timeout => '0');
SELECT request_timeout IS NULL AS default_timeout FROM inference.services WHERE name = 'hang-svc';
RESET inference.max_retries;

-- Responses larger than inference.max_response_size are refused.
SET inference.max_response_size = '1kB';
SELECT count(*) FROM inference.encode_text_batch('oa-embed', ARRAY(SELECT 'x' || i FROM generate_series(1, 50) i));
RESET inference.max_response_size;

SELECT inference.deregister_external_service(n)
  FROM unnest(ARRAY['flaky-svc', 'broken-svc', 'limited-svc', 'hang-svc', 'wrong-key-svc']) n;
