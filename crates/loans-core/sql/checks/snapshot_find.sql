-- The snapshot check's snapshot: the newest successful run, or the run asked for if it is a
-- snapshot kept.
-- $1 int8: the run asked for (loans-verify --run), or NULL for the newest
-- Returns one row, or none when there is no such snapshot: its id (int8), its created_at in UTC
-- (text), whether it is the newest (bool), and the rollup version it was made with (text).
SELECT r.id,
       coalesce(to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                r.created_at::text),
       r.id = (SELECT max(id) FROM rollup_runs
                WHERE status = 'succeeded' AND created_at IS NOT NULL),
       r.rollup_version
  FROM rollup_runs AS r
 WHERE r.status = 'succeeded' AND r.created_at IS NOT NULL
   AND ($1::int8 IS NULL OR r.id = $1)
 ORDER BY r.id DESC
 LIMIT 1
