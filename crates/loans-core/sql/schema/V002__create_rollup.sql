-- V002: the rollup's runs, its timestamped snapshots, and the view of the newest one.
--
-- Never edit after it has shipped; add a V003 instead.

CREATE TABLE rollup_runs (
    id                 bigserial   PRIMARY KEY,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    status             text        NOT NULL
        CONSTRAINT rollup_runs_status_known CHECK (status IN ('running', 'succeeded', 'failed')),
    rollup_version     text        NOT NULL,
    rows_written       integer,
    source_fingerprint text,
    error              text
);

COMMENT ON TABLE rollup_runs IS
    'One row per run of loans-rollup (cron starts one a minute): when, which rollup SQL, how it ended.';
COMMENT ON COLUMN rollup_runs.rollup_version IS
    'Version of the rollup SQL file and the start of its SHA-256, e.g. v1+sha256:0123456789ab.';
COMMENT ON COLUMN rollup_runs.source_fingerprint IS
    'SHA-256 of the loans rows the run read: equal fingerprints and versions mean equal snapshots.';
COMMENT ON COLUMN rollup_runs.error IS 'Why a failed run failed.';

-- Each run looks for runs left `running` by a process that died; this keeps that lookup from
-- scanning a history that grows by one row a minute.
CREATE INDEX rollup_runs_running_idx ON rollup_runs (id) WHERE status = 'running';

CREATE TABLE default_liquidation_rolling_avg_hist (
    run_id                       bigint      NOT NULL REFERENCES rollup_runs (id),
    created_at                   timestamptz NOT NULL,
    date_of_repayment            date        NOT NULL,
    number_of_loans              integer     NOT NULL,
    defaults                     integer     NOT NULL,
    liquidations                 integer     NOT NULL,
    liquidation_to_default_ratio numeric,
    ratio_rolling_avg_7d         numeric,
    rolling_window_days          integer     NOT NULL,
    PRIMARY KEY (run_id, date_of_repayment)
);

-- Every run inserts a snapshot and deletes the oldest: vacuum once 5% of the rows are dead (three
-- snapshots of sixty) rather than PostgreSQL's default 20%, so the table stays near the size the
-- retention implies, however long the job runs.
ALTER TABLE default_liquidation_rolling_avg_hist SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

COMMENT ON TABLE default_liquidation_rolling_avg_hist IS
    'Snapshots of the rollup, one full snapshot per successful run; the newest are kept (loans-rollup --keep).';
COMMENT ON COLUMN default_liquidation_rolling_avg_hist.created_at IS
    'When the snapshot was made: the same for every row of a run, later than any earlier snapshot.';
COMMENT ON COLUMN default_liquidation_rolling_avg_hist.liquidation_to_default_ratio IS
    'liquidations / defaults for the day; NULL when defaults = 0.';
COMMENT ON COLUMN default_liquidation_rolling_avg_hist.ratio_rolling_avg_7d IS
    'Mean of the non-NULL ratios of the 7 calendar days before this one (d-7 .. d-1); NULL when there are none.';
COMMENT ON COLUMN default_liquidation_rolling_avg_hist.rolling_window_days IS
    'How many ratios the mean is over (0 to 7).';

CREATE VIEW default_liquidation_rolling_avg AS
SELECT h.run_id,
       h.created_at,
       h.date_of_repayment,
       h.number_of_loans,
       h.defaults,
       h.liquidations,
       h.liquidation_to_default_ratio,
       h.ratio_rolling_avg_7d,
       h.rolling_window_days
  FROM default_liquidation_rolling_avg_hist AS h
 WHERE h.run_id = (SELECT max(r.id) FROM rollup_runs AS r WHERE r.status = 'succeeded');

COMMENT ON VIEW default_liquidation_rolling_avg IS
    'The newest successful snapshot of the rollup: what to query for current figures.';
