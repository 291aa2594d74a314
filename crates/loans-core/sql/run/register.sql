-- Takes the run lock (as lock.sql: the row of rollup_lock, without waiting) and, holding it,
-- records the run and settles the runs that died before finishing: any still `running`, as no
-- other run holds the lock. One statement, committed at once, so the `running` row shows while
-- the run works. Both the update and the insert read the lock's row, so the lock is taken before
-- either changes anything; with no row in rollup_lock the statement records nothing.
-- $1 text: the rollup version (rollup_version() in rollup.rs)
-- Returns one row, or none when rollup_lock is empty: the new run's id (int8) and how many runs
-- it marked abandoned (int8); fails with SQLSTATE 55P03 when another session holds the lock.
WITH run_lock AS (
    SELECT only_row FROM loans_internal.rollup_lock FOR UPDATE NOWAIT
),
abandoned AS (
    UPDATE rollup_runs
       SET status = 'failed',
           finished_at = now(),
           error = 'abandoned: the run ended without finishing (killed, or its connection was lost)'
     WHERE status = 'running' AND EXISTS (SELECT FROM run_lock)
 RETURNING id
),
run AS (
    INSERT INTO rollup_runs (started_at, status, rollup_version)
    SELECT now(), 'running', $1 FROM run_lock
 RETURNING id
)
SELECT run.id, (SELECT count(*) FROM abandoned) FROM run
