-- The first statement of a run's repeatable-read transaction: reads the days logged in
-- loans_changes since the last run (the rows this transaction's snapshot sees; apply.sql takes
-- those same rows, and later ones stay for the next run) and finds the previous successful run.
-- $1 int8: this run's id
-- $2 text: the rollup version
-- Returns one row: the previous successful run's id (int8, NULL if none); whether the definition
-- changed since it (bool); the days to recompute, from the first changed day to the last one
-- plus 7 (two dates, NULL when nothing was logged); the first days of loans outside 0001-01-01 to
-- 9999-12-31, which the definition cannot compute (text, NULL if none); the change log's triggers
-- not enabled ALWAYS, with why (text, NULL if none).
--
-- The loader refuses days out of range and V001's constraint keeps them out, but an older
-- database may hold them and the log may name them: the days to recompute are kept within what
-- every statement and the client can hold (a logged day past 9999-12-24 recomputes to
-- `infinity`, one before 0001-01-01 from `-infinity`), so a range that named such a day still
-- works once the day is corrected. The two index probes of loans cost nothing when it has no
-- such day. A trigger disabled, or re-enabled with a plain ENABLE TRIGGER (as pg_restore
-- --disable-triggers does), may have let changes through unlogged: then the run recomputes
-- every day.
WITH logged AS (
    SELECT min(first_day) AS first_day, max(last_day) AS last_day FROM loans_internal.loans_changes
),
previous AS (
    SELECT id, rollup_version
      FROM rollup_runs
     WHERE status = 'succeeded' AND id < $1
     ORDER BY id DESC
     LIMIT 1
)
SELECT (SELECT id FROM previous),
       (SELECT rollup_version FROM previous) IS DISTINCT FROM $2,
       CASE WHEN first_day < '0001-01-01' THEN '-infinity'
            WHEN first_day > '9999-12-31' THEN '9999-12-31'
            ELSE first_day END,
       CASE WHEN last_day > '9999-12-24' THEN 'infinity'
            WHEN last_day < '0001-01-01' THEN '0001-01-08'
            ELSE last_day + 7 END,
       (SELECT string_agg(d::text, ', ' ORDER BY d)
          FROM (SELECT date_of_repayment AS d
                  FROM loans
                 WHERE date_of_repayment < '0001-01-01' OR date_of_repayment > '9999-12-31'
                 ORDER BY 1
                 LIMIT 5) AS outside),
       (SELECT string_agg(name || CASE WHEN t.tgenabled IS NULL THEN ' (missing)'
                                       WHEN t.tgenabled = 'D' THEN ' (disabled)'
                                       WHEN t.tgenabled = 'R' THEN ' (only in replica mode)'
                                       ELSE ' (not in replica mode)' END, ', ' ORDER BY name)
          FROM unnest(ARRAY['loans_changes_insert', 'loans_changes_update',
                            'loans_changes_delete', 'loans_changes_truncate']) AS name
          LEFT JOIN pg_trigger AS t ON t.tgrelid = 'loans'::regclass AND t.tgname = name
         WHERE t.tgenabled IS DISTINCT FROM 'A')
  FROM logged
