-- The run lock: the one row of rollup_lock, locked without waiting, as the first statement of
-- the run's repeatable-read transaction, which holds it to its end (register.sql took it too,
-- for its own statement). Locking the row needs UPDATE on the table, which only its owner has:
-- loans_reader can read it, not lock it.
-- Takes nothing.
-- Returns the locked row (one bool), or no row when rollup_lock is empty; fails with SQLSTATE
-- 55P03 when another session holds it.
SELECT only_row
  FROM rollup_lock
   FOR UPDATE NOWAIT
