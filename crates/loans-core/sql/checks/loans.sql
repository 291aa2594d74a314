-- The loans check: the table's rows and what is wrong with them.
-- Takes nothing.
-- Returns one row: rows (int8), distinct days (int8), rows with NULLs (int8), rows with negative
-- counts (int8), rows where defaults + liquidations > number_of_loans (int8), the first and last
-- day (text), the days outside 0001-01-01 to 9999-12-31 (int8) and the first five of them (text[]).
SELECT count(*),
       count(DISTINCT date_of_repayment),
       count(*) FILTER (WHERE date_of_repayment IS NULL OR number_of_loans IS NULL
                           OR defaults IS NULL OR liquidations IS NULL),
       count(*) FILTER (WHERE number_of_loans < 0 OR defaults < 0 OR liquidations < 0),
       count(*) FILTER (WHERE defaults::bigint + liquidations > number_of_loans),
       min(date_of_repayment)::text,
       max(date_of_repayment)::text,
       count(*) FILTER (WHERE NOT date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'),
       (array_agg(date_of_repayment::text ORDER BY date_of_repayment)
           FILTER (WHERE NOT date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'))[1:5]
  FROM loans
