-- The login attempt log shared by every server process (server_min/limits/postgres.py): per key, the
-- wrong passwords counted towards the next lock-out, the lock-out, how many there were, and when the
-- row may be forgotten. The key is the SHA-256 of the rate limiter's key ('user:NAME', 'addr:IP',
-- 'pair:NAME\nIP'): names are the users' own, of any length. Times are seconds since the epoch.
CREATE TABLE login_attempts (
    key BYTEA PRIMARY KEY, failures DOUBLE PRECISION[] NOT NULL DEFAULT '{}',
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0, strikes INTEGER NOT NULL DEFAULT 0,
    expires DOUBLE PRECISION NOT NULL DEFAULT 0);
CREATE INDEX login_attempts_expires ON login_attempts (expires);
