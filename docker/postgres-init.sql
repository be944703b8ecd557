-- A second database on the same server: Label Studio uses POSTGRES_DB, the project store uses this one.
CREATE DATABASE genpromp;
