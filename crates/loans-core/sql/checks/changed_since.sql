-- The days whose counts differ between loans now and a snapshot (days added and removed
-- included), and those of them that no range in loans_changes covers.
-- $1 int8: the run whose snapshot it is
-- Returns one row: the days that differ (int8), those not covered (int8), and the first of
-- those (text, NULL if none).
SELECT count(*), count(*) FILTER (WHERE NOT covered), (min(date_of_repayment) FILTER (WHERE NOT covered))::text
  FROM (SELECT date_of_repayment,
               EXISTS (SELECT 1 FROM loans_internal.loans_changes AS c
                        WHERE date_of_repayment BETWEEN c.first_day AND c.last_day) AS covered
          FROM loans AS l
          FULL JOIN (SELECT * FROM default_liquidation_rolling_avg_hist WHERE run_id = $1) AS h
                    USING (date_of_repayment)
         WHERE (l.number_of_loans, l.defaults, l.liquidations)
               IS DISTINCT FROM (h.number_of_loans, h.defaults, h.liquidations)) AS d
