-- The freshness check: how long ago the newest successful run finished, and how the latest
-- finished run ended.
-- Takes nothing.
-- Returns one row: the age in seconds (float8, NULL with no successful run), and the latest
-- finished run's id (int8), status (text) and error (text), NULL with no finished run.
SELECT (SELECT extract(epoch FROM now() - finished_at)::float8
          FROM rollup_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1),
       latest.id, latest.status, latest.error
  FROM (SELECT) AS one
  LEFT JOIN LATERAL (SELECT id, status, error FROM rollup_runs
                      WHERE status <> 'running' ORDER BY id DESC LIMIT 1) AS latest
         ON true
