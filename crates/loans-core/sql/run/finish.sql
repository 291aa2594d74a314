-- The last statement of a run's transaction: marks the run succeeded with its snapshot time,
-- later than every earlier snapshot's even if the clock went back (so created_at grows with id),
-- records what it changed and the newest load it saw, and applies retention.
--
-- A run that changed a figure, or was the first to include a load, is `changed`: retention keeps
-- it, and so its snapshot, for as long as the data. The others (changed nothing) and the failed
-- runs are deleted once they are older than the oldest run kept whole: the $3-th newest
-- successful one (this run counted), or the oldest successful one made within $4 of now; with
-- neither, nothing is deleted. A deleted run's snapshot was its predecessor's, so the snapshot at
-- any time stays answerable, and no version is ever deleted: each was written by a changing run.
-- Each part reads a few rows through an index, whatever the number of runs kept (with $4; $3
-- reads the $3 newest).
-- $1 int8: this run's id
-- $2 int4: the versions it added
-- $3 int8: how many snapshots to keep whole, or NULL
-- $4 text: the period to keep whole, as an interval's text ('2592000 seconds'), or NULL
-- $5 int4: the versions it ended
-- Returns one row: the oldest run kept whole (int8, NULL when all are kept), the runs deleted
-- (int8), and the runs marked succeeded (int8, 1).
WITH previous AS (
    SELECT created_at, load_id
      FROM rollup_runs
     WHERE status = 'succeeded' AND created_at IS NOT NULL AND id <> $1
     ORDER BY id DESC
     LIMIT 1
),
stamp AS (
    SELECT greatest(now(), (SELECT created_at + interval '1 microsecond' FROM previous))
               AS created_at,
           (SELECT max(id) FROM loan_loads) AS load_id
),
oldest AS (
    SELECT CASE
             WHEN $3::int8 IS NOT NULL THEN
                 (SELECT min(id)
                    FROM (SELECT id
                            FROM rollup_runs
                           WHERE (status = 'succeeded' AND created_at IS NOT NULL) OR id = $1
                           ORDER BY id DESC
                           LIMIT $3) AS newest)
             WHEN $4::text IS NOT NULL THEN
                 -- created_at grows with id, so the first run by time within the period is the
                 -- oldest by id. A period longer than any time since 4714 BC keeps all: the
                 -- cut-off is then the earliest time there is, and no subtraction overflows.
                 -- +infinity is within any period, -infinity within none.
                 coalesce((SELECT id
                             FROM rollup_runs
                            WHERE status = 'succeeded'
                              AND created_at >= CASE WHEN $4::interval < interval '6000 years'
                                                     THEN now() - $4::interval
                                                     ELSE '4714-11-24 00:00:00+00 BC'::timestamptz
                                                END
                            ORDER BY created_at, id
                            LIMIT 1), $1)
           END AS id
),
dropped_runs AS (
    DELETE FROM rollup_runs
     WHERE id < (SELECT id FROM oldest) AND changed IS NOT TRUE
 RETURNING 1
),
finished AS (
    UPDATE rollup_runs
       SET status = 'succeeded',
           finished_at = clock_timestamp(),
           created_at = (SELECT created_at FROM stamp),
           rows_written = $2,
           rows_ended = $5,
           load_id = (SELECT load_id FROM stamp),
           changed = $2 > 0 OR $5 > 0
                     OR (SELECT load_id FROM stamp)
                        IS DISTINCT FROM (SELECT load_id FROM previous)
     WHERE id = $1
 RETURNING id
)
SELECT (SELECT id FROM oldest),
       (SELECT count(*) FROM dropped_runs),
       (SELECT count(*) FROM finished)
