-- Budgets: keys and tenants take a budget and a period; bad values are refused with a hint and
-- change nothing; inference.budgets shows every budget with the ledger's spending of its period.
SELECT inference.create_access_key('bud-a', budget => 10, budget_period => 'day') IS NOT NULL AS created;
SELECT inference.create_access_key('bud-b', budget => 2.5, tenant => 'bud-team') IS NOT NULL AS created;
SELECT name, budget, budget_period FROM inference.access_keys WHERE name LIKE 'bud-%' ORDER BY name;

SELECT mock.error_of($$SELECT inference.create_access_key('bud-c', budget => 0)$$);
SELECT mock.error_of($$SELECT inference.create_access_key('bud-c', budget => -1)$$);
SELECT mock.error_of($$SELECT inference.create_access_key('bud-c', budget => 'NaN')$$);
SELECT mock.error_of($$SELECT inference.create_access_key('bud-c', budget => 'Infinity')$$);
SELECT mock.error_of($$SELECT inference.create_access_key('bud-c', budget => 1, budget_period => 'year')$$);
SELECT count(*) AS none_made FROM inference.access_keys WHERE name = 'bud-c';

-- update_access_key: NULL leaves a budget alone, clear removes it, the period changes alone.
SELECT inference.update_access_key('bud-a', budget => 20);
SELECT inference.update_access_key('bud-a', budget_period => 'week');
SELECT name, budget, budget_period FROM inference.access_keys WHERE name = 'bud-a';
SELECT mock.error_of($$SELECT inference.update_access_key('bud-a', budget_period => 'hour')$$);
SELECT mock.error_of($$SELECT inference.update_access_key('bud-a', budget => 5, clear => '{budget}')$$);
SELECT inference.update_access_key('bud-a', clear => '{budget}');
SELECT name, budget, budget_period FROM inference.access_keys WHERE name = 'bud-a';

-- A tenant's budget is shared by its keys; limits and budget NULL remove the tenant's row.
SELECT inference.set_tenant_limits('bud-team', budget => 100, budget_period => 'month');
SELECT tenant, budget, budget_period, keys FROM inference.tenant_limits WHERE tenant = 'bud-team';
SELECT mock.error_of($$SELECT inference.set_tenant_limits('bud-team', budget => -5)$$);
SELECT budget_of, name, budget, budget_period, spent,
       renews_at > period_start AS renews_later,
       renews_at - period_start <= interval '31 days' AS within_a_month
  FROM inference.budgets WHERE name LIKE 'bud-%' ORDER BY budget_of, name;

-- The ledger's cost of the period is what inference.budgets shows as spent: a row of today
-- counts, one of last year does not.
INSERT INTO inference.usage_ledger (key_name, service, day, requests, cost, currency)
VALUES ('bud-b', 'x', (now() AT TIME ZONE 'UTC')::date, 1, 0.75, 'USD'),
       ('bud-b', 'x', (now() AT TIME ZONE 'UTC')::date - 400, 1, 5, 'USD');
SELECT budget_of, name, spent FROM inference.budgets WHERE name LIKE 'bud-%' ORDER BY budget_of, name;
DELETE FROM inference.usage_ledger WHERE key_name = 'bud-b';

SELECT inference.set_tenant_limits('bud-team');
SELECT count(*) AS removed FROM inference.tenant_limits WHERE tenant = 'bud-team';
DELETE FROM inference.access_key_store WHERE name LIKE 'bud-%';
