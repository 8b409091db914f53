-- Pipelines: what create_pipeline refuses (nothing is created), what it makes (a trigger, a
-- queue filled by the backfill, a table of chunks), what the trigger queues, and the controls.
-- The worker serves inference.database only, so here the queue is only looked at.
SELECT name FROM inference.register_external_service('pl-embed', 'text-embedding-3-small',
    mock.url('pl'), api_key => 'sk-test-openai', validate => false);
SELECT name FROM inference.register_external_service('pl-claude', 'claude-sonnet-4-5',
    mock.url('pl'), api_key => 'sk-test-anthropic', protocol => 'ANTHROPIC_V1', validate => false);
CREATE TABLE pl_docs (id int PRIMARY KEY, title text, body text, n int, emb real[], wrong int[]);
CREATE TABLE pl_nokey (body text);
INSERT INTO pl_docs (id, title, body, n) VALUES (1, 'a', 'first', 0), (2, 'b', 'second', 0);

SELECT mock.error_of($$SELECT inference.create_pipeline('Bad Name', 'pl_docs', 'body', 'pl-embed')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_nokey', 'body', 'pl-embed', destination => NULL)$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body ||', 'pl-embed', destination => 'emb')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'nope', 'pl-embed', destination => 'emb')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'n', 'pl-embed', destination => 'emb')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'pl-embed', destination => 'wrong')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'pl-embed', destination => 'missing')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'pl-claude', destination => 'emb')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'nope', destination => 'emb')$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'pl-embed', chunk_size => 10, chunk_overlap => 10)$$);
SELECT mock.error_of($$SELECT inference.create_pipeline('p', 'pl_docs', 'body', 'pl-embed', destination => 'emb', chunk_size => 10)$$);
SELECT count(*) AS no_pipeline FROM inference.pipelines;
SELECT count(*) AS no_trigger FROM pg_trigger WHERE tgname LIKE 'pgi_pipeline_%';

-- A column pipeline: the backfill queues every row.
SELECT name, source, service, state, queued, done, failed
  FROM inference.create_pipeline('p_emb', 'pl_docs', 'title || '' '' || body', 'pl-embed', destination => 'emb');
SELECT mock.error_of($$SELECT inference.create_pipeline('p_emb', 'pl_docs', 'body', 'pl-embed', destination => 'emb')$$);
SELECT row_key, deleted FROM inference.pipeline_queue WHERE pipeline = 'p_emb' ORDER BY row_key;
-- The trigger queues inserts, updates and deletes, and a new version each time.
DELETE FROM inference.pipeline_queue WHERE pipeline = 'p_emb';
INSERT INTO pl_docs (id, title, body, n) VALUES (3, 'c', 'third', 0);
UPDATE pl_docs SET n = n + 1 WHERE id = 1;
DELETE FROM pl_docs WHERE id = 2;
UPDATE pl_docs SET emb = '{1,2}' WHERE id = 3;   -- only the destination: not queued
SELECT row_key, deleted FROM inference.pipeline_queue WHERE pipeline = 'p_emb' ORDER BY row_key;
UPDATE pl_docs SET id = 30 WHERE id = 3;          -- a new key: the old one is deleted
SELECT row_key, deleted FROM inference.pipeline_queue WHERE pipeline = 'p_emb' ORDER BY row_key;

-- A table of chunks beside the source.
SELECT name, queued FROM inference.create_pipeline('p_chunks', 'pl_docs', 'body', 'pl-embed',
                                                   chunk_size => 100, chunk_overlap => 20, backfill => false);
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'pl_docs_p_chunks'::regclass AND attnum > 0 ORDER BY attnum;

-- Pause, resume, retry, drop; and a deregistration that pipelines block.
SELECT inference.pause_pipeline('p_emb');
SELECT name, state FROM inference.pipelines ORDER BY name;
SELECT inference.resume_pipeline('p_emb');
SELECT inference.retry_failed('p_emb');
SELECT mock.error_of($$SELECT inference.pause_pipeline('nope')$$);
SELECT mock.error_of($$SELECT inference.deregister_external_service('pl-embed')$$);
SELECT inference.drop_pipeline('p_chunks');
SELECT to_regclass('pl_docs_p_chunks') AS chunk_table_dropped;
-- Dropping the source drops its pipeline.
DROP TABLE pl_docs;
SELECT count(*) AS pipelines_left FROM inference.pipelines;
SELECT count(*) AS queue_left FROM inference.pipeline_queue;
SELECT inference.deregister_external_service(name) FROM inference.services WHERE name LIKE 'pl-%';
DROP TABLE pl_nokey;
