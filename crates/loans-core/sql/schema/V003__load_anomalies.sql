-- V003: how each load revised the days it found in loans, judged by the data's rules.
--
-- A day is final when defaults + liquidations = number_of_loans: every loan of it has ended. A
-- newer extract should only move open days towards final. Each load counts its revisions by
-- class on its loan_loads row (the load's whole picture, a few integers), and keeps one row per
-- day and class only for the three classes that break those rules (the anomalies), so the table
-- grows with what needs a look, not with every revision of every load. The classes are
-- worked out in the load's own transaction, before its merge (crates/loans-core/src/revisions.rs).
--
-- The table is for analysts, next to loan_loads in the schema of loans: loans_reader reads it
-- (and so loans_monitor, for loans-verify's load check).

ALTER TABLE loan_loads
    ADD COLUMN towards_final integer,
    ADD COLUMN loans_added   integer,
    ADD COLUMN final_changed integer,
    ADD COLUMN count_lowered integer,
    ADD COLUMN day_missing   integer;

COMMENT ON COLUMN loan_loads.towards_final IS
    'Open days whose outcomes (defaults + liquidations) grew, no count lowered. NULL: loaded before V003 counted revisions.';
COMMENT ON COLUMN loan_loads.loans_added IS
    'Open days whose number_of_loans grew, outcomes and no count lowered.';
COMMENT ON COLUMN loan_loads.final_changed IS
    'Anomaly: final days (defaults + liquidations = number_of_loans) whose counts changed.';
COMMENT ON COLUMN loan_loads.count_lowered IS
    'Anomaly: days with number_of_loans, defaults or liquidations lower than loans held.';
COMMENT ON COLUMN loan_loads.day_missing IS
    'Anomaly: days of loans the file lacks, when it is newer than every extract loaded before it (see docs/usage.md).';

-- No foreign key to loan_loads: one would stop `TRUNCATE loans, loan_loads` (starting over, as
-- the benchmark does). The triggers below forget a load's anomalies with the load instead.
CREATE TABLE loan_load_anomalies (
    load_id                  bigint  NOT NULL,
    class                    text    NOT NULL
        CONSTRAINT loan_load_anomalies_class_known
        CHECK (class IN ('final_changed', 'count_lowered', 'day_missing')),
    date_of_repayment        date    NOT NULL,
    number_of_loans_before   integer NOT NULL,
    defaults_before          integer NOT NULL,
    liquidations_before      integer NOT NULL,
    number_of_loans_after    integer,
    defaults_after           integer,
    liquidations_after       integer,
    PRIMARY KEY (load_id, class, date_of_repayment)
);

COMMENT ON TABLE loan_load_anomalies IS
    'One row per day and anomaly class a load found (a day may have two: a final day with a count lowered); what loan_loads counts in final_changed, count_lowered and day_missing.';
COMMENT ON COLUMN loan_load_anomalies.load_id IS 'The loan_loads row that found it.';
COMMENT ON COLUMN loan_load_anomalies.class IS 'final_changed, count_lowered or day_missing, as the loan_loads columns of those names.';
COMMENT ON COLUMN loan_load_anomalies.number_of_loans_before IS 'The day''s counts in loans before the load (with defaults_before, liquidations_before).';
COMMENT ON COLUMN loan_load_anomalies.defaults_before IS 'See number_of_loans_before.';
COMMENT ON COLUMN loan_load_anomalies.liquidations_before IS 'See number_of_loans_before.';
COMMENT ON COLUMN loan_load_anomalies.number_of_loans_after IS
    'The file''s counts for the day, which the load wrote (with defaults_after, liquidations_after); NULL for day_missing, whose day was kept as it was.';
COMMENT ON COLUMN loan_load_anomalies.defaults_after IS 'See number_of_loans_after.';
COMMENT ON COLUMN loan_load_anomalies.liquidations_after IS 'See number_of_loans_after.';

-- A deleted or truncated load takes its anomalies along, so a load id used again (after
-- TRUNCATE … RESTART IDENTITY) is not shown another load's. The table is named in the trigger's
-- schema, which is loan_loads' and this table's; nothing else is looked up by name.
CREATE FUNCTION loans_internal.loan_loads_forget_anomalies() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE %I.loan_load_anomalies', TG_TABLE_SCHEMA);
    ELSE
        EXECUTE format('DELETE FROM %I.loan_load_anomalies AS a USING gone WHERE a.load_id = gone.id',
                       TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER loan_loads_forget_anomalies_delete AFTER DELETE ON loan_loads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loan_loads_forget_anomalies();
CREATE TRIGGER loan_loads_forget_anomalies_truncate AFTER TRUNCATE ON loan_loads
    FOR EACH STATEMENT EXECUTE FUNCTION loans_internal.loan_loads_forget_anomalies();
ALTER TABLE loan_loads ENABLE ALWAYS TRIGGER loan_loads_forget_anomalies_delete;
ALTER TABLE loan_loads ENABLE ALWAYS TRIGGER loan_loads_forget_anomalies_truncate;

-- As V001 grants the reader its five objects: by name, and only where the role exists (a DBA
-- who made it by hand runs this grant too).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loans_reader') THEN
        GRANT SELECT ON loan_load_anomalies TO loans_reader;
    END IF;
END
$$;
