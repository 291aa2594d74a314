-- V004: loans_reader, a group role that can read the tables and views and nothing else, for
-- analysts (Adminer, BI tools). Log-in users are made members of it, outside the migrations:
-- the compose stack makes one from LOANS_ANALYST_USER and LOANS_ANALYST_PASSWORD.
--
-- Roles belong to the whole cluster, and creating one needs CREATEROLE: a database user without
-- it (some managed services) gets a notice instead, and a DBA can create the role and run the
-- grants below by hand. Never edit after it has shipped; add a V005 instead.

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
    GRANT USAGE ON SCHEMA public TO loans_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO loans_reader;
    -- Tables and views that later migrations create, as the same owner, are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO loans_reader;
END
$$;
