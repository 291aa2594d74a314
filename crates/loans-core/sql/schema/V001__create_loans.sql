-- V001: the loaded extract and the history of loads.
--
-- Applied once by loans-load or loans-rollup and recorded in schema_migrations with a checksum
-- of this text: never edit it after it has shipped; add a V002 instead.

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
COMMENT ON COLUMN loan_loads.source IS 'The path given to loans-load, or - for standard input.';
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
