-- Runs once, when the PostgreSQL volume is first initialised. The ML service's migrations also
-- create the extension; doing it here lets them run as a role that may not create extensions.
CREATE EXTENSION IF NOT EXISTS vector;
