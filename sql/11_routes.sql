-- Routes: one name for several services, with fallback and a circuit breaker per service.
SELECT mock.reset();
SET inference.max_retries = 0;
SELECT inference.register_external_service('rt-a', 'gpt-4o-mini', mock.url('rt-a'), api_key => 'sk-test-rt-a') IS NOT NULL AS registered;
SELECT inference.register_external_service('rt-b', 'meta/llama-3.1-8b-instruct', mock.url('rt-b'), api_key => 'sk-test-rt-b') IS NOT NULL AS registered;
SELECT inference.register_external_service('rt-e', 'text-embedding-3-small', mock.url('rt-e'), api_key => 'sk-test-rt-e') IS NOT NULL AS registered;

-- Creating one; weights and priorities left out are written in.
SELECT name, targets, fallback_on, cooldown, functions
  FROM inference.create_route('rt', '[{"service": "rt-a"}, {"service": "rt-b", "priority": 2}]',
                              cooldown => '2 seconds', functions => '{chat}');
SELECT name, targets FROM inference.routes ORDER BY name;

-- Bad input gets a clear error and changes nothing.
SELECT mock.error_of($$SELECT inference.create_route('rt', '[{"service": "rt-a"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt-a', '[{"service": "rt-b"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "nope"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a", "weight": 0}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a", "weight": 1.5}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a"}, {"service": "rt-a"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '{"service": "rt-a"}')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a", "wieght": 2}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('Bad Name', '[{"service": "rt-a"}]')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a"}]', fallback_on => '{404}')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a"}]', fallback_on => '{sometimes}')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', '[{"service": "rt-a"}]', cooldown => '10 ms')$$);
SELECT mock.error_of($$SELECT inference.create_route('rt2', NULL)$$);
SELECT mock.error_of($$SELECT inference.register_external_service('rt', 'm', mock.url('rt-x'), validate => false)$$);
SELECT mock.error_of($$SELECT inference.update_route('nope', cooldown => '5 seconds')$$);
SELECT mock.error_of($$SELECT inference.drop_route('nope')$$);
SELECT count(*) AS routes FROM inference.routes;
SELECT count(*) AS services FROM inference.services WHERE name = 'rt';

-- update_route changes what it is given.
SELECT name, targets, fallback_on, cooldown FROM inference.update_route('rt', fallback_on => '{503,connect,503}');
SELECT name, targets, fallback_on, cooldown FROM inference.update_route('rt', fallback_on => '{connect,timeout,429,500,502,503,504,529}');

-- A route's name works wherever a service's does; the first priority serves while it works.
SELECT inference.chat_completion('rt', '{"messages": [{"role": "user", "content": "hi"}]}')->>'model' AS served_by;
SELECT inference.chat('rt', 'hello') IS NOT NULL AS answered;

-- rt-a answers 503: every call still succeeds, from rt-b. After inference.breaker_failures (3)
-- failures in a row rt-a gets no request until the cooldown has passed...
SELECT mock.reset();
SELECT mock.set_scenario('rt-a', 'unavailable');
SELECT inference.chat_completion('rt', '{"messages": [{"role": "user", "content": "hi"}]}')->>'model' AS served_by
  FROM generate_series(1, 6);
SELECT count(*) AS rt_a_requests FROM mock.requests('rt-a') r WHERE r->>'route_path' = '/v1/chat/completions';
-- ... then exactly one request tries it (half-open); it fails, and the breaker opens again.
SELECT pg_sleep(2.2);
SELECT inference.chat_completion('rt', '{"messages": [{"role": "user", "content": "hi"}]}')->>'model' AS served_by
  FROM generate_series(1, 3);
SELECT count(*) AS rt_a_requests FROM mock.requests('rt-a') r WHERE r->>'route_path' = '/v1/chat/completions';
-- Once it works again, its probe succeeds and it serves again.
SELECT mock.set_scenario('rt-a', NULL);
SELECT pg_sleep(2.2);
SELECT inference.chat_completion('rt', '{"messages": [{"role": "user", "content": "hi"}]}')->>'model' AS served_by
  FROM generate_series(1, 2);

-- A 4xx other than 429 is the request's own fault: no fallback.
SELECT mock.set_scenario('rt-a', 'bad_key');
SELECT mock.error_of($$SELECT inference.chat('rt', 'hi')$$);
-- Every target failing: the last error, and what was tried.
SELECT mock.set_scenario('rt-a', 'unavailable');
SELECT mock.set_scenario('rt-b', 'server_error');
SELECT inference.chat('rt', 'hi');
SELECT mock.set_scenario('rt-b', NULL);

-- A health check that finds a service Failed opens its breaker: the route skips it at once.
SELECT inference.update_route('rt', cooldown => '30 seconds') IS NOT NULL AS updated;
SELECT mock.reset();
SELECT mock.set_scenario('rt-a', 'unavailable');
SELECT status FROM inference.check_service('rt-a');
SELECT inference.chat_completion('rt', '{"messages": [{"role": "user", "content": "hi"}]}')->>'model' AS served_by;
SELECT count(*) AS rt_a_requests FROM mock.requests('rt-a') r WHERE r->>'route_path' = '/v1/chat/completions';
SELECT mock.set_scenario('rt-a', NULL);

-- Embeddings through a route.
SELECT inference.create_route('rt-embed', '[{"service": "rt-e"}]') IS NOT NULL AS created;
SELECT inference.encode_text('rt-embed', 'hello') = mock.embedding('hello') AS same_vector;
SELECT count(*) AS rows FROM inference.encode_text_batch('rt-embed', ARRAY['a', 'b']);

-- An access key may name a route; dropping the route is then refused.
SELECT inference.create_access_key('rt-key', services => '{rt}') IS NOT NULL AS created;
SELECT mock.error_of($$SELECT inference.drop_route('rt')$$);
SELECT inference.revoke_access_key('rt-key');
SELECT mock.error_of($$SELECT inference.drop_route('rt')$$);
DELETE FROM inference.access_key_store WHERE name = 'rt-key';

-- Deregistering a target is refused unless forced; forced, it leaves the route's other
-- targets, and a route left with none is dropped.
SELECT mock.error_of($$SELECT inference.deregister_external_service('rt-a')$$);
SELECT inference.deregister_external_service('rt-a', force => true);
SELECT name, targets FROM inference.routes ORDER BY name;
SELECT inference.deregister_external_service('rt-e', force => true);
SELECT name FROM inference.routes ORDER BY name;

-- Users read routes; only administrators change them.
CREATE ROLE regress_rt_user LOGIN IN ROLE inference_user;
SET ROLE regress_rt_user;
SELECT name FROM inference.routes;
SELECT inference.drop_route('rt');
RESET ROLE;
DROP ROLE regress_rt_user;

SELECT inference.drop_route('rt');
SELECT inference.deregister_external_service('rt-b');
RESET inference.max_retries;
