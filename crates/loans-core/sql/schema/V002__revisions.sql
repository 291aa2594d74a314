-- V002: figures that say how final they are, revisions that say where they came from, and a run
-- log that keeps every run that changed something.
--
--   - rollup_versions gains outcomes_known and window_outcomes_known, which the v3 definition
--     (sql/rollup/rolling_avg_v3.sql) computes; the first v3 run recomputes every day.
--   - loans_changes records the exact days each statement changed the counts of, and the load
--     behind it (NULL: a statement not made by loans-load).
--   - rollup_revisions: for each run, each day whose figures it changed and why; the view
--     default_liquidation_rolling_avg_revisions shows them with the figures before and after.
--   - rollup_runs records what a run changed and the newest load it saw, so retention can keep
--     the runs that changed something and thin only the others.

ALTER TABLE loans_internal.rollup_versions
    ADD COLUMN outcomes_known        numeric,
    ADD COLUMN window_outcomes_known numeric;

COMMENT ON COLUMN loans_internal.rollup_versions.outcomes_known IS
    '(defaults + liquidations) / number_of_loans for the day: 1 when every loan of the day has ended; NULL when number_of_loans = 0, or in a version written before the v3 definition.';
COMMENT ON COLUMN loans_internal.rollup_versions.window_outcomes_known IS
    'sum(defaults + liquidations) / sum(number_of_loans) over the days of the mean''s window (d-7 .. d-1); NULL when the window has no loans, or in a version written before v3.';

-- A snapshot's versions by the run that ended them: what a revision had before. It also serves
-- the lookups the old index on valid_to did.
DROP INDEX loans_internal.rollup_versions_valid_to_idx;
CREATE INDEX rollup_versions_ended_idx ON loans_internal.rollup_versions (valid_to, date_of_repayment)
    WHERE valid_to IS NOT NULL;

-- The change log, per statement: the days whose counts it changed, exactly (a multirange, so a
-- load of consecutive days is one range), in the order the statements ran, and the load that
-- made it. A statement that changed no count (a reload of equal counts, an edit of as_of) logs
-- nothing: the rollup reads only the counts.
ALTER TABLE loans_internal.loans_changes
    ADD COLUMN seq     bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN days    datemultirange,
    ADD COLUMN load_id bigint;

-- The days first .. last as a range, for any two dates, infinite ones and the last date there is
-- included (whose next day is out of range), so no logged day makes a statement fail: empty when
-- first > last; -infinity and infinity are inside the range's unbounded ends.
CREATE FUNCTION loans_internal.day_range(first date, last date) RETURNS daterange
    LANGUAGE sql IMMUTABLE
RETURN CASE
         WHEN first > last THEN 'empty'::pg_catalog.daterange
         ELSE pg_catalog.daterange(
                  CASE WHEN first = '-infinity' THEN NULL ELSE first END,
                  CASE WHEN last >= '5874897-12-31' THEN NULL
                       WHEN last = '-infinity' THEN '4714-11-24 BC'::date
                       ELSE last + 1 END)
       END;
REVOKE ALL ON FUNCTION loans_internal.day_range(date, date) FROM PUBLIC;

COMMENT ON TABLE loans_internal.loans_changes IS
    'Days of loans whose counts changed since the last successful rollup run, one row per statement (TRUNCATE: all days). Each run takes the rows it sees.';
COMMENT ON COLUMN loans_internal.loans_changes.seq IS 'The order the statements ran in.';
COMMENT ON COLUMN loans_internal.loans_changes.days IS
    'The days whose counts the statement changed (inserted, deleted, or updated to other counts); NULL in a row written by hand: every day from first_day to last_day.';
COMMENT ON COLUMN loans_internal.loans_changes.load_id IS
    'The loan_loads row of the loans-load that ran the statement; NULL for any other statement (a hand edit).';

-- loans-load names its load for its transaction, set_config('loans.load_id', id, true), after
-- inserting the load's loan_loads row and before changing loans (crates/loans-core/src/load.rs).
-- The setting is believed only while that load is unfinished, so a value left in a session, or
-- set by hand, does not put a hand edit down to a finished load. loan_loads is in the schema of
-- loans, which is the trigger's table's, not a fixed one: it is named from TG_TABLE_SCHEMA.
CREATE OR REPLACE FUNCTION loans_internal.loans_log_changes() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    setting text := current_setting('loans.load_id', true);
    load    bigint;
    changed datemultirange;
BEGIN
    IF setting ~ '^[0-9]{1,18}$' THEN
        EXECUTE format('SELECT id FROM %I.loan_loads WHERE id = $1 AND finished_at IS NULL',
                       TG_TABLE_SCHEMA)
           INTO load USING setting::bigint;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT range_agg(loans_internal.day_range(date_of_repayment, date_of_repayment))
          INTO changed FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        -- The rows whose counts are new, and those whose counts are gone: an update that set
        -- equal counts is in neither; one that moved a row to another day puts both days in.
        SELECT range_agg(loans_internal.day_range(d, d)) INTO changed
          FROM ((SELECT date_of_repayment AS d, number_of_loans, defaults, liquidations FROM new_rows
                 EXCEPT
                 SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM old_rows)
                UNION ALL
                (SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM old_rows
                 EXCEPT
                 SELECT date_of_repayment, number_of_loans, defaults, liquidations FROM new_rows))
               AS moved;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT range_agg(loans_internal.day_range(date_of_repayment, date_of_repayment))
          INTO changed FROM old_rows;
    ELSE
        changed := datemultirange(daterange(NULL, NULL));
    END IF;
    IF changed IS NOT NULL AND NOT isempty(changed) THEN
        INSERT INTO loans_internal.loans_changes (first_day, last_day, days, load_id)
        VALUES (coalesce(lower(changed), '-infinity'),
                CASE WHEN upper(changed) IS NULL THEN 'infinity'
                     WHEN upper(changed) = '4714-11-24 BC' THEN '-infinity'
                     ELSE upper(changed) - 1 END,
                changed, load);
    END IF;
    RETURN NULL;
END
$$;

-- Why each day of a run's revisions moved: written by the run with its versions
-- (sql/run/apply.sql), one row per day whose figures it changed.
CREATE TABLE loans_internal.rollup_revisions (
    run_id            bigint NOT NULL,
    date_of_repayment date   NOT NULL,
    cause             text   NOT NULL
        CONSTRAINT rollup_revisions_cause_known CHECK (cause IN (
            'load', 'hand edit', 'load in window', 'hand edit in window',
            'new definition', 'unlogged change')),
    load_id           bigint,
    cause_day         date,
    PRIMARY KEY (run_id, date_of_repayment)
);
COMMENT ON TABLE loans_internal.rollup_revisions IS
    'Why a run changed a day''s figures: one row per run and day. Read it through default_liquidation_rolling_avg_revisions.';

ALTER TABLE rollup_runs
    ADD COLUMN rows_ended integer,
    ADD COLUMN load_id    bigint,
    ADD COLUMN changed    boolean;
COMMENT ON COLUMN rollup_runs.rows_ended IS
    'Versions of the rollup the run replaced or removed; 0 when nothing had changed.';
COMMENT ON COLUMN rollup_runs.load_id IS
    'The newest loan_loads row the run''s snapshot includes (NULL: none, or a run from before V002).';
COMMENT ON COLUMN rollup_runs.changed IS
    'Whether the run changed a figure or was the first to include a load. Retention keeps these runs, and so their snapshots, for as long as the data; it deletes the others (and failed runs) once they are older than --keep.';
-- Runs made before this migration: those that wrote or ended versions changed something.
UPDATE rollup_runs AS r
   SET changed = r.status = 'succeeded'
                 AND (r.rows_written > 0
                      OR EXISTS (SELECT FROM loans_internal.rollup_versions AS v
                                  WHERE v.valid_to = r.id))
 WHERE r.status <> 'running';
-- What retention may delete, in id order: a sweep reads only those, not every run kept.
CREATE INDEX rollup_runs_thinnable_idx ON rollup_runs (id) WHERE changed IS NOT TRUE;

-- The views gain the two columns, at the end (CREATE OR REPLACE keeps the columns before).
CREATE OR REPLACE VIEW default_liquidation_rolling_avg_hist AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days,
       v.outcomes_known,
       v.window_outcomes_known
  FROM rollup_runs AS r
  JOIN loans_internal.rollup_versions AS v
    ON v.valid_from <= r.id AND (v.valid_to IS NULL OR v.valid_to > r.id)
 WHERE r.status = 'succeeded' AND r.created_at IS NOT NULL;

CREATE OR REPLACE VIEW default_liquidation_rolling_avg AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days,
       v.outcomes_known,
       v.window_outcomes_known
  FROM loans_internal.rollup_versions AS v,
       (SELECT id, created_at FROM rollup_runs
         WHERE status = 'succeeded' AND created_at IS NOT NULL
         ORDER BY id DESC LIMIT 1) AS r
 WHERE v.valid_to IS NULL;

COMMENT ON VIEW default_liquidation_rolling_avg_hist IS
    'Every snapshot kept, one per successful run: WHERE run_id = X gives run X''s whole snapshot. Runs that changed nothing go after --keep; the snapshot at a time T is that of the newest run with created_at <= T.';

CREATE VIEW default_liquidation_rolling_avg_revisions AS
SELECT x.run_id,
       r.created_at,
       x.date_of_repayment,
       CASE WHEN b.date_of_repayment IS NULL THEN 'new day'
            WHEN a.date_of_repayment IS NULL THEN 'day removed'
            ELSE 'revised' END AS revision,
       x.cause,
       x.load_id,
       x.cause_day,
       b.number_of_loans              AS number_of_loans_before,
       a.number_of_loans              AS number_of_loans_after,
       b.defaults                     AS defaults_before,
       a.defaults                     AS defaults_after,
       b.liquidations                 AS liquidations_before,
       a.liquidations                 AS liquidations_after,
       b.liquidation_to_default_ratio AS liquidation_to_default_ratio_before,
       a.liquidation_to_default_ratio AS liquidation_to_default_ratio_after,
       b.ratio_rolling_avg_7d         AS ratio_rolling_avg_7d_before,
       a.ratio_rolling_avg_7d         AS ratio_rolling_avg_7d_after,
       b.rolling_window_days          AS rolling_window_days_before,
       a.rolling_window_days          AS rolling_window_days_after,
       b.outcomes_known               AS outcomes_known_before,
       a.outcomes_known               AS outcomes_known_after,
       b.window_outcomes_known        AS window_outcomes_known_before,
       a.window_outcomes_known        AS window_outcomes_known_after
  FROM loans_internal.rollup_revisions AS x
  JOIN rollup_runs AS r ON r.id = x.run_id AND r.status = 'succeeded'
  LEFT JOIN loans_internal.rollup_versions AS b
         ON b.valid_to = x.run_id AND b.date_of_repayment = x.date_of_repayment
  LEFT JOIN loans_internal.rollup_versions AS a
         ON a.date_of_repayment = x.date_of_repayment AND a.valid_from = x.run_id;

COMMENT ON VIEW default_liquidation_rolling_avg_revisions IS
    'One row per run and day whose figures the run changed, with the figures before and after and the cause: load or hand edit (the day''s own counts changed; load_id names the loan_loads row, NULL for a hand edit), load in window or hand edit in window (a day of its window, cause_day, changed), new definition, or unlogged change. The cause is the latest statement that changed the counts.';

-- The reader reads the new view; the monitor the new table, as it reads rollup_versions.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        GRANT SELECT ON default_liquidation_rolling_avg_revisions TO loans_reader;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_monitor') THEN
        GRANT SELECT ON loans_internal.rollup_revisions TO loans_monitor;
    END IF;
END
$$;
