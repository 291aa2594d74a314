-- The days of loans outside 0001-01-01 to 9999-12-31, which no file holds and no recomputation
-- can place; two probes of the primary key.
-- Takes nothing.
-- Returns a row per such day, in order: the day (text).
SELECT date_of_repayment::text
  FROM loans
 WHERE date_of_repayment < '0001-01-01' OR date_of_repayment > '9999-12-31'
 ORDER BY date_of_repayment
