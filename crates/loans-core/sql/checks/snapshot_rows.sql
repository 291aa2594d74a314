-- A snapshot's rows within 0001-01-01 to 9999-12-31, in date order, to recompute from the counts
-- they hold.
-- $1 int8: the run whose snapshot it is
-- Returns a row per day: date_of_repayment (date), number_of_loans, defaults, liquidations
-- (int4), the ratio and the mean (text, NULL when NULL), rolling_window_days (int4),
-- outcomes_known and window_outcomes_known (text, NULL when NULL), created_at (text).
SELECT date_of_repayment, number_of_loans, defaults, liquidations,
       liquidation_to_default_ratio::text, ratio_rolling_avg_7d::text,
       rolling_window_days, outcomes_known::text, window_outcomes_known::text, created_at::text
  FROM default_liquidation_rolling_avg_hist
 WHERE run_id = $1 AND date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'
 ORDER BY date_of_repayment
