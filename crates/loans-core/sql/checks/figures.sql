-- The figures for monitors (loans-verify --format json and prometheus).
-- Takes nothing.
-- Returns one row: seconds since the newest successful run finished (float8); the latest
-- finished run's duration in seconds (float8) and rows written (int8); failed runs in the last
-- hour (int8); rows of loans (int8); the newest load's as-of time (int8, Unix seconds) and its
-- age in seconds (float8); the newest load's days of final_changed, count_lowered and
-- day_missing (int8). Each is NULL when there is nothing to measure.
SELECT (SELECT extract(epoch FROM now() - finished_at)::float8
          FROM rollup_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1),
       latest.duration, latest.rows_written,
       (SELECT count(*) FROM rollup_runs
         WHERE status = 'failed' AND started_at > now() - interval '1 hour'),
       (SELECT count(*) FROM loans),
       extract(epoch FROM newest.as_of)::int8,
       extract(epoch FROM now())::float8 - extract(epoch FROM newest.as_of)::float8,
       load.final_changed, load.count_lowered, load.day_missing
  FROM (SELECT) AS one
  LEFT JOIN LATERAL (SELECT extract(epoch FROM finished_at - started_at)::float8 AS duration,
                            rows_written::int8
                       FROM rollup_runs WHERE status <> 'running'
                      ORDER BY id DESC LIMIT 1) AS latest ON true
  LEFT JOIN LATERAL (SELECT max(as_of) AS as_of FROM loan_loads) AS newest ON true
  LEFT JOIN LATERAL (SELECT final_changed::int8, count_lowered::int8, day_missing::int8
                       FROM loan_loads ORDER BY id DESC LIMIT 1) AS load ON true
