-- The contract store (issue 6), PostgreSQL dialect. sqlite/0001_contracts.sql is the same
-- schema in SQLite's dialect: change both together. Days are 'YYYY-MM-DD' text in the
-- provider's time zone (they sort as they compare); the application writes them.

-- One row: the provider's time zone, which turns an instant into a contract day.
CREATE TABLE provider (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    time_zone TEXT NOT NULL
);

-- Management and Ultra Firewall Option contracts share one id space, so that `suspend` and
-- `terminate` name either by id.
CREATE TABLE contracts (
    id TEXT PRIMARY KEY CHECK (length(id) > 0),
    kind TEXT NOT NULL CHECK (kind IN ('management', 'option')),
    start_day TEXT NOT NULL,
    -- Art 5-2: the one adapter an option covers, fixed for life (see the trigger below).
    -- Its foreign key is added once `adapters` exists.
    serial TEXT,
    terminated_on TEXT,
    terminated_by TEXT CHECK (terminated_by IN ('customer', 'provider', 'management')),
    notice_day TEXT,
    CHECK ((kind = 'option') = (serial IS NOT NULL)),
    CHECK ((terminated_on IS NULL) = (terminated_by IS NULL)),
    CHECK (terminated_on IS NULL OR terminated_on >= start_day),
    -- Art 23-2: a customer's termination takes effect 30 days after the notice at the earliest.
    CHECK (terminated_by IS DISTINCT FROM 'customer' OR (notice_day IS NOT NULL AND terminated_on::date >= notice_day::date + 30)),
    UNIQUE (id, kind)
);

CREATE TABLE adapters (
    serial TEXT PRIMARY KEY CHECK (length(serial) > 0),
    model TEXT NOT NULL CHECK (model IN ('neu-2fe-plus', 'turbo', 'x1', 'x2', 'b1', 'bpv4', 'x86-fuji')),
    management_id TEXT NOT NULL,
    -- Makes the foreign key below point at a management contract, never at an option.
    management_kind TEXT NOT NULL DEFAULT 'management' CHECK (management_kind = 'management'),
    FOREIGN KEY (management_id, management_kind) REFERENCES contracts (id, kind)
);

ALTER TABLE contracts ADD FOREIGN KEY (serial) REFERENCES adapters (serial);

-- Each change of an adapter's role (entry or standby) with the day it takes effect.
CREATE TABLE adapter_roles (
    serial TEXT NOT NULL REFERENCES adapters (serial),
    since_day TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('entry', 'standby')),
    PRIMARY KEY (serial, since_day)
);

-- Art 21: suspensions, whole days; open-ended while to_day is NULL.
CREATE TABLE suspensions (
    contract_id TEXT NOT NULL REFERENCES contracts (id),
    from_day TEXT NOT NULL,
    to_day TEXT,
    CHECK (to_day IS NULL OR to_day >= from_day),
    PRIMARY KEY (contract_id, from_day)
);

-- Art 5-2: no update path changes the adapter an option covers, nor turns one kind of
-- contract into the other.
CREATE FUNCTION option_adapter_is_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.serial IS DISTINCT FROM NEW.serial OR OLD.kind IS DISTINCT FROM NEW.kind THEN
        RAISE EXCEPTION 'Art 5-2: the adapter of an Ultra Firewall Option contract cannot be changed';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER option_adapter_is_fixed
BEFORE UPDATE ON contracts
FOR EACH ROW EXECUTE FUNCTION option_adapter_is_fixed();
