-- The run lock, as the first statement of the run's repeatable-read transaction, which holds it
-- to its end (register.sql took it too, for its own statement), and a check that this run's row
-- is still `running`: a run that started after register.sql committed, and took the lock before
-- this statement, marked it abandoned. This run's id is the value register.sql's insert drew from
-- rollup_runs' id sequence, which currval keeps for this session. The row is read first, as this
-- transaction's snapshot shows it, and the lock taken only if it is still `running`; then the
-- row is locked too, which fails with SQLSTATE 40001 if another run changed it after the snapshot
-- (between the two, before the lock was taken). Locking the lock's row needs UPDATE on the table,
-- which only its owner has: loans_reader cannot even read it.
-- Takes nothing.
-- Returns one row: this run's status as the snapshot shows it (text, NULL if its row is gone);
-- whether the lock was taken (bool: false when the run is not `running` or rollup_lock is empty);
-- this run's status, locked (text, NULL when the lock was not taken). Fails with SQLSTATE 55P03
-- when another session holds the lock, 40001 as said.
-- currval is volatile, so compared in a WHERE it would be read row by row (a scan of every run
-- kept); read once here, it is a constant and the primary key finds the row.
WITH me AS MATERIALIZED (
    SELECT currval(pg_get_serial_sequence('rollup_runs', 'id')) AS id
),
mine AS MATERIALIZED (
    SELECT status
      FROM rollup_runs
     WHERE id = (SELECT id FROM me)
),
run_lock AS MATERIALIZED (
    SELECT only_row
      FROM loans_internal.rollup_lock
     WHERE (SELECT status FROM mine) = 'running'
       FOR UPDATE NOWAIT
),
still AS MATERIALIZED (
    SELECT status
      FROM rollup_runs
     WHERE id = (SELECT id FROM me)
       AND EXISTS (SELECT FROM run_lock)
       FOR UPDATE NOWAIT
)
SELECT (SELECT status FROM mine), EXISTS (SELECT FROM run_lock), (SELECT status FROM still)
