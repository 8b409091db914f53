-- Prices: set_price adds a version, inference.prices shows the one in force, and the ledger
-- prices each request's tokens with the version it was answered under.
SELECT mock.reset();
SELECT inference.register_external_service('pr-a', 'gpt-4o-mini', mock.url('pr-a'), api_key => 'sk-test-pr-a') IS NOT NULL AS registered;
SELECT inference.register_external_service('pr-b', 'gpt-4o-mini', mock.url('pr-b'), api_key => 'sk-test-pr-b') IS NOT NULL AS registered;

SELECT service, input_per_mtok, output_per_mtok, cached_input_per_mtok, currency
  FROM inference.set_price('pr-a', 2.50, 10, cached_input_per_mtok => 1.25);
SELECT service, input_per_mtok, output_per_mtok, cached_input_per_mtok, currency
  FROM inference.set_price('pr-b', 0.15, 0.6, currency => 'EUR');
SELECT service, input_per_mtok, output_per_mtok, cached_input_per_mtok, currency
  FROM inference.prices ORDER BY service;

-- Bad input gets a clear error and changes nothing.
SELECT mock.error_of($$SELECT inference.set_price('nope', 1, 1)$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', -1, 1)$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', 1, 'NaN')$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', 1, 1, 'Infinity')$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', NULL, 1)$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', 1, 1, currency => 'usd')$$);
SELECT mock.error_of($$SELECT inference.set_price('pr-a', 1, 1, currency => 'EUR')$$);
SELECT count(*) AS versions FROM inference.price_store WHERE service LIKE 'pr-%';

-- A new price is a new version; the view shows the latest.
SELECT version > 0 AS has_version FROM inference.set_price('pr-a', 3, 12);
SELECT service, input_per_mtok, output_per_mtok, cached_input_per_mtok
  FROM inference.prices WHERE service = 'pr-a';

-- The ledger prices a batch's counts with the version each was counted under: two versions of
-- pr-a for one key and day add up into one row; cached tokens cost the cached price, or the
-- input price when there is none; counts under no version add no cost.
SELECT inference_internal.record_usage(NULL, 'regress', jsonb_build_array(
    jsonb_build_object('k', 'pr-key', 's', 'pr-a', 'd', 20000, 'r', 2, 'p', 1000, 'c', 200,
                       't', 1200, 'e', 0, 'l', 0, 'a', 0, 'h', 400,
                       'v', (SELECT min(id) FROM inference.price_store WHERE service = 'pr-a')),
    jsonb_build_object('k', 'pr-key', 's', 'pr-a', 'd', 20000, 'r', 1, 'p', 100, 'c', 10,
                       't', 110, 'e', 0, 'l', 0, 'a', 0, 'h', 50,
                       'v', (SELECT max(id) FROM inference.price_store WHERE service = 'pr-a')),
    jsonb_build_object('k', 'pr-key', 's', 'pr-b', 'd', 20000, 'r', 1, 'p', 7, 'c', 3,
                       't', 10, 'e', 0, 'l', 0, 'a', 0,
                       'v', (SELECT max(id) FROM inference.price_store WHERE service = 'pr-b')),
    jsonb_build_object('k', 'pr-key', 's', 'pr-c', 'd', 20000, 'r', 1, 'p', 7, 'c', 3,
                       't', 10, 'e', 0, 'l', 0, 'a', 0)));
-- pr-a: 600 x 2.50 + 400 x 1.25 + 200 x 10 = 4000, and 50 x 3 + 50 x 3 + 10 x 12 = 420,
-- per million: 0.00442. pr-b: 7 x 0.15 + 3 x 0.6 = 2.85 per million.
SELECT service, requests, prompt_tokens, cached_tokens, cost, currency
  FROM inference.usage WHERE key_name = 'pr-key' ORDER BY service;
-- Later counts add to the row; counts without a price leave its cost as it was.
SELECT inference_internal.record_usage(NULL, 'regress', jsonb_build_array(
    jsonb_build_object('k', 'pr-key', 's', 'pr-a', 'd', 20000, 'r', 1, 'p', 1, 'c', 1,
                       't', 2, 'e', 0, 'l', 0, 'a', 0),
    jsonb_build_object('k', 'pr-key', 's', 'pr-c', 'd', 20000, 'r', 1, 'p', 1, 'c', 1,
                       't', 2, 'e', 0, 'l', 0, 'a', 0)));
SELECT service, requests, cost FROM inference.usage WHERE key_name = 'pr-key' ORDER BY service;

-- Only administrators see and set prices.
CREATE ROLE regress_pr_user LOGIN IN ROLE inference_user;
SET ROLE regress_pr_user;
SELECT * FROM inference.prices;
SELECT inference.set_price('pr-a', 1, 1);
RESET ROLE;
DROP ROLE regress_pr_user;

-- A service registered again under the same name keeps its prices.
SELECT inference.deregister_external_service('pr-b');
SELECT count(*) AS shown FROM inference.prices WHERE service = 'pr-b';
SELECT inference.register_external_service('pr-b', 'gpt-4o-mini', mock.url('pr-b'), api_key => 'sk-test-pr-b') IS NOT NULL AS registered;
SELECT service, input_per_mtok, currency FROM inference.prices WHERE service = 'pr-b';

DELETE FROM inference.usage_ledger WHERE key_name = 'pr-key';
SELECT inference.deregister_external_service('pr-a');
SELECT inference.deregister_external_service('pr-b');
