-- The terms complete (issue 14), PostgreSQL dialect. sqlite/0002_terms.sql is the same schema in
-- SQLite's dialect: change both together. 0001 stays as it was, so existing stores migrate.

-- Art. 7, 14: the party to management and rental contracts, with an optional bill-to.
CREATE TABLE customers (
    id TEXT PRIMARY KEY CHECK (length(id) > 0),
    name TEXT NOT NULL,
    bill_to TEXT
);

-- Art. 15-2, 15-3: acceptance and billing start days (NULL in rows written before this
-- migration: the start day); a management contract's customer.
ALTER TABLE contracts ADD COLUMN customer_id TEXT REFERENCES customers (id);
ALTER TABLE contracts ADD COLUMN accepted_day TEXT;
ALTER TABLE contracts ADD COLUMN billing_start_day TEXT;

-- Stores made before customers existed: their managements belong to the default customer.
INSERT INTO customers (id, name)
SELECT 'default', 'Default customer' WHERE EXISTS (SELECT 1 FROM contracts WHERE kind = 'management');
UPDATE contracts SET customer_id = 'default' WHERE kind = 'management';

-- Art. 5-1: a management contract's Entry and Standby counts, each from a day on.
CREATE TABLE management_counts (
    management_id TEXT NOT NULL REFERENCES contracts (id),
    from_day TEXT NOT NULL,
    entries BIGINT NOT NULL CHECK (entries >= 0),
    standbys BIGINT NOT NULL CHECK (standbys >= 0),
    PRIMARY KEY (management_id, from_day)
);

-- Art. 4-1, 9, 16-3: adapter rental contracts. Their ids share the contracts' id space (the
-- application checks both tables).
CREATE TABLE rentals (
    id TEXT PRIMARY KEY CHECK (length(id) > 0),
    customer_id TEXT NOT NULL REFERENCES customers (id),
    serial TEXT NOT NULL CHECK (length(serial) > 0),
    start_day TEXT NOT NULL,
    accepted_day TEXT NOT NULL,
    billing_start_day TEXT NOT NULL,
    -- Art. 9-3: the day the adapter came back.
    returned_day TEXT
);

-- The rented model at contract time (the start day) and each later change.
CREATE TABLE rental_models (
    rental_id TEXT NOT NULL REFERENCES rentals (id),
    on_day TEXT NOT NULL,
    model TEXT NOT NULL CHECK (model IN ('neu-2fe-plus', 'turbo', 'x1', 'x2', 'b1', 'bpv4')),
    PRIMARY KEY (rental_id, on_day)
);

-- An adapter may be a rented one; serial_key is the serial case-folded, so that a new serial
-- that differs from an existing one only by case is found (filled by the application).
ALTER TABLE adapters ADD COLUMN rental_id TEXT REFERENCES rentals (id);
ALTER TABLE adapters ADD COLUMN serial_key TEXT;
CREATE INDEX adapters_serial_key ON adapters (serial_key);

-- Every termination (Art. 22, 23) of a management, option or rental contract. 0001's
-- columns on `contracts` cannot hold an abolition, a rental's end or an option cancelled
-- before its start; their rows move here.
CREATE TABLE terminations (
    contract_id TEXT PRIMARY KEY,
    on_day TEXT NOT NULL,
    ended_by TEXT NOT NULL CHECK (ended_by IN ('customer', 'provider', 'abolition', 'management', 'rental')),
    notice_day TEXT,
    CHECK (ended_by NOT IN ('customer', 'abolition') OR notice_day IS NOT NULL),
    -- Art. 23-2: effective no earlier than 30 days after the notice.
    CHECK (ended_by IS DISTINCT FROM 'customer' OR on_day::date >= notice_day::date + 30)
);
INSERT INTO terminations (contract_id, on_day, ended_by, notice_day)
SELECT id, terminated_on, terminated_by, notice_day FROM contracts WHERE terminated_on IS NOT NULL;
UPDATE contracts SET terminated_on = NULL, terminated_by = NULL, notice_day = NULL;

-- Art. 26: outages of a management contract's service, instants in RFC 3339 (UTC).
CREATE TABLE outages (
    management_id TEXT NOT NULL REFERENCES contracts (id),
    from_instant TEXT NOT NULL,
    to_instant TEXT NOT NULL,
    wholly_unusable BIGINT NOT NULL CHECK (wholly_unusable IN (0, 1)),
    provider_fault BIGINT NOT NULL CHECK (provider_fault IN (0, 1)),
    claimed_day TEXT,
    PRIMARY KEY (management_id, from_instant)
);
