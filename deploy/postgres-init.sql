-- One database per service (DESIGN.md, "Distributed"): a service never reads
-- another service's tables, it reads their events.
--
-- The postgres image runs this file once, when the data directory is empty,
-- connected as POSTGRES_USER, so that role owns the databases (and, on
-- PostgreSQL 15, their public schema: pg_database_owner). It is not run again
-- on later starts; to add a database to an existing volume, run the matching
-- CREATE DATABASE by hand. Each service's `<service> db upgrade` (the
-- `<service>-migrate` containers) then creates the tables.

CREATE DATABASE order_intake;
CREATE DATABASE case_handling;
CREATE DATABASE notifier;
CREATE DATABASE customer_ledger;

-- Nobody but the owner connects (PUBLIC has CONNECT and TEMP by default).
REVOKE ALL ON DATABASE order_intake FROM PUBLIC;
REVOKE ALL ON DATABASE case_handling FROM PUBLIC;
REVOKE ALL ON DATABASE notifier FROM PUBLIC;
REVOKE ALL ON DATABASE customer_ledger FROM PUBLIC;
