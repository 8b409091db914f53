-- Test helpers: talk to the mock upstream's control API with curl (COPY FROM PROGRAM), and
-- report an error's SQLSTATE where the test is about it.
\set VERBOSITY default
CREATE SCHEMA mock;

CREATE FUNCTION mock.sh_quote(s text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT '''' || replace(s, '''', '''"''"''') || '''' $$;

-- One HTTP call to the mock; its single-line JSON answer as jsonb.
CREATE FUNCTION mock.http(method text, path text, body jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cmd text := 'curl -sS -X ' || method || ' '
                || mock.sh_quote(current_setting('pgi_test.mock') || path);
    answer text;
BEGIN
    IF body IS NOT NULL THEN
        cmd := cmd || ' -H ''content-type: application/json'' --data-binary '
               || mock.sh_quote(body::text);
    END IF;
    IF to_regclass('pg_temp.mock_output') IS NULL THEN
        CREATE TEMP TABLE mock_output (line text);
    END IF;
    TRUNCATE mock_output;
    -- CSV with quote and delimiter bytes that JSON never contains: each line arrives verbatim.
    EXECUTE format('COPY mock_output FROM PROGRAM %L WITH (FORMAT csv, QUOTE %L, DELIMITER %L)',
                   cmd, E'\x01', E'\x02');
    SELECT string_agg(line, E'\n') INTO answer FROM mock_output;
    RETURN answer::jsonb;
END
$$;

CREATE FUNCTION mock.reset() RETURNS void LANGUAGE sql
AS $$ SELECT mock.http('POST', '/_mock/reset'); $$;

-- Base URLs that select a mock scenario by label (see test/mock/README.md).
CREATE FUNCTION mock.url(label text) RETURNS text LANGUAGE sql STABLE
AS $$ SELECT current_setting('pgi_test.mock') || '/s/' || label $$;
CREATE FUNCTION mock.tls_url(label text) RETURNS text LANGUAGE sql STABLE
AS $$ SELECT current_setting('pgi_test.mock_tls') || '/s/' || label $$;

CREATE FUNCTION mock.set_scenario(label text, scenario text, arg text DEFAULT NULL)
RETURNS void LANGUAGE sql
AS $$ SELECT mock.http('POST', '/_mock/scenario',
                       jsonb_build_object('label', label, 'scenario', scenario, 'arg', arg)); $$;

-- The requests the mock received for a label, oldest first.
CREATE FUNCTION mock.requests(label text) RETURNS SETOF jsonb LANGUAGE sql
AS $$ SELECT jsonb_array_elements(mock.http('GET', '/_mock/requests?label=' || label)); $$;

-- The credential-carrying headers of a recorded request, as "name: value" lines in name order.
CREATE FUNCTION mock.auth_headers(request jsonb) RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(string_agg(k || ': ' || (request->'headers'->>k), ', ' ORDER BY k), '(none)')
      FROM jsonb_object_keys(request->'headers') k
     WHERE k IN ('authorization', 'x-api-key', 'x-goog-api-key', 'anthropic-version')
$$;

-- Runs a statement that must fail; returns "SQLSTATE: message" (and the hint). Timings in curl's
-- messages ("after 3 ms", "after 3001 milliseconds") are masked so the output is stable.
CREATE FUNCTION mock.error_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    msg text;
    hint text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    msg := regexp_replace(msg, 'after [0-9]+ (ms|milliseconds)', 'after N \1', 'g');
    RETURN state || ': ' || msg || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END
$$;

-- The last request the mock received for a label.
CREATE FUNCTION mock.last_request(label text) RETURNS jsonb LANGUAGE sql
AS $$ SELECT r FROM mock.requests(label) r ORDER BY (r->>'seq')::int DESC LIMIT 1 $$;

-- The embedding the mock answers for a text (its documented sha256-based formula).
CREATE FUNCTION mock.embedding(input text, dims int DEFAULT 8) RETURNS real[] LANGUAGE sql
AS $$
    SELECT array_agg(v::real ORDER BY n)
      FROM jsonb_array_elements_text(
               mock.http('GET', '/_mock/embedding?dims=' || dims || '&text='
                                || replace(input, ' ', '%20'))->'embedding')
           WITH ORDINALITY AS e(v, n)
$$;

SELECT extname, extversion FROM pg_extension WHERE extname = 'pg_inference';
-- The library is of the version of the SQL objects.
SELECT inference.version() = extversion AS library_matches FROM pg_extension WHERE extname = 'pg_inference';
-- Every setting with its default: the server's own values are its configuration's (the test
-- command's, or those of whatever server make installcheck runs against).
SELECT name, boot_val AS default, unit
  FROM pg_settings WHERE name LIKE 'inference.%' ORDER BY name;
