-- V005: the edges of trust.
--   - loans.date_of_repayment holds only what the loader accepts (0001-01-01 to 9999-12-31), so a
--     day typed in by hand meets the same rule as a file;
--   - rollup_lock, a one-row table whose row a run locks: a role that may not update it (the
--     reader) cannot take it, as it could take the advisory lock used until now;
--   - loans_reader reads the project's own tables and views, named one by one, instead of every
--     table in the schema;
--   - nobody but the schema's owner creates objects in the schema of loans: the tools' statements
--     find functions and operators through their search_path, so a function an analyst made
--     there (public.unnest(text[]) is a better match than pg_catalog's unnest(anyarray)) would
--     run inside a run, as the tools' role;
--   - the change log cannot be bypassed: the trigger function names its table with its schema and
--     runs with a fixed search_path (a temporary table called loans_changes is not it), and the
--     triggers fire in replica mode too (session_replication_role = replica, logical replication).
--
-- Never edit after it has shipped; add a V006 instead.

-- Nothing may change loans between the look for days out of range and the constraint.
LOCK TABLE loans IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    outside text;
    total   bigint;
BEGIN
    SELECT string_agg(d::text, ', ' ORDER BY d), max(n) INTO outside, total
      FROM (SELECT date_of_repayment AS d, count(*) OVER () AS n
              FROM loans
             WHERE NOT date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'
             ORDER BY date_of_repayment
             LIMIT 10) AS o;
    IF outside IS NOT NULL THEN
        RAISE EXCEPTION 'loans holds % day(s) outside 0001-01-01 to 9999-12-31, which the loader refuses: %',
                        total, outside
            USING ERRCODE = 'check_violation',
                  HINT = 'correct those days (UPDATE loans SET date_of_repayment = ... WHERE '
                         'date_of_repayment = ...) or delete them, then run any loans tool again: '
                         'it applies this migration, and the next rollup run recomputes what changed';
    END IF;
END
$$;

ALTER TABLE loans ADD CONSTRAINT loans_date_in_loader_range
    CHECK (date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31');
COMMENT ON CONSTRAINT loans_date_in_loader_range ON loans IS
    'The days the loader accepts (YYYY-MM-DD, years 0001 to 9999): no infinity, no BC, no year 10000.';

CREATE TABLE rollup_lock (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT rollup_lock_one_row CHECK (only_row)
);
INSERT INTO rollup_lock VALUES (true);
COMMENT ON TABLE rollup_lock IS
    'One row, locked FOR UPDATE by a running loans-rollup: locking it needs UPDATE, which only the owner has.';

-- The change log, with every name qualified by the schema loans is in, and a search_path that
-- puts pg_temp last, so no temporary object can stand in for anything the function uses.
DO $$
DECLARE
    schema text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = 'loans'::regclass);
BEGIN
    EXECUTE format($function$
CREATE OR REPLACE FUNCTION %1$I.loans_log_changes() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO %1$I.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO %1$I.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment)
          FROM (SELECT date_of_repayment FROM old_rows
                UNION ALL
                SELECT date_of_repayment FROM new_rows) AS changed
        HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO %1$I.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM old_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO %1$I.loans_changes (first_day, last_day) VALUES ('-infinity', 'infinity');
    END IF;
    RETURN NULL;
END
$body$
$function$, schema);
END
$$;

ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_insert;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_update;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_delete;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_truncate;

-- The reader: SELECT on the project's objects by name. V004's grant on every table of the schema
-- reached other applications' tables in a shared database, and so did its default privileges;
-- both are taken back. A later migration that adds a table or view grants SELECT on it by name.
-- TEMPORARY stays as PostgreSQL grants it, to PUBLIC: the loader stages each file in a temporary
-- table, taking it from PUBLIC would take it from every application of the database, and a
-- temporary table is seen only by the session that made it (the log no longer looks there).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        RAISE NOTICE 'loans_reader does not exist: no grants to change';
        RETURN;
    END IF;
    REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM loans_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM loans_reader;
    GRANT SELECT ON schema_migrations, loan_loads, loans, loans_changes, rollup_runs,
                    rollup_versions, rollup_lock, default_liquidation_rolling_avg,
                    default_liquidation_rolling_avg_hist
       TO loans_reader;
END
$$;

-- Creating objects where the tools look. PostgreSQL 15 no longer grants CREATE on public to
-- PUBLIC in a new database, but a database made by an older version, or from a template that
-- grants it, still does; then a member of loans_reader could make a function that a tool's
-- statement calls instead of the built-in one, with the tools' privileges. CREATE is taken from
-- PUBLIC and the reader; if the reader still has it (granted to another of its roles), or one of
-- its members has made a function or operator there already, the migration stops and says so.
DO $$
DECLARE
    schema  oid  := (SELECT relnamespace FROM pg_class WHERE oid = 'loans'::regclass);
    planted text;
BEGIN
    BEGIN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', schema::regnamespace);
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        RETURN;
    END IF;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM loans_reader', schema::regnamespace);
    IF has_schema_privilege('loans_reader', schema, 'CREATE') THEN
        RAISE EXCEPTION 'loans_reader may create objects in schema %, where the tools look up functions and operators',
                        schema::regnamespace
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('the schema''s owner runs REVOKE CREATE ON SCHEMA %I FROM PUBLIC, and '
                                'from each role of loans_reader''s that has it, then starts any loans tool again',
                                schema::regnamespace);
    END IF;
    SELECT string_agg(what, ', ' ORDER BY what) INTO planted
      FROM (SELECT p.oid::regprocedure::text || ' (a function of ' || r.rolname || ')' AS what
              FROM pg_proc AS p JOIN pg_roles AS r ON r.oid = p.proowner
             WHERE p.pronamespace = schema AND NOT r.rolsuper AND r.rolname <> current_user
               AND pg_has_role(r.oid, 'loans_reader', 'MEMBER')
            UNION ALL
            SELECT o.oid::regoperator::text || ' (an operator of ' || r.rolname || ')'
              FROM pg_operator AS o JOIN pg_roles AS r ON r.oid = o.oprowner
             WHERE o.oprnamespace = schema AND NOT r.rolsuper AND r.rolname <> current_user
               AND pg_has_role(r.oid, 'loans_reader', 'MEMBER')) AS found;
    IF planted IS NOT NULL THEN
        RAISE EXCEPTION 'members of loans_reader made objects in schema % that the tools'' statements could call: %',
                        schema::regnamespace, planted
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'drop them (DROP FUNCTION ..., DROP OPERATOR ...), then start any loans tool again';
    END IF;
END
$$;
