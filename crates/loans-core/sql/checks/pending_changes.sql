-- The changes to loans logged and not rolled up yet.
-- Takes nothing.
-- Returns one row: how many ranges the log holds (int8).
SELECT count(*) FROM loans_internal.loans_changes
