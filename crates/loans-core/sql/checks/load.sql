-- The load check: how the newest load revised loans, and the first days of each anomaly.
-- Takes nothing.
-- Returns at most one row, none before the first load: the load's id (int8), source (text) and
-- as-of date (text, NULL without one); its days inserted, towards_final, loans_added,
-- final_changed, count_lowered and day_missing (int4; all but inserted NULL for a load made
-- before V003 counted them); the first five days of final_changed, of count_lowered and of
-- day_missing (text[]), from loan_load_anomalies' primary key.
SELECT l.id, l.source, l.as_of::text, l.inserted, l.towards_final, l.loans_added,
       l.final_changed, l.count_lowered, l.day_missing,
       ARRAY(SELECT a.date_of_repayment::text FROM loan_load_anomalies AS a
              WHERE a.load_id = l.id AND a.class = 'final_changed'
              ORDER BY a.date_of_repayment LIMIT 5),
       ARRAY(SELECT a.date_of_repayment::text FROM loan_load_anomalies AS a
              WHERE a.load_id = l.id AND a.class = 'count_lowered'
              ORDER BY a.date_of_repayment LIMIT 5),
       ARRAY(SELECT a.date_of_repayment::text FROM loan_load_anomalies AS a
              WHERE a.load_id = l.id AND a.class = 'day_missing'
              ORDER BY a.date_of_repayment LIMIT 5)
  FROM loan_loads AS l
 ORDER BY l.id DESC
 LIMIT 1
