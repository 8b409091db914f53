-- pg_inference 0.1.0 -> 0.2.0, first part: what the 0.2.0 script (which follows it in the
-- upgrade script the build writes, sql/pg_inference--0.1.0--0.2.0.sql) cannot do on a 0.1.0
-- catalog. It drops the objects whose form changed in ways CREATE OR REPLACE cannot follow, and
-- brings the tables 0.1.0 had to their 0.2.0 shape, keeping every row: services and their sealed
-- keys, access keys, statuses and the usage ledger. The 0.2.0 script then creates what is new
-- and replaces every function and view. docs/operations.md has what an upgrade changes.
\echo Use "ALTER EXTENSION pg_inference UPDATE" to load this file. \quit

-- The internal functions move to the schema inference_internal, without their underscore; the
-- triggers that call one go with it and come back calling the new one.
DROP TRIGGER catalog_changed ON inference.services;
DROP TRIGGER catalog_changed ON inference.service_secrets;
DROP TRIGGER catalog_changed ON inference.access_key_store;
DROP TRIGGER catalog_changed_update ON inference.access_key_store;
DROP FUNCTION inference._catalog_changed();
DROP FUNCTION inference._register_external_service(text, text, text, text, text, text[], text[],
                                                   boolean, boolean);
DROP FUNCTION inference._update_external_service(text, text, text[], text[], text, text, text,
                                                 boolean);
DROP FUNCTION inference._deregister_external_service(text);
DROP FUNCTION inference._live_status(text);
DROP FUNCTION inference._check_services(text);
DROP FUNCTION inference._gateway_base_url();
DROP FUNCTION inference._new_access_key();
DROP FUNCTION inference._check_access_key_fields(text[], int, int, bigint, int, timestamptz);

-- Functions that took new arguments: a different signature is a different function.
DROP FUNCTION inference.register_external_service(text, text, text, text, text, text[], text[],
                                                  boolean, boolean);
DROP FUNCTION inference.update_external_service(text, text, text[], text[], text, text, text,
                                                boolean);
DROP FUNCTION inference.create_access_key(text, text[], int, int, bigint, int, text, timestamptz);
DROP FUNCTION inference.update_access_key(text, text[], int, int, bigint, int, text, timestamptz,
                                          text[]);

-- A view whose new column is not its last.
DROP VIEW inference.access_keys;

-- The tables: new columns after the old ones (a fresh 0.2.0 install orders them the same way).
ALTER TABLE inference.services
    ADD COLUMN request_timeout interval,
    ADD COLUMN ca_file text,
    ADD COLUMN client_cert_file text,
    ADD COLUMN client_key_file text,
    -- A service registered under 0.1.0 is held to the restrictions on administrators who are
    -- not superusers, unless a superuser registers it again or sets its key.
    ADD COLUMN registered_by_superuser boolean NOT NULL DEFAULT false;
ALTER TABLE inference.access_key_store
    ADD COLUMN user_requests_per_minute int CHECK (user_requests_per_minute > 0),
    ADD COLUMN user_tokens_per_hour bigint CHECK (user_tokens_per_hour > 0),
    ADD COLUMN passthrough boolean NOT NULL DEFAULT true,
    ADD COLUMN budget numeric CHECK (budget > 0),
    ADD COLUMN budget_period text NOT NULL DEFAULT 'month'
        CHECK (budget_period IN ('day', 'week', 'month', 'total'));
-- The ledger counts per end user too; 0.1.0's rows are the key's own ('').
ALTER TABLE inference.usage_ledger
    ADD COLUMN end_user text NOT NULL DEFAULT '',
    ADD COLUMN cached_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cost numeric,
    ADD COLUMN currency text,
    DROP CONSTRAINT usage_ledger_pkey,
    ADD PRIMARY KEY (key_name, end_user, service, day);
