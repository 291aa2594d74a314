-- The csv check's side of loans: its rows within 0001-01-01 to 9999-12-31, in date order, to
-- walk beside the file.
-- Takes nothing.
-- Returns a row per day: date_of_repayment (date), number_of_loans, defaults, liquidations (int4).
SELECT date_of_repayment, number_of_loans, defaults, liquidations
  FROM loans
 WHERE date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'
 ORDER BY date_of_repayment
