-- Records the run before its work starts, and settles the runs that died before finishing
-- (any still `running`: the caller holds the run lock, so none is alive).
-- $1 text: the rollup version (rollup_version() in rollup.rs)
-- Returns one row: the new run's id (int8) and how many runs it marked abandoned (int8).
WITH abandoned AS (
    UPDATE rollup_runs
       SET status = 'failed',
           finished_at = now(),
           error = 'abandoned: the run ended without finishing (killed, or its connection was lost)'
     WHERE status = 'running'
 RETURNING id
),
run AS (
    INSERT INTO rollup_runs (started_at, status, rollup_version)
    VALUES (now(), 'running', $1)
 RETURNING id
)
SELECT run.id, (SELECT count(*) FROM abandoned) FROM run
