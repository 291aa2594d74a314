-- V001: the schema, as a first installation gets it.
--
-- Two schemas:
--   - the one the tools' search_path creates in (public, unless the connection sets another)
--     holds what people read: loans, loan_loads, rollup_runs and the two views of the rollup.
--     loans_reader may read these five and nothing else (loans_monitor, one of its kind, reads
--     the machinery loans-verify reads besides);
--   - loans_internal holds the machinery: the change log and its trigger function, the rollup's
--     versions, the run lock and schema_migrations. A schema of its own keeps it out of what an
--     analyst sees in Adminer, and out of the reader's reach as a whole: the reader has no USAGE
--     on it, so it cannot even name what is there, and the views read it with their owner's
--     rights. Its name is fixed, because the tools name these objects with it; only the owner
--     creates in it.
-- loans_internal and its schema_migrations are made by the tools just before this file runs
-- (crates/loans-core/src/migrations.rs): the lock that makes starters take turns is on that table.
--
-- Applied once by loans-load or loans-rollup and recorded in schema_migrations with a checksum
-- of this text: never edit it after it has shipped; add a V002 instead.

COMMENT ON SCHEMA loans_internal IS
    'The machinery of loans-load and loans-rollup: read the tables and views of the schema of loans instead.';
-- A new schema grants PUBLIC nothing, unless the owner's default privileges say otherwise.
REVOKE ALL ON SCHEMA loans_internal FROM PUBLIC;

CREATE TABLE loan_loads (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    sha256      text        NOT NULL,
    as_of       date,
    rows_read   integer,
    inserted    integer,
    updated     integer,
    unchanged   integer,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz
);

COMMENT ON TABLE loan_loads IS
    'One row per run of loans-load: the file, its SHA-256, its as-of date and what the load changed.';
COMMENT ON COLUMN loan_loads.source IS
    'The path given to loans-load (- for standard input), or the source database''s URL without its password.';
COMMENT ON COLUMN loan_loads.as_of IS 'The as-of date from the file''s header, when it has one.';
COMMENT ON COLUMN loan_loads.unchanged IS 'Rows of the file whose day was already loaded with the same counts.';

CREATE TABLE loans (
    date_of_repayment date        PRIMARY KEY,
    number_of_loans   integer     NOT NULL,
    defaults          integer     NOT NULL,
    liquidations      integer     NOT NULL,
    as_of             date,
    load_id           bigint      NOT NULL REFERENCES loan_loads (id),
    updated_at        timestamptz NOT NULL,
    -- The rules the loader applies to a file, so a day typed in by hand meets them too.
    CONSTRAINT loans_date_in_loader_range
        CHECK (date_of_repayment BETWEEN '0001-01-01' AND '9999-12-31'),
    CONSTRAINT loans_number_of_loans_not_negative CHECK (number_of_loans >= 0),
    CONSTRAINT loans_defaults_not_negative CHECK (defaults >= 0),
    CONSTRAINT loans_liquidations_not_negative CHECK (liquidations >= 0),
    -- bigint: the sum of two integers must not overflow before it is compared.
    CONSTRAINT loans_outcomes_within_loans
        CHECK (defaults::bigint + liquidations <= number_of_loans)
);

COMMENT ON TABLE loans IS
    'The daily extract: loans repaid per day and how many of them defaulted or were liquidated.';
COMMENT ON COLUMN loans.as_of IS 'As-of date of the extract that last changed this day''s counts.';
COMMENT ON COLUMN loans.load_id IS 'The loan_loads row that last changed this day''s counts.';
COMMENT ON COLUMN loans.updated_at IS 'When this day''s counts last changed; a reload of equal counts leaves it alone.';
COMMENT ON CONSTRAINT loans_date_in_loader_range ON loans IS
    'The days the loader accepts (YYYY-MM-DD, years 0001 to 9999): no infinity, no BC, no year 10000.';

CREATE TABLE rollup_runs (
    id             bigserial   PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    status         text        NOT NULL
        CONSTRAINT rollup_runs_status_known CHECK (status IN ('running', 'succeeded', 'failed')),
    rollup_version text        NOT NULL,
    rows_written   integer,
    error          text,
    created_at     timestamptz
);

COMMENT ON TABLE rollup_runs IS
    'One row per run of loans-rollup (cron starts one a minute): when, which rollup SQL, how it ended.';
COMMENT ON COLUMN rollup_runs.rollup_version IS
    'Version of the rollup SQL file and the start of its SHA-256, e.g. v2+sha256:0123456789ab.';
COMMENT ON COLUMN rollup_runs.rows_written IS
    'Rows of the rollup the run changed (new versions); 0 when nothing had changed.';
COMMENT ON COLUMN rollup_runs.error IS 'Why a failed run failed.';
COMMENT ON COLUMN rollup_runs.created_at IS
    'The snapshot time of a successful run: the created_at of its rows in default_liquidation_rolling_avg_hist.';

-- Each run looks for runs left `running` by a process that died; this keeps that lookup from
-- scanning a history that grows by one row a minute.
CREATE INDEX rollup_runs_running_idx ON rollup_runs (id) WHERE status = 'running';
-- Retention finds the oldest snapshot to keep by time.
CREATE INDEX rollup_runs_created_at_idx ON rollup_runs (created_at) WHERE status = 'succeeded';

-- The rollup's history as changes rather than copies: a run writes only the days whose figures
-- differ from the current version, so storage grows with changes, not with runs times days.
CREATE TABLE loans_internal.rollup_versions (
    date_of_repayment            date    NOT NULL,
    valid_from                   bigint  NOT NULL,
    valid_to                     bigint,
    number_of_loans              integer NOT NULL,
    defaults                     integer NOT NULL,
    liquidations                 integer NOT NULL,
    liquidation_to_default_ratio numeric,
    ratio_rolling_avg_7d         numeric,
    rolling_window_days          integer NOT NULL,
    PRIMARY KEY (date_of_repayment, valid_from),
    CONSTRAINT rollup_versions_valid_range CHECK (valid_to IS NULL OR valid_to > valid_from)
);
-- The current figures (the newest snapshot) and what retention deletes.
CREATE INDEX rollup_versions_current_idx ON loans_internal.rollup_versions (date_of_repayment)
    WHERE valid_to IS NULL;
CREATE INDEX rollup_versions_valid_to_idx ON loans_internal.rollup_versions (valid_to)
    WHERE valid_to IS NOT NULL;

COMMENT ON TABLE loans_internal.rollup_versions IS
    'The rollup''s history as changes: one row per day and version, valid for the runs valid_from <= run < valid_to (valid_to NULL: still current). Read it through default_liquidation_rolling_avg_hist.';
COMMENT ON COLUMN loans_internal.rollup_versions.valid_from IS
    'The run that wrote this version (rollup_runs.id).';
COMMENT ON COLUMN loans_internal.rollup_versions.valid_to IS
    'The run that replaced or removed it; NULL while it is current.';
COMMENT ON COLUMN loans_internal.rollup_versions.liquidation_to_default_ratio IS
    'liquidations / defaults for the day; NULL when defaults = 0.';
COMMENT ON COLUMN loans_internal.rollup_versions.ratio_rolling_avg_7d IS
    'Mean of the non-NULL ratios of the 7 calendar days before this one (d-7 .. d-1); NULL when there are none.';
COMMENT ON COLUMN loans_internal.rollup_versions.rolling_window_days IS
    'How many ratios the mean is over (0 to 7).';

-- Run X's snapshot is the versions valid at X.
CREATE VIEW default_liquidation_rolling_avg_hist AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days
  FROM rollup_runs AS r
  JOIN loans_internal.rollup_versions AS v
    ON v.valid_from <= r.id AND (v.valid_to IS NULL OR v.valid_to > r.id)
 WHERE r.status = 'succeeded' AND r.created_at IS NOT NULL;

COMMENT ON VIEW default_liquidation_rolling_avg_hist IS
    'Every snapshot kept, one per successful run (loans-rollup --keep): WHERE run_id = X (or created_at = T) gives run X''s whole snapshot.';

CREATE VIEW default_liquidation_rolling_avg AS
SELECT r.id AS run_id,
       r.created_at,
       v.date_of_repayment,
       v.number_of_loans,
       v.defaults,
       v.liquidations,
       v.liquidation_to_default_ratio,
       v.ratio_rolling_avg_7d,
       v.rolling_window_days
  FROM loans_internal.rollup_versions AS v,
       (SELECT id, created_at FROM rollup_runs
         WHERE status = 'succeeded' AND created_at IS NOT NULL
         ORDER BY id DESC LIMIT 1) AS r
 WHERE v.valid_to IS NULL;

COMMENT ON VIEW default_liquidation_rolling_avg IS
    'The newest successful snapshot of the rollup: what to query for current figures.';

-- What changed in loans, for the next run: one row per statement that changed it, from the
-- triggers below, whoever ran it (the loader, or anyone in psql or Adminer), so a run knows what
-- to recompute without reading loans.
CREATE TABLE loans_internal.loans_changes (
    first_day date        NOT NULL,
    last_day  date        NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE loans_internal.loans_changes IS
    'Days of loans changed since the last successful rollup run, as one range per statement (TRUNCATE: all days). Each run takes the rows it sees.';

-- Every name qualified, and a search_path that puts pg_temp last, so no temporary object (a
-- temporary table called loans_changes) can stand in for anything the function uses.
CREATE FUNCTION loans_internal.loans_log_changes() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO loans_internal.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM new_rows HAVING count(*) > 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO loans_internal.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment)
          FROM (SELECT date_of_repayment FROM old_rows
                UNION ALL
                SELECT date_of_repayment FROM new_rows) AS changed
        HAVING count(*) > 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO loans_internal.loans_changes (first_day, last_day)
        SELECT min(date_of_repayment), max(date_of_repayment) FROM old_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO loans_internal.loans_changes (first_day, last_day) VALUES ('-infinity', 'infinity');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER loans_changes_insert AFTER INSERT ON loans
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loans_log_changes();
CREATE TRIGGER loans_changes_update AFTER UPDATE ON loans
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loans_log_changes();
CREATE TRIGGER loans_changes_delete AFTER DELETE ON loans
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loans_log_changes();
CREATE TRIGGER loans_changes_truncate AFTER TRUNCATE ON loans
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loans_log_changes();
-- ALWAYS: the log cannot be bypassed in replica mode either (session_replication_role =
-- replica, as logical replication applies changes).
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_insert;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_update;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_delete;
ALTER TABLE loans ENABLE ALWAYS TRIGGER loans_changes_truncate;

-- The run lock: a run locks this one row FOR UPDATE, which needs UPDATE on the table, so only
-- its owner can take it (an advisory lock is open to every role).
CREATE TABLE loans_internal.rollup_lock (
    only_row boolean PRIMARY KEY DEFAULT true CONSTRAINT rollup_lock_one_row CHECK (only_row)
);
INSERT INTO loans_internal.rollup_lock VALUES (true);
COMMENT ON TABLE loans_internal.rollup_lock IS
    'One row, locked FOR UPDATE by a running loans-rollup: locking it needs UPDATE, which only the owner has.';

-- loans_reader: a group role for analysts (Adminer, BI tools) that reads the five objects above
-- by name, not every table of a schema that other applications may share. Log-in users are made
-- its members outside the migrations (the compose stack makes one from LOANS_ANALYST_USER).
-- Roles belong to the whole cluster, and creating one needs CREATEROLE: a database user without
-- it (some managed services) gets a notice instead, and a DBA creates the role and runs these
-- grants by hand. A later migration that adds an object to read grants SELECT on it by name.
-- TEMPORARY stays as PostgreSQL grants it, to PUBLIC: the loader stages each file in a temporary
-- table, and a temporary table is seen only by the session that made it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            -- Another database of the cluster may be creating it at this moment.
            BEGIN
                CREATE ROLE loans_reader NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            RAISE NOTICE 'loans_reader was not created: % may not create roles', current_user;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO loans_reader', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO loans_reader', current_schema());
    GRANT SELECT ON loans, loan_loads, rollup_runs, default_liquidation_rolling_avg,
                    default_liquidation_rolling_avg_hist
       TO loans_reader;
END
$$;

-- loans_monitor: a second group role, for what checks the tables without changing them
-- (loans-verify from cron, a monitoring system). It is a loans_reader, and it reads the three
-- machinery tables loans-verify reads too: schema_migrations (the schema check), loans_changes
-- (is the snapshot behind) and rollup_versions (the snapshot of an older run). Nothing more:
-- SELECT gives no row locks (FOR UPDATE, FOR SHARE and the rest need UPDATE) and, of the LOCK
-- TABLE modes, only ACCESS SHARE, the one every read takes; and it gets nothing on rollup_lock,
-- whose row a run locks FOR UPDATE NOWAIT. Created as loans_reader is, and with it: where the
-- tools' role may not create roles, a DBA creates both and runs these grants by hand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_monitor') THEN
        IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            BEGIN
                CREATE ROLE loans_monitor NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        ELSE
            RAISE NOTICE 'loans_monitor was not created: % may not create roles', current_user;
            RETURN;
        END IF;
    END IF;
    -- Granting a role needs CREATEROLE or its ADMIN OPTION: where a DBA made both roles for a
    -- tools' role that has neither, the DBA grants this too.
    IF NOT pg_has_role('loans_monitor', 'loans_reader', 'MEMBER') THEN
        BEGIN
            GRANT loans_reader TO loans_monitor;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'loans_monitor was not made a member of loans_reader: % may not grant it',
                         current_user;
        END;
    END IF;
    GRANT USAGE ON SCHEMA loans_internal TO loans_monitor;
    GRANT SELECT ON loans_internal.schema_migrations, loans_internal.loans_changes,
                    loans_internal.rollup_versions
       TO loans_monitor;
END
$$;

-- Nobody but the schema's owner creates objects in the schema of loans. The tools' statements
-- find functions and operators through their search_path, so a function an analyst made there
-- (public.unnest(text[]) is a better match than pg_catalog's unnest(anyarray)) would run inside
-- a run, as the tools' role. PostgreSQL 15 no longer grants CREATE on public to PUBLIC in a new
-- database, but a database made by an older version, or from a template that grants it, still
-- does. CREATE is taken from PUBLIC and the reader; if the reader still has it (granted to
-- another of its roles), or one of its members has made a function or operator there already,
-- the migration stops and says so.
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
