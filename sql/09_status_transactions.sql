-- Statuses in shared memory follow the transaction that wrote them: a register, re-register,
-- key update or deregister that rolls back (wholly or to a savepoint) leaves the status it found.
SELECT mock.reset();
CREATE FUNCTION pg_temp.st(n text) RETURNS text LANGUAGE sql
AS $$ SELECT status || coalesce(': ' || status_message, '') FROM inference.list_models() WHERE name = n $$;

SELECT name, status FROM inference.register_external_service(
    'tx-svc', 'gpt-4o-mini', mock.url('openai'), api_key => 'sk-test-tx', validate => false);
SELECT pg_temp.st('tx-svc');

-- A rolled-back deregister: the status is still there.
BEGIN;
SELECT inference.deregister_external_service('tx-svc');
ROLLBACK;
SELECT pg_temp.st('tx-svc');

-- A rolled-back deregister and re-register (validated: Ready inside the transaction).
BEGIN;
SELECT inference.deregister_external_service('tx-svc');
SELECT name, status FROM inference.register_external_service(
    'tx-svc', 'gpt-4o-mini', mock.url('openai'), api_key => 'sk-test-tx');
SELECT pg_temp.st('tx-svc');
ROLLBACK;
SELECT pg_temp.st('tx-svc');

-- A rolled-back key update.
BEGIN;
SELECT name, status FROM inference.update_external_service('tx-svc', api_key => 'sk-test-tx2');
ROLLBACK;
SELECT pg_temp.st('tx-svc');

-- A rolled-back register of a new service leaves nothing behind: registered later without a
-- check it is Unknown, not the Ready of the rolled-back attempt.
BEGIN;
SELECT name, status FROM inference.register_external_service(
    'tx-new', 'gpt-4o-mini', mock.url('openai'), api_key => 'sk-test-tx');
ROLLBACK;
SELECT count(*) FROM inference.list_models() WHERE name = 'tx-new';
SELECT inference_internal.live_status('tx-new');

-- Savepoints: ROLLBACK TO drops the aborted level's writes, RELEASE keeps them.
BEGIN;
SAVEPOINT a;
SELECT inference.deregister_external_service('tx-svc');
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT pg_temp.st('tx-svc');

BEGIN;
SAVEPOINT a;
SAVEPOINT b;
SELECT name, status FROM inference.update_external_service('tx-svc', api_key => 'sk-test-tx2');
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
SELECT pg_temp.st('tx-svc');
COMMIT;
SELECT pg_temp.st('tx-svc');

BEGIN;
SAVEPOINT a;
SELECT name, status FROM inference.update_external_service('tx-svc', api_key => 'sk-test-tx2');
RELEASE SAVEPOINT a;
SAVEPOINT c;
SELECT inference.deregister_external_service('tx-svc');
ROLLBACK TO SAVEPOINT c;
COMMIT;
SELECT pg_temp.st('tx-svc');

-- A committed deregister forgets the status.
SELECT inference.deregister_external_service('tx-svc');
SELECT inference_internal.live_status('tx-svc');
