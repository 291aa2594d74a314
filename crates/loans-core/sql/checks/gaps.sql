-- The gaps check: the calendar days missing between the days of loans (within 0001-01-01 to
-- 9999-12-31), as ranges.
-- Takes nothing.
-- Returns a row per gap, in order: its first and last missing day (text) and its length (int4).
SELECT (prev + 1)::text, (date_of_repayment - 1)::text, date_of_repayment - prev - 1
  FROM (SELECT date_of_repayment,
               lag(date_of_repayment) OVER (ORDER BY date_of_repayment) AS prev
          FROM loans
         WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31') AS s
 WHERE date_of_repayment - prev > 1
 ORDER BY date_of_repayment
