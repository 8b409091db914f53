-- chat_batch: prompts run concurrently (at most inference.max_concurrency in flight), replies
-- come back in the prompts' order; throw_on_error => false gives each failed prompt its error.
SELECT name FROM inference.register_external_service('cb-slow', 'gpt-4o-mini', mock.url('slow:20'),
    api_key => 'sk-test-openai', validate => false);
SELECT name FROM inference.register_external_service('cb-claude', 'claude-sonnet-4-5', mock.url('cb-claude'),
    api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1', validate => false);
SELECT mock.reset();
SET inference.max_concurrency = 8;
CREATE TEMP TABLE cb AS
SELECT * FROM inference.chat_batch('cb-slow',
    ARRAY(SELECT 'prompt number ' || i FROM generate_series(1, 1000) i));
SELECT count(*) AS rows, min(id), max(id), count(error) AS errors,
       bool_and(reply = 'echo: prompt number ' || id) AS every_reply_in_order
  FROM cb;
SELECT count(*) AS upstream_requests, max((r->>'in_flight')::int) AS max_in_flight
  FROM mock.requests('slow:20') r;
RESET inference.max_concurrency;

-- Another protocol, and options applied to every prompt.
SELECT * FROM inference.chat_batch('cb-claude', ARRAY['one two three', 'four five'],
                                   '{"max_tokens": 2}');

-- Failures (without retries): the first fails the statement, or each is reported beside the
-- others' replies. The mock's flaky:2 answers its first two requests 503.
SET inference.max_retries = 0;
SELECT name FROM inference.register_external_service('cb-flaky', 'gpt-4o-mini', mock.url('cb-flaky'),
    api_key => 'sk-test-openai', validate => false);
SELECT mock.set_scenario('cb-flaky', 'flaky', '2');
SELECT mock.error_of($$SELECT * FROM inference.chat_batch('cb-flaky', ARRAY['a', 'b', 'c', 'd'])$$);
SELECT mock.set_scenario('cb-flaky', 'flaky', '2');
SELECT count(reply) AS replies, count(error) AS errors,
       bool_and(error LIKE '%503%') FILTER (WHERE error IS NOT NULL) AS errors_say_503,
       bool_and((reply IS NULL) <> (error IS NULL)) AS reply_or_error
  FROM inference.chat_batch('cb-flaky', ARRAY['a', 'b', 'c', 'd'], throw_on_error => false);
RESET inference.max_retries;

-- Bad input is refused before anything is sent.
SELECT mock.error_of($$SELECT * FROM inference.chat_batch('cb-slow', ARRAY['a', NULL])$$);
SELECT mock.error_of($$SELECT * FROM inference.chat_batch('cb-slow', NULL)$$);
SELECT mock.error_of($$SELECT * FROM inference.chat_batch('nope', ARRAY['a'])$$);
SELECT mock.error_of($$SELECT * FROM inference.chat_batch('cb-slow', ARRAY['a'], '{"temprature": 1}')$$);
SELECT count(*) AS no_rows FROM inference.chat_batch('cb-slow', '{}');

SELECT inference.deregister_external_service(name) FROM inference.services WHERE name LIKE 'cb-%';
