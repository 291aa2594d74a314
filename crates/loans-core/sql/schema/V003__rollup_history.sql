-- V003: the rollup's history as changes rather than copies, and a log of what changed in loans.
--
-- Until V002 every run wrote a full snapshot (days rows a minute). From here on:
--   - rollup_versions holds one row per day and version of its figures, valid from the run that
--     wrote it until the run that replaced or removed it (valid_to, NULL while current);
--   - rollup_runs.created_at is each successful run's snapshot time;
--   - default_liquidation_rolling_avg_hist becomes a view with the same name and columns: run X's
--     snapshot is the versions valid at X, for every run kept;
--   - loans_changes receives, from statement-level triggers on loans, the range of days each
--     statement changed (the loader, or anyone in psql or Adminer), so a run knows what to
--     recompute without reading loans.
-- The snapshots already kept survive: they are folded into versions below.
--
-- Never edit after it has shipped; add a V004 instead.

ALTER TABLE rollup_runs ADD COLUMN created_at timestamptz;
COMMENT ON COLUMN rollup_runs.created_at IS
    'The snapshot time of a successful run: the created_at of its rows in default_liquidation_rolling_avg_hist.';
COMMENT ON COLUMN rollup_runs.rows_written IS
    'Rows of the rollup the run changed (new versions); 0 when nothing had changed.';
COMMENT ON COLUMN rollup_runs.source_fingerprint IS
    'Runs before V003: SHA-256 of the loans rows the run read. Later runs leave it NULL.';
-- Retention finds the oldest snapshot to keep by time.
CREATE INDEX rollup_runs_created_at_idx ON rollup_runs (created_at) WHERE status = 'succeeded';

CREATE TABLE rollup_versions (
    date_of_repayment            date    NOT NULL,
    valid_from                   bigint  NOT NULL,
    valid_to                     bigint,
    number_of_loans              integer NOT NULL,
    defaults                     integer NOT NULL,
    liquidations                 integer NOT NULL,
    liquidation_to_default_ratio numeric,
    ratio_rolling_avg_7d         numeric,
    rolling_window_days          integer NOT NULL,
    PRIMARY KEY (date_of_repayment, valid_from),
    CONSTRAINT rollup_versions_valid_range CHECK (valid_to IS NULL OR valid_to > valid_from)
);
-- The current figures (the newest snapshot) and what retention deletes.
CREATE INDEX rollup_versions_current_idx ON rollup_versions (date_of_repayment) WHERE valid_to IS NULL;
CREATE INDEX rollup_versions_valid_to_idx ON rollup_versions (valid_to) WHERE valid_to IS NOT NULL;

COMMENT ON TABLE rollup_versions IS
    'The rollup''s history as changes: one row per day and version, valid for the runs valid_from <= run < valid_to (valid_to NULL: still current). Read it through default_liquidation_rolling_avg_hist.';
COMMENT ON COLUMN rollup_versions.valid_from IS 'The run that wrote this version (rollup_runs.id).';
COMMENT ON COLUMN rollup_versions.valid_to IS
    'The run that replaced or removed it; NULL while it is current.';

-- The snapshots kept so far become versions: for each day, consecutive snapshots with the same
-- figures are one version; a day missing from a snapshot, or with other figures, ends it.
WITH runs AS (
    SELECT run_id, min(created_at) AS created_at, row_number() OVER (ORDER BY run_id) AS k
      FROM default_liquidation_rolling_avg_hist
     GROUP BY run_id
),
stamped AS (
    UPDATE rollup_runs AS r SET created_at = runs.created_at FROM runs WHERE r.id = runs.run_id
),
marked AS (
    SELECT h.*, runs.k,
           CASE WHEN lag(runs.k) OVER w = runs.k - 1
                 AND (lag(h.number_of_loans) OVER w, lag(h.defaults) OVER w, lag(h.liquidations) OVER w,
                      lag(h.liquidation_to_default_ratio) OVER w, lag(h.ratio_rolling_avg_7d) OVER w,
                      lag(h.rolling_window_days) OVER w)
                     IS NOT DISTINCT FROM
                     (h.number_of_loans, h.defaults, h.liquidations, h.liquidation_to_default_ratio,
                      h.ratio_rolling_avg_7d, h.rolling_window_days)
                THEN 0 ELSE 1 END AS starts
      FROM default_liquidation_rolling_avg_hist AS h
      JOIN runs USING (run_id)
    WINDOW w AS (PARTITION BY h.date_of_repayment ORDER BY runs.k)
),
grouped AS (
    SELECT marked.*,
           sum(starts) OVER (PARTITION BY date_of_repayment ORDER BY k) AS version
      FROM marked
),
versions AS (
    SELECT date_of_repayment, min(run_id) AS valid_from, max(k) AS last_k,
           min(number_of_loans) AS number_of_loans, min(defaults) AS defaults,
           min(liquidations) AS liquidations,
           min(liquidation_to_default_ratio) AS liquidation_to_default_ratio,
           min(ratio_rolling_avg_7d) AS ratio_rolling_avg_7d,
           min(rolling_window_days) AS rolling_window_days
      FROM grouped
     GROUP BY date_of_repayment, version
)
INSERT INTO rollup_versions
SELECT v.date_of_repayment, v.valid_from, next.run_id, v.number_of_loans, v.defaults,
       v.liquidations, v.liquidation_to_default_ratio, v.ratio_rolling_avg_7d,
       v.rolling_window_days
  FROM versions AS v
  LEFT JOIN runs AS next ON next.k = v.last_k + 1;

DROP VIEW default_liquidation_rolling_avg;
DROP TABLE default_liquidation_rolling_avg_hist;

CREATE VIEW default_liquidation_rolling_avg_hist AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days
  FROM rollup_runs AS r
  JOIN rollup_versions AS v
    ON v.valid_from <= r.id AND (v.valid_to IS NULL OR v.valid_to > r.id)
 WHERE r.status = 'succeeded' AND r.created_at IS NOT NULL;

COMMENT ON VIEW default_liquidation_rolling_avg_hist IS
    'Every snapshot kept, one per successful run (loans-rollup --keep): WHERE run_id = X (or created_at = T) gives run X''s whole snapshot.';

CREATE VIEW default_liquidation_rolling_avg AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days
  FROM rollup_versions AS v,
       (SELECT id, created_at FROM rollup_runs
         WHERE status = 'succeeded' AND created_at IS NOT NULL
         ORDER BY id DESC LIMIT 1) AS r
 WHERE v.valid_to IS NULL;

COMMENT ON VIEW default_liquidation_rolling_avg IS
    'The newest successful snapshot of the rollup: what to query for current figures.';

-- What changed in loans, for the next run: one row per statement that changed it.
CREATE TABLE loans_changes (
    first_day date        NOT NULL,
    last_day  date        NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE loans_changes IS
    'Days of loans changed since the last successful rollup run, as one range per statement (TRUNCATE: all days). Each run takes the rows it sees.';

CREATE FUNCTION loans_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment)
          FROM (SELECT date_of_repayment FROM old_rows
                UNION ALL
                SELECT date_of_repayment FROM new_rows) AS changed
        HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM old_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO loans_changes (first_day, last_day) VALUES ('-infinity', 'infinity');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER loans_changes_insert AFTER INSERT ON loans
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_log_changes();
CREATE TRIGGER loans_changes_update AFTER UPDATE ON loans
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_log_changes();
CREATE TRIGGER loans_changes_delete AFTER DELETE ON loans
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_log_changes();
CREATE TRIGGER loans_changes_truncate AFTER TRUNCATE ON loans
    FOR EACH STATEMENT EXECUTE FUNCTION loans_log_changes();
