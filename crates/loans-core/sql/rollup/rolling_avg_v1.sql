-- Rollup v1: for each day of `loans`, the liquidation-to-default ratio and the mean of that ratio
-- over the seven calendar days before the day (d-7 .. d-1; the day itself is not in its window).
--
--   liquidation_to_default_ratio  liquidations / defaults as numeric; NULL when defaults = 0
--   ratio_rolling_avg_7d          mean of the non-NULL ratios in the window; NULL if there are none
--   rolling_window_days           how many ratios that mean is over, 0 to 7
--
-- numeric division keeps at least 16 significant digits; trim_scale drops the trailing zeros
-- (27 / 5 is stored as 5.4, not 5.4000000000000000), which changes no value.
--
-- The window counts calendar days, not rows: a day missing from `loans` shrinks the window; it
-- does not reach further back. loans-rollup wraps this query in the INSERT of a new snapshot and
-- records this file's version and the start of its SHA-256 with every run, so changing the
-- definition means changing this file, and the runs before and after the change can be told apart.

SELECT l.date_of_repayment,
       l.number_of_loans,
       l.defaults,
       l.liquidations,
       trim_scale(l.liquidation_to_default_ratio)                AS liquidation_to_default_ratio,
       trim_scale(avg(l.liquidation_to_default_ratio) OVER last_7_days) AS ratio_rolling_avg_7d,
       count(l.liquidation_to_default_ratio) OVER last_7_days AS rolling_window_days
  FROM (SELECT date_of_repayment,
               number_of_loans,
               defaults,
               liquidations,
               liquidations::numeric / NULLIF(defaults, 0) AS liquidation_to_default_ratio
          FROM loans) AS l
WINDOW last_7_days AS (ORDER BY l.date_of_repayment
                       RANGE BETWEEN INTERVAL '7 days' PRECEDING AND INTERVAL '1 day' PRECEDING)
