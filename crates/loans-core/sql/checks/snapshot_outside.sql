-- The days of a snapshot outside 0001-01-01 to 9999-12-31; two probes of the versions' primary
-- key.
-- $1 int8: the run whose snapshot it is
-- Returns a row per such day, in order: the day (text).
SELECT date_of_repayment::text
  FROM loans_internal.rollup_versions
 WHERE (date_of_repayment < '0001-01-01' OR date_of_repayment > '9999-12-31')
   AND valid_from <= $1 AND (valid_to IS NULL OR valid_to > $1)
 ORDER BY date_of_repayment
