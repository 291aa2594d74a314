-- loans and a snapshot side by side, within 0001-01-01 to 9999-12-31, in date order: one pass
-- over each, whatever their size.
-- $1 int8: the run whose snapshot it is
-- Returns a row per day of either: date_of_repayment (date); loans' number_of_loans, defaults,
-- liquidations and the snapshot's (int4, NULL where the day is missing); the snapshot's ratio and
-- mean (text), rolling_window_days (int4), outcomes_known and window_outcomes_known (text) and
-- created_at (text).
SELECT date_of_repayment,
       l.number_of_loans, l.defaults, l.liquidations,
       h.number_of_loans, h.defaults, h.liquidations,
       h.liquidation_to_default_ratio::text, h.ratio_rolling_avg_7d::text,
       h.rolling_window_days, h.outcomes_known::text, h.window_outcomes_known::text,
       h.created_at::text
  FROM (SELECT * FROM loans
         WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS l
  FULL JOIN (SELECT * FROM default_liquidation_rolling_avg_hist
              WHERE run_id = $1
                AND date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS h
            USING (date_of_repayment)
 ORDER BY date_of_repayment
