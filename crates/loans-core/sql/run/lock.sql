-- The run lock: the one row of rollup_lock, locked without waiting, in a transaction that lasts
-- the run (on a connection of its own, as the run commits its `running` row before its work).
-- Locking the row needs UPDATE on the table, which only its owner has: loans_reader can read
-- it, not lock it. The transaction may stay idle for the whole run: its idle timeout is lifted.
-- Takes nothing.
-- Returns the locked row (one set_config text), or no row when rollup_lock is empty; fails with
-- SQLSTATE 55P03 when another session holds it.
SELECT set_config('idle_in_transaction_session_timeout', '0', true)
  FROM rollup_lock
   FOR UPDATE NOWAIT
