//! The schema, as versioned migrations compiled into the binary. `migrate`
//! applies the missing ones in one transaction under an advisory lock, so
//! relays that start together never race: the second waits, then finds
//! nothing left to do. A database migrated by a newer relay is refused
//! rather than guessed at.

use tokio_postgres::Client;

use super::pg_err;
use crate::queue::StoreError;

/// `pg_advisory_xact_lock` key of migrations (the bytes of "shoprelay" folded
/// into an i64: any constant no other program uses).
const MIGRATION_LOCK: i64 = 0x73_686f_7072_656c;

/// One step of the schema: version, what it does, the SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "webhooks, dedup keys, deliveries",
        sql: r#"
-- One row per accepted webhook that has deliveries, until its last delivery
-- is done (completed or purged).
CREATE TABLE shoprelay_webhooks (
    id              bigint PRIMARY KEY,
    kind            text   NOT NULL,
    source          text   NOT NULL,
    topic           text   NOT NULL,
    shop_domain     text,
    webhook_id      text,
    event_id        text,
    api_version     text,
    triggered_at    text,
    dedup_id        text   NOT NULL,
    received_at_ms  bigint NOT NULL,
    body            bytea  NOT NULL
);
-- One row per accepted webhook within dedup_window: the key is the first 16
-- bytes of SHA-256(source NUL topic NUL dedup id), as the embedded store's.
CREATE TABLE shoprelay_dedup (
    key             bytea  PRIMARY KEY,
    webhook_id      bigint NOT NULL,
    accepted_at_ms  bigint NOT NULL
);
CREATE INDEX shoprelay_dedup_accepted ON shoprelay_dedup (accepted_at_ms);
-- One row per delivery of a webhook to a lane, pending or dead; a delivered
-- one is deleted.
CREATE TABLE shoprelay_deliveries (
    webhook_id          bigint   NOT NULL,
    slot                smallint NOT NULL,
    lane                text COLLATE "C" NOT NULL,
    targets             text[]   NOT NULL,
    -- when the next attempt is due
    due_ms              bigint   NOT NULL,
    -- when a claim may take it: due_ms, or the end of the lease holding it
    ready_ms            bigint   NOT NULL,
    attempts            integer  NOT NULL DEFAULT 0,
    first_attempt_at_ms bigint,
    events_done         integer  NOT NULL DEFAULT 0,
    last_error          text,
    last_status         integer,
    -- set when it is a dead letter
    dead_at_ms          bigint,
    dead_reason         text,
    -- the relay holding it and the claim's token; an outcome must show both
    lease_owner         text,
    lease_token         bigint,
    PRIMARY KEY (webhook_id, slot)
);
-- claims read it in order: oldest ready first, then by id
CREATE INDEX shoprelay_deliveries_ready ON shoprelay_deliveries (lane, ready_ms, webhook_id, slot)
    WHERE dead_at_ms IS NULL;
CREATE INDEX shoprelay_deliveries_dead ON shoprelay_deliveries (webhook_id, slot)
    WHERE dead_at_ms IS NOT NULL;
CREATE SEQUENCE shoprelay_webhook_ids;
CREATE SEQUENCE shoprelay_lease_tokens;
"#,
    },
    Migration {
        version: 2,
        name: "identity map",
        sql: r#"
-- MAPPING.md, Identity: kind is c (customer), o (order), r (a customer's
-- order), t (cart or checkout token), x (erased); seen_at_ms drives expiry.
CREATE TABLE shoprelay_identity (
    scope       text COLLATE "C" NOT NULL,
    kind        text NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       text NOT NULL,
    seen_at_ms  bigint NOT NULL,
    PRIMARY KEY (scope, kind, key)
);
CREATE INDEX shoprelay_identity_seen ON shoprelay_identity (seen_at_ms);
"#,
    },
    Migration {
        version: 3,
        name: "counts per lane",
        sql: r#"
-- Pending and dead deliveries per lane, so stats and /metrics never count the
-- backlog. Every statement that adds, buries, replays or removes deliveries
-- inserts its change here, in its own transaction (inserts only: writers
-- never wait on each other for it).
CREATE TABLE shoprelay_lane_deltas (
    lane     text COLLATE "C" NOT NULL,
    pending  bigint NOT NULL,
    dead     bigint NOT NULL
);
-- What the deltas add up to: a relay folds them in every second. The counts
-- are this table plus the deltas not folded yet, read in one snapshot.
CREATE TABLE shoprelay_lane_counts (
    lane     text COLLATE "C" PRIMARY KEY,
    pending  bigint NOT NULL,
    dead     bigint NOT NULL
);
INSERT INTO shoprelay_lane_counts (lane, pending, dead)
SELECT lane, count(*) FILTER (WHERE dead_at_ms IS NULL), count(*) FILTER (WHERE dead_at_ms IS NOT NULL)
  FROM shoprelay_deliveries GROUP BY lane;
-- In-flight deliveries by due time: with the ready index, a lane's oldest
-- due time in two index seeks.
CREATE INDEX shoprelay_deliveries_leased ON shoprelay_deliveries (lane, due_ms)
    WHERE lease_token IS NOT NULL AND dead_at_ms IS NULL;
"#,
    },
    Migration {
        version: 4,
        name: "bodies compressed with lz4",
        sql: r#"
-- A body (3.7 KB for an orders/create) is compressed as it is stored; with the
-- default (pglz) that was most of the database's CPU per accepted webhook
-- (20,000 bodies: pglz 58-88 us each, lz4 23-26 us, for 2.8 KB of WAL each
-- instead of 2.5 KB). Only a server built with lz4 (14 or later) can: others
-- keep pglz. Bodies stored before stay as they are.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE shoprelay_webhooks ALTER COLUMN body SET COMPRESSION lz4;
    END IF;
END
$$;
"#,
    },
];

/// The newest schema version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version before.
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// Applies the missing migrations, all in one transaction, holding the
/// migration lock until it commits.
pub async fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    // No NOTICE in the relay's log for "already exists, skipping".
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS shoprelay_schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_err)?;
    let from: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM shoprelay_schema_migrations",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    if from > latest() {
        return Err(StoreError::Backend(format!(
            "the database schema is at version {from}, newer than this relay knows ({}): upgrade the relay",
            latest()
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "migration {} ({}) failed: {}",
                m.version,
                m.name,
                super::one_line(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO shoprelay_schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(Migrated {
        from,
        to: latest().max(from),
    })
}
