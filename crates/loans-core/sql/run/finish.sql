-- The last statement of a run's transaction: marks the run succeeded with its snapshot time,
-- later than every earlier snapshot's even if the clock went back, and applies retention. The
-- oldest run kept is the $3-th newest successful one (this run counted), or the oldest
-- successful one made within $4 of now; with neither, all are kept. The runs before it go, and
-- so do the versions that ended at or before it, which no kept run sees.
-- $1 int8: this run's id
-- $2 int4: the rows it wrote
-- $3 int8: how many snapshots to keep, or NULL
-- $4 text: the period to keep, as an interval's text ('2592000 seconds'), or NULL
-- Returns one row: the snapshots kept (int8), the successful runs dropped (int8), the versions
-- dropped (int8), and the runs marked succeeded (int8, 1).
WITH stamp AS (
    SELECT greatest(now(), (SELECT created_at + interval '1 microsecond'
                              FROM rollup_runs
                             WHERE status = 'succeeded' AND created_at IS NOT NULL
                             ORDER BY id DESC
                             LIMIT 1)) AS created_at
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
                 coalesce((SELECT min(id)
                             FROM rollup_runs
                            WHERE status = 'succeeded'
                              -- An infinite time cannot be subtracted: +infinity is within
                              -- any period, -infinity within none.
                              AND CASE WHEN isfinite(created_at)
                                       THEN now() - created_at <= $4::interval
                                       ELSE created_at > now()
                                   END), $1)
           END AS id
),
dropped_versions AS (
    DELETE FROM loans_internal.rollup_versions
     WHERE valid_to <= (SELECT id FROM oldest)
 RETURNING 1
),
dropped_runs AS (
    DELETE FROM rollup_runs
     WHERE id < (SELECT id FROM oldest)
 RETURNING status, created_at
),
finished AS (
    UPDATE rollup_runs
       SET status = 'succeeded',
           finished_at = clock_timestamp(),
           created_at = (SELECT created_at FROM stamp),
           rows_written = $2
     WHERE id = $1
 RETURNING id
)
SELECT (SELECT count(*)
          FROM rollup_runs
         WHERE status = 'succeeded' AND created_at IS NOT NULL AND id <> $1
           AND id >= coalesce((SELECT id FROM oldest), 0)) + 1,
       (SELECT count(*) FROM dropped_runs WHERE status = 'succeeded' AND created_at IS NOT NULL),
       (SELECT count(*) FROM dropped_versions),
       (SELECT count(*) FROM finished)
