"""The SQL of the store, one module per topic, both dialects side by side.

Each module holds `sqlite_*` functions (plain functions of a `sqlite3.Connection`, run on
the SQLite store's threads) and `pg_*` coroutines (of an `asyncpg.Connection`), with the
same arguments where they do the same thing; engine.store.sqlite and engine.store.postgres
name them in their `Dialect` tables. A write operation runs inside the transaction the
store opened for it: raising rolls it back.

SQLite: writes run in the one writer thread's `BEGIN IMMEDIATE` transaction (see
engine.store.sqlite), so a read-then-write here cannot interleave with another writer of
this process, and other processes wait on SQLite's file lock.
PostgreSQL: claims lock candidate rows with `FOR UPDATE SKIP LOCKED`, so concurrent
workers in any number of processes take disjoint rows without waiting on each other.
Lease times use the database clock (`now()`), so machines with skewed clocks still agree
on expiry. JSON goes in as text cast to jsonb (json for trigger instance payloads) and
comes out as text. `instances.pg_insert_alone` is the one operation run outside any
transaction.

    instances      trigger instances: group-committed inserts, claims, releases, reads
    decisions      enforcements, record_decisions, explain traces, queue stats
    executions     requested, claimed, started, heartbeaten, finished, canceled
    processes      the OS process an execution's attempt runs in
    subscriptions  outbound subscriptions
    deliveries     outbound deliveries: claims, attempts, redeliveries
    outbox         events and their deliveries, written with the change that causes them
    apikeys        API key records (hashes only)
    kv             the st2kv datastore's pairs
    rules          rules stored through the API
    columns        the columns each dialect reads and their rows as records; listed pages
"""
