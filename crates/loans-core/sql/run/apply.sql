-- Recomputes days with the definition and stores the differences: the current versions in the
-- range that the recomputation no longer gives (other figures, or a day gone from loans) end at
-- this run; the recomputed rows that are not current already become versions from this run.
-- It takes the change log (the rows this transaction's snapshot sees; later ones stay for the
-- next run) and writes, for each day whose figures changed, the cause (rollup_revisions): the
-- latest logged statement that changed the day's own counts when they changed ('load' with its
-- load_id, or 'hand edit'), else the latest that changed a day of its window d-7 .. d-1 ('load
-- in window', 'hand edit in window', naming the latest day of the window it, or its load,
-- changed), else $4.
-- The definition file (sql/rollup/, the one rollup.rs names) goes in verbatim at the line
-- `-- the definition`; `loans-rollup --dry-run` prints the statement whole.
-- $1 date: the first day to recompute ('-infinity' for all)
-- $2 date: the last day to recompute ('infinity' for all)
-- $3 int8: this run's id
-- $4 text: the cause of a change nothing logged explains ('new definition' or 'unlogged change')
-- Returns one row: the versions added (int8) and ended (int8).
WITH computed AS (
-- the definition
),
current AS (
    SELECT *
      FROM loans_internal.rollup_versions
     WHERE valid_to IS NULL AND date_of_repayment BETWEEN $1::date AND $2::date
),
taken AS (
    DELETE FROM loans_internal.loans_changes
 RETURNING seq, load_id,
           coalesce(days, datemultirange(loans_internal.day_range(first_day, last_day))) AS days
),
ended AS (
    UPDATE loans_internal.rollup_versions AS v
       SET valid_to = $3
      FROM current AS c
     WHERE v.date_of_repayment = c.date_of_repayment
       AND v.valid_from = c.valid_from
       AND NOT EXISTS (
           SELECT 1
             FROM computed AS n
            WHERE n.date_of_repayment = c.date_of_repayment
              AND (n.number_of_loans, n.defaults, n.liquidations, n.liquidation_to_default_ratio,
                   n.ratio_rolling_avg_7d, n.rolling_window_days, n.outcomes_known,
                   n.window_outcomes_known)
                  IS NOT DISTINCT FROM
                  (c.number_of_loans, c.defaults, c.liquidations, c.liquidation_to_default_ratio,
                   c.ratio_rolling_avg_7d, c.rolling_window_days, c.outcomes_known,
                   c.window_outcomes_known))
 RETURNING v.date_of_repayment, v.number_of_loans, v.defaults, v.liquidations
),
added AS (
    INSERT INTO loans_internal.rollup_versions
           (date_of_repayment, valid_from, number_of_loans, defaults, liquidations,
            liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days,
            outcomes_known, window_outcomes_known)
    SELECT n.date_of_repayment, $3, n.number_of_loans, n.defaults, n.liquidations,
           n.liquidation_to_default_ratio, n.ratio_rolling_avg_7d, n.rolling_window_days,
           n.outcomes_known, n.window_outcomes_known
      FROM computed AS n
     WHERE NOT EXISTS (
           SELECT 1
             FROM current AS c
            WHERE c.date_of_repayment = n.date_of_repayment
              AND (n.number_of_loans, n.defaults, n.liquidations, n.liquidation_to_default_ratio,
                   n.ratio_rolling_avg_7d, n.rolling_window_days, n.outcomes_known,
                   n.window_outcomes_known)
                  IS NOT DISTINCT FROM
                  (c.number_of_loans, c.defaults, c.liquidations, c.liquidation_to_default_ratio,
                   c.ratio_rolling_avg_7d, c.rolling_window_days, c.outcomes_known,
                   c.window_outcomes_known))
 RETURNING date_of_repayment, number_of_loans, defaults, liquidations
),
-- A day is revised by its own counts when they changed, it is new, or it is gone.
revised AS (
    SELECT date_of_repayment,
           (a.number_of_loans, a.defaults, a.liquidations)
               IS DISTINCT FROM (e.number_of_loans, e.defaults, e.liquidations) AS own
      FROM added AS a
      FULL JOIN ended AS e USING (date_of_repayment)
),
causes AS (
    INSERT INTO loans_internal.rollup_revisions (run_id, date_of_repayment, cause, load_id, cause_day)
    SELECT $3, r.date_of_repayment,
           CASE WHEN mine.seq IS NOT NULL AND mine.load_id IS NOT NULL THEN 'load'
                WHEN mine.seq IS NOT NULL THEN 'hand edit'
                WHEN near.seq IS NOT NULL AND near.load_id IS NOT NULL THEN 'load in window'
                WHEN near.seq IS NOT NULL THEN 'hand edit in window'
                ELSE $4 END,
           coalesce(mine.load_id, near.load_id),
           CASE WHEN mine.seq IS NOT NULL THEN r.date_of_repayment ELSE near.cause_day END
      FROM revised AS r
      LEFT JOIN LATERAL (
           SELECT t.seq, t.load_id
             FROM taken AS t
            WHERE r.own AND t.days @> r.date_of_repayment
            ORDER BY t.seq DESC
            LIMIT 1) AS mine ON true
      LEFT JOIN LATERAL (
           SELECT t.seq, t.load_id,
                  -- the latest day of the window the statement changed, or its load did (a load
                  -- may log two statements: its inserts and its updates)
                  (SELECT max(upper(o.days * datemultirange(daterange(r.date_of_repayment - 7,
                                                                      r.date_of_repayment))) - 1)
                     FROM taken AS o
                    WHERE (o.seq = t.seq OR o.load_id = t.load_id)
                      AND o.days && daterange(r.date_of_repayment - 7, r.date_of_repayment))
                      AS cause_day
             FROM taken AS t
            WHERE NOT r.own
              AND t.days && daterange(r.date_of_repayment - 7, r.date_of_repayment)
            ORDER BY t.seq DESC
            LIMIT 1) AS near ON true
 RETURNING 1
)
-- Every part runs to completion whether or not this reads it (causes, taken).
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM ended)
