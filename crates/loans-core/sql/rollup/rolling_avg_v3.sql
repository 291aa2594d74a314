-- Rollup v3: for each day of `loans` from $1 to $2 (dates; '-infinity' and 'infinity' for all),
-- the liquidation-to-default ratio, the mean of that ratio over the seven calendar days before
-- the day (d-7 .. d-1; the day itself is not in its window), and how final each of them is.
--
--   liquidation_to_default_ratio  liquidations / defaults as numeric; NULL when defaults = 0
--   ratio_rolling_avg_7d          mean of the non-NULL ratios in the window; NULL if there are none
--   rolling_window_days           how many ratios that mean is over, 0 to 7
--   outcomes_known                (defaults + liquidations) / number_of_loans; NULL when
--                                 number_of_loans = 0. 1: every loan of the day has ended, the
--                                 day is final; less: its ratio may still move
--   window_outcomes_known         sum(defaults + liquidations) / sum(number_of_loans) over the
--                                 days of the window; NULL when the window has no loans. 1: the
--                                 mean rests on final days only
--
-- numeric division keeps at least 16 significant digits; trim_scale drops the trailing zeros
-- (27 / 5 is stored as 5.4, not 5.4000000000000000), which changes no value. The sums are of
-- integers as bigint, so no sum overflows.
--
-- The window counts calendar days, not rows: a day missing from `loans` shrinks the window; it
-- does not reach further back. So the days from $1 to $2 need only the days from $1 - 7 to $2:
-- loans-rollup runs this file over all days when the definition changes, and otherwise over the
-- days a change to `loans` can reach; the same text serves both. Each run records this file's
-- version and the start of its SHA-256, so the runs before and after an edit can be told apart.

SELECT w.date_of_repayment,
       w.number_of_loans,
       w.defaults,
       w.liquidations,
       w.liquidation_to_default_ratio,
       w.ratio_rolling_avg_7d,
       w.rolling_window_days,
       w.outcomes_known,
       w.window_outcomes_known
  FROM (SELECT l.date_of_repayment,
               l.number_of_loans,
               l.defaults,
               l.liquidations,
               trim_scale(l.liquidation_to_default_ratio)                       AS liquidation_to_default_ratio,
               trim_scale(avg(l.liquidation_to_default_ratio) OVER last_7_days) AS ratio_rolling_avg_7d,
               count(l.liquidation_to_default_ratio) OVER last_7_days          AS rolling_window_days,
               trim_scale(l.outcomes::numeric / NULLIF(l.number_of_loans, 0))   AS outcomes_known,
               trim_scale(sum(l.outcomes) OVER last_7_days
                          / NULLIF(sum(l.number_of_loans) OVER last_7_days, 0)) AS window_outcomes_known
          FROM (SELECT date_of_repayment,
                       number_of_loans,
                       defaults,
                       liquidations,
                       liquidations::numeric / NULLIF(defaults, 0) AS liquidation_to_default_ratio,
                       defaults::bigint + liquidations             AS outcomes
                  FROM loans
                 WHERE date_of_repayment BETWEEN $1::date - 7 AND $2::date) AS l
        WINDOW last_7_days AS (ORDER BY l.date_of_repayment
                               RANGE BETWEEN INTERVAL '7 days' PRECEDING AND INTERVAL '1 day' PRECEDING)
       ) AS w
 WHERE w.date_of_repayment >= $1::date
