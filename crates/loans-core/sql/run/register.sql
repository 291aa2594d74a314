-- Takes the run lock (as lock.sql: the row of rollup_lock, without waiting) and, holding it,
-- records the run and settles the runs that died before finishing: any still `running`, as no
-- other run holds the lock. One statement, committed at once, so the `running` row shows while
-- the run works. Both the update and the insert read the lock's row, so the lock is taken before
-- either changes anything; with no row in rollup_lock the statement records nothing.
-- It does all that only if the schema is the one this binary was built for (the migrations
-- applied are exactly its own, with their checksums), which saves a run a round trip of its own
-- for that check; otherwise it takes no lock and records nothing, and the run applies the
-- migrations (or says why it cannot) and sends it again.
-- $1 text: the rollup version (rollup_version() in rollup.rs)
-- $2 text: the migrations this binary has, as `version:checksum` joined by commas in order
--          (migrations::fingerprint())
-- Returns one row: whether the schema is this binary's (bool); the new run's id (int8, NULL when
-- nothing was recorded: another schema, or rollup_lock empty) and how many runs it marked
-- abandoned (int8). Fails with SQLSTATE 55P03 when another session holds the lock, and with
-- 3F000 or 42P01 on a database without the schema (the run then asks the migrations why).
WITH schema AS MATERIALIZED (
    SELECT coalesce(string_agg(version || ':' || checksum, ',' ORDER BY version), '') = $2 AS current
      FROM loans_internal.schema_migrations
),
run_lock AS (
    SELECT only_row
      FROM loans_internal.rollup_lock
     WHERE (SELECT current FROM schema)
       FOR UPDATE NOWAIT
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
SELECT (SELECT current FROM schema), (SELECT id FROM run), (SELECT count(*) FROM abandoned)
