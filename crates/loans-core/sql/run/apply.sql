-- Recomputes days with the definition and stores the differences: the current versions in the
-- range that the recomputation no longer gives (other figures, or a day gone from loans) end at
-- this run; the recomputed rows that are not current already become versions from this run.
-- The definition file (sql/rollup/, the one rollup.rs names) goes in verbatim at the line
-- `-- the definition`; `loans-rollup --dry-run` prints the statement whole.
-- $1 date: the first day to recompute ('-infinity' for all)
-- $2 date: the last day to recompute ('infinity' for all)
-- $3 int8: this run's id
-- Returns one row: the versions added (int8) and ended (int8).
WITH computed AS (
-- the definition
),
current AS (
    SELECT *
      FROM loans_internal.rollup_versions
     WHERE valid_to IS NULL AND date_of_repayment BETWEEN $1::date AND $2::date
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
                   n.ratio_rolling_avg_7d, n.rolling_window_days)
                  IS NOT DISTINCT FROM
                  (c.number_of_loans, c.defaults, c.liquidations, c.liquidation_to_default_ratio,
                   c.ratio_rolling_avg_7d, c.rolling_window_days))
 RETURNING 1
),
added AS (
    INSERT INTO loans_internal.rollup_versions
           (date_of_repayment, valid_from, number_of_loans, defaults, liquidations,
            liquidation_to_default_ratio, ratio_rolling_avg_7d, rolling_window_days)
    SELECT n.date_of_repayment, $3, n.number_of_loans, n.defaults, n.liquidations,
           n.liquidation_to_default_ratio, n.ratio_rolling_avg_7d, n.rolling_window_days
      FROM computed AS n
     WHERE NOT EXISTS (
           SELECT 1
             FROM current AS c
            WHERE c.date_of_repayment = n.date_of_repayment
              AND (n.number_of_loans, n.defaults, n.liquidations, n.liquidation_to_default_ratio,
                   n.ratio_rolling_avg_7d, n.rolling_window_days)
                  IS NOT DISTINCT FROM
                  (c.number_of_loans, c.defaults, c.liquidations, c.liquidation_to_default_ratio,
                   c.ratio_rolling_avg_7d, c.rolling_window_days))
 RETURNING 1
)
SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM ended)
