-- Marks a run failed with its error, after its work rolled back: in a transaction of its own. A
-- run that is no longer `running` keeps what another run wrote (its 'abandoned' error).
-- $1 int8: the run's id
-- $2 text: the error, as the run's log line tells it
-- Returns nothing.
UPDATE rollup_runs
   SET status = 'failed', finished_at = clock_timestamp(), error = $2
 WHERE id = $1 AND status = 'running'
