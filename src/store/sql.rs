//! One ledger, two databases: the statements of the store are written once,
//! in the SQL that SQLite and PostgreSQL both speak, and run on either
//! through this module. A statement uses `?1`, `?2`, … for its parameters
//! (rewritten to `$1`, `$2`, … for PostgreSQL); values go in as [`Param`]s
//! and come back as [`Row`]s of [`Value`]s, so the store's logic (what a
//! page of orders does to the ledger, how a job settles) exists once.
//!
//! What differs between the two lives here and nowhere else:
//! - transactions: SQLite's are `BEGIN IMMEDIATE` (one writer at a time);
//!   PostgreSQL's are `REPEATABLE READ` (a snapshot; of two transactions
//!   that change one row, the second fails with SQLSTATE 40001), and one
//!   that loses such a conflict, a deadlock (40P01) or a race to insert one
//!   key (23505) runs again from the start. Every read-then-write of the
//!   store ends in a write to the rows it read (the order's row, the job's
//!   row, the lease row it locked), so two of them cannot both act on what
//!   one of them changed. (`SERIALIZABLE` was tried: a page of 100 orders
//!   reads enough rows that PostgreSQL widens its predicate locks to the
//!   whole table, and with a node's four connections nearly every page
//!   failed as a "pivot" against the job settles beside it.)
//! - statement caches (rusqlite's, and one of prepared statements per
//!   PostgreSQL connection);
//! - how a typed value is sent (PostgreSQL says what type it wants for each
//!   parameter; an integer goes as `int8`, `int4` or `bool` accordingly);
//! - [`Dialect`], for the few statements that cannot be written once.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql as PgToSql, Type};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// Which database a statement runs on, for the few that must differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter of a statement, borrowed from the caller.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(&'a str),
}

/// Anything the store binds to a statement.
pub(crate) trait ToParam: Sync {
    fn to_param(&self) -> Param<'_>;
}

impl ToParam for i64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(*self)
    }
}
impl ToParam for i32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for u32 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for usize {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}
impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Bool(*self)
    }
}
impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(f)),
            Param::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(b))),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

impl PgToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = |what: &str| -> BoxError {
            format!("the ledger sends {what} where PostgreSQL expects {ty}").into()
        };
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(mismatch("an integer")),
            },
            Param::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 => i64::from(b).to_sql(ty, out),
                Type::INT4 => i32::from(b).to_sql(ty, out),
                _ => Err(mismatch("a boolean")),
            },
            Param::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(mismatch("a number")),
            },
            Param::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.to_sql(ty, out)
                }
                _ => Err(mismatch("text")),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One row of a result.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// Column `i` as a `T`; an error names the column and what it held.
    pub fn get<T: FromValue>(&self, i: usize) -> anyhow::Result<T> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).map_err(|e| anyhow::anyhow!("ledger column {i}: {e} (found {v:?})"))
    }
}

impl Row {
    /// The row's values, in column order.
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }
}

/// What a [`Value`] can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            _ => Err("expected an integer".into()),
        }
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Result<Self, String> {
        u32::try_from(i64::from_value(v)?).map_err(|e| e.to_string())
    }
}
impl FromValue for usize {
    fn from_value(v: &Value) -> Result<Self, String> {
        usize::try_from(i64::from_value(v)?).map_err(|e| e.to_string())
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            _ => Err("expected a number".into()),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => Err("expected text".into()),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

macro_rules! words {
    ($($t:ty, $what:literal);*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Text(self.as_str())
            }
        }
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, String> {
                let word = String::from_value(v)?;
                <$t>::parse(&word).ok_or_else(|| format!("unknown {} {word:?} in the ledger", $what))
            }
        }
    )*};
}
words!(
    crate::outbox::state::OrderState, "order state";
    crate::outbox::state::JobState, "job state";
    super::JobKind, "job kind"
);

/// Rewrites `?N` to `$N` outside quoted text (PostgreSQL's placeholders).
fn to_pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '?' => out.push('$'),
                _ => out.push(c),
            },
        }
    }
    out
}

/// The server's own words for a PostgreSQL error (its `Display` says only
/// "db error"), never a connection string.
pub(crate) fn pg_error(e: postgres::Error) -> anyhow::Error {
    let text = super::pg::error_text(&e);
    anyhow::Error::new(PgFailure { text, error: e })
}

/// A PostgreSQL client error shown as `text` (the server's own words, and
/// what was being done), keeping the client's error itself for
/// [`is_closed`] and [`is_conflict`]: a connection the server closed (a
/// restart, a failover) must be told apart to be opened again.
#[derive(Debug)]
pub(crate) struct PgFailure {
    pub text: String,
    pub error: postgres::Error,
}

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// No `source`: `text` already says what the client's error says.
impl std::error::Error for PgFailure {}

/// The client's error in `e`'s chain, if any.
fn pg_client_error<'a>(c: &'a (dyn std::error::Error + 'static)) -> Option<&'a postgres::Error> {
    c.downcast_ref::<postgres::Error>()
        .or_else(|| c.downcast_ref::<PgFailure>().map(|f| &f.error))
}

/// Whether a PostgreSQL transaction lost to a concurrent one and may simply
/// run again: a row changed since its snapshot, a deadlock, or a key
/// another transaction inserted first (the next run reads it).
fn is_conflict(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        pg_client_error(c)
            .and_then(|e| e.code())
            .is_some_and(|code| {
                *code == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                    || *code == postgres::error::SqlState::UNIQUE_VIOLATION
                    || *code == postgres::error::SqlState::LOCK_NOT_AVAILABLE
            })
    })
}

/// Whether the connection itself is gone (the server ended the session:
/// restarted, or it found this node idle inside a transaction while the
/// node was frozen).
fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        pg_client_error(c).is_some_and(|e| {
            e.is_closed()
                || e.as_db_error()
                    .is_some_and(|d| d.code().code().starts_with("57P"))
        })
    })
}

/// How many times a connection of this process was found closed by the
/// server. A connection that has not been checked since the last such find
/// is checked before its next use ([`PgConn::check`]): a restart or failover
/// ends every session at once, and each connection finds out only when it
/// is next used.
static CLOSED_SEEN: AtomicU64 = AtomicU64::new(0);

/// How long a connection under suspicion has to answer a trivial query.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// After an error on a PostgreSQL connection: a connection the server
/// closed is opened again, and every other connection of the process is
/// checked before its next use. Whether a new connection was opened (the
/// error itself still goes to the caller, unless [`on_pg`] runs the call
/// again).
fn heal(pg: &mut PgConn, e: &anyhow::Error) -> bool {
    if !is_closed(e) {
        return false;
    }
    pg.checked = CLOSED_SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    pg.reopen().is_ok()
}

/// A call on a PostgreSQL connection that failed, and whether the server
/// may have carried out part of it: a transaction's COMMIT was sent, or a
/// statement outside a transaction was.
pub(crate) struct PgCallError {
    pub error: anyhow::Error,
    pub may_have_taken_effect: bool,
}

/// Runs one ledger call on a PostgreSQL connection by the one connection
/// policy: a connection under suspicion is checked first; a connection the
/// server closed is opened again ([`heal`]); and a call the server closed
/// the connection under without it having taken effect runs once more, on
/// the new connection. A call that may have taken effect is never run again
/// here: its caller decides, as after any ledger error.
pub(crate) fn on_pg<R>(
    pg: &mut PgConn,
    mut call: impl FnMut(&mut PgConn) -> Result<R, PgCallError>,
) -> anyhow::Result<R> {
    pg.check()?;
    let mut again = true;
    loop {
        match call(pg) {
            Ok(r) => return Ok(r),
            Err(f) => {
                let reopened = heal(pg, &f.error);
                if reopened && again && !f.may_have_taken_effect {
                    again = false;
                    continue;
                }
                return Err(f.error);
            }
        }
    }
}

/// Runs `f` where the synchronous PostgreSQL client may block. That client
/// drives its connection with a small runtime of its own, which must not be
/// started on a thread that is running tokio tasks: the ledger thread and
/// plain threads run `f` in place; a thread inside a runtime (a command's
/// own code, a report on the blocking pool) hands it to a scoped thread.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A PostgreSQL connection with its prepared statements.
pub(crate) struct PgConn {
    pub client: OwnClient,
    stmts: HashMap<String, postgres::Statement>,
    /// Opens the same connection again (see [`heal`]).
    reconnect: Reconnect,
    /// [`CLOSED_SEEN`] when this connection was last known to work.
    checked: u64,
}

pub(crate) type Reconnect = Box<dyn Fn() -> anyhow::Result<postgres::Client> + Send + Sync>;

impl PgConn {
    pub fn new(client: postgres::Client, reconnect: Reconnect) -> PgConn {
        PgConn {
            client: OwnClient(Some(client)),
            stmts: HashMap::new(),
            reconnect,
            checked: CLOSED_SEEN.load(Ordering::Relaxed),
        }
    }

    /// Before a call: if some connection of this process was found closed
    /// since this one was last known to work, asks the server a trivial
    /// query, and opens this connection again if it does not answer. The
    /// call then runs on a live connection instead of failing on a dead
    /// one; if it cannot be opened again, the call fails without running.
    /// (Reading what the server sent while the connection idled, without a
    /// round trip, finds nothing: the client's runtime learns that its
    /// socket is readable only while it waits.)
    fn check(&mut self) -> anyhow::Result<()> {
        let seen = CLOSED_SEEN.load(Ordering::Relaxed);
        if self.checked >= seen {
            return Ok(());
        }
        self.checked = seen;
        let client = &mut self.client;
        match off_runtime(move || client.is_valid(CHECK_TIMEOUT)) {
            Ok(()) => Ok(()),
            Err(_) => self.reopen(),
        }
    }

    /// Tests: this connection is not checked before its calls until it
    /// is found closed, so what a call does on a closed one shows.
    #[cfg(test)]
    pub(crate) fn skip_checks(&mut self) {
        self.checked = u64::MAX;
    }

    /// Opens this connection again.
    fn reopen(&mut self) -> anyhow::Result<()> {
        let reconnect = &self.reconnect;
        match off_runtime(reconnect) {
            Ok(client) => {
                self.client = OwnClient(Some(client));
                self.stmts.clear();
                tracing::warn!("the PostgreSQL ledger closed a connection; opened it again");
                Ok(())
            }
            Err(again) => {
                tracing::warn!(error = %format!("{again:#}"), "the PostgreSQL ledger closed a connection and cannot be reached again yet");
                Err(again.context(
                    "the PostgreSQL ledger closed this connection and cannot be reached again yet",
                ))
            }
        }
    }
}

/// A PostgreSQL client that closes off the runtime when dropped (closing
/// blocks on the client's own runtime, like every call: see [`off_runtime`]).
pub(crate) struct OwnClient(Option<postgres::Client>);

impl std::ops::Deref for OwnClient {
    type Target = postgres::Client;
    fn deref(&self) -> &postgres::Client {
        self.0
            .as_ref()
            .expect("a client is only taken when dropped")
    }
}

impl std::ops::DerefMut for OwnClient {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0
            .as_mut()
            .expect("a client is only taken when dropped")
    }
}

impl Drop for OwnClient {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// A connection to either ledger.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

/// How many times a PostgreSQL transaction that lost a conflict runs again
/// before the error is reported (each waits a little longer).
const CONFLICT_RETRIES: u32 = 30;

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `work` in one write transaction and commits it. On PostgreSQL a
    /// transaction that lost a conflict to another node runs again from the
    /// start, so `work` must do nothing but ledger statements.
    pub fn write<R: Send>(
        &mut self,
        mut work: impl FnMut(&mut Tx<'_>) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        match self {
            Conn::Sqlite(conn) => {
                let r = sqlite_write(conn, &mut work);
                r.map_err(|e| explain_full(conn, e))
            }
            Conn::Postgres(pg) => off_runtime(move || {
                let mut tries = 0;
                loop {
                    match on_pg(pg, |pg| pg_transaction(pg, false, &mut work)) {
                        Err(e) if tries < CONFLICT_RETRIES && is_conflict(&e) => {
                            tries += 1;
                            let jitter = u64::from(rand::random::<u8>() % 20);
                            std::thread::sleep(Duration::from_millis(
                                u64::from(tries.min(10)) * 5 + jitter,
                            ));
                        }
                        other => return other,
                    }
                }
            }),
        }
    }

    /// Runs `work` (statements that read only) in one consistent snapshot.
    pub fn read<R: Send>(
        &mut self,
        mut work: impl FnMut(&mut Tx<'_>) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        match self {
            Conn::Sqlite(conn) => {
                let tx = conn.unchecked_transaction()?;
                let r = work(&mut Tx::Sqlite(&tx))?;
                tx.commit()?;
                Ok(r)
            }
            Conn::Postgres(pg) => {
                off_runtime(move || on_pg(pg, |pg| pg_transaction(pg, true, &mut work)))
            }
        }
    }

    /// Runs one statement (or several that need not be atomic) outside an
    /// explicit transaction: each commits on its own.
    pub fn auto<R: Send>(
        &mut self,
        mut work: impl FnMut(&mut Tx<'_>) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        match self {
            Conn::Sqlite(conn) => {
                let r = work(&mut Tx::Sqlite(conn));
                r.map_err(|e| explain_full(conn, e))
            }
            Conn::Postgres(pg) => off_runtime(move || {
                on_pg(pg, |pg| {
                    let mut tx = Tx::PgAuto {
                        client: &mut pg.client,
                        stmts: &mut pg.stmts,
                        sent: false,
                    };
                    work(&mut tx).map_err(|error| PgCallError {
                        error,
                        // Preparing a statement changes nothing; running one
                        // outside a transaction may have committed it.
                        may_have_taken_effect: matches!(tx, Tx::PgAuto { sent: true, .. }),
                    })
                })
            }),
        }
    }
}

/// `work` in one SQLite write transaction, committed.
fn sqlite_write<R>(
    conn: &mut rusqlite::Connection,
    work: &mut impl FnMut(&mut Tx<'_>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let r = work(&mut Tx::Sqlite(&tx))?;
    tx.commit()?;
    Ok(r)
}

/// SQLite's own words for a full disk ("database or disk is full", twice
/// over through rusqlite) name neither the file nor what to do; this does
/// both. Other errors pass as they are.
pub(crate) fn explain_full(conn: &rusqlite::Connection, e: anyhow::Error) -> anyhow::Error {
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull
        )
    });
    if !full {
        return e;
    }
    let path = conn
        .path()
        .filter(|p| !p.is_empty())
        .unwrap_or("(in memory)");
    anyhow::anyhow!(
        "the disk holding {path} is full (SQLITE_FULL): nothing was written, nothing committed is lost; free space there (docs/OPERATIONS.md, \"The disk is full\")"
    )
}

/// One PostgreSQL transaction around `work`, committed: `REPEATABLE READ`
/// (a snapshot), read-only for reports.
fn pg_transaction<R>(
    pg: &mut PgConn,
    read_only: bool,
    work: &mut impl FnMut(&mut Tx<'_>) -> anyhow::Result<R>,
) -> Result<R, PgCallError> {
    // Until COMMIT is sent, nothing of the transaction can take effect.
    let before_commit = |error| PgCallError {
        error,
        may_have_taken_effect: false,
    };
    let tx = pg
        .client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(read_only)
        .start()
        .map_err(|e| before_commit(pg_error(e)))?;
    let mut tx = Tx::Postgres {
        tx,
        stmts: &mut pg.stmts,
    };
    let r = work(&mut tx).map_err(before_commit)?;
    if let Tx::Postgres { tx, .. } = tx {
        tx.commit().map_err(|e| PgCallError {
            error: pg_error(e),
            may_have_taken_effect: true,
        })?;
    }
    Ok(r)
}

/// Where statements run: a transaction, or (`auto`) the bare connection.
pub(crate) enum Tx<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres {
        tx: postgres::Transaction<'c>,
        stmts: &'c mut HashMap<String, postgres::Statement>,
    },
    PgAuto {
        client: &'c mut postgres::Client,
        stmts: &'c mut HashMap<String, postgres::Statement>,
        /// Whether a statement was sent to run (see [`PgCallError`]).
        sent: bool,
    },
}

fn pg_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn PgToSql + Sync)> {
    params.iter().map(|p| p as &(dyn PgToSql + Sync)).collect()
}

fn lite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let n = r.as_ref().column_count();
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        values.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Value::Text(crate::model::utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(Row(values))
}

fn pg_row(r: &postgres::Row) -> anyhow::Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::Real(v.into())),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => anyhow::bail!(
                "ledger column {} has PostgreSQL type {ty}, which the store does not read (cast it)",
                col.name()
            ),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl Tx<'_> {
    /// The prepared form of `sql` on PostgreSQL, from this connection's cache.
    fn pg_statement(&mut self, sql: &str) -> anyhow::Result<postgres::Statement> {
        let (stmts, prepared) = match self {
            Tx::Sqlite(_) => unreachable!("only called on PostgreSQL"),
            Tx::Postgres { tx, stmts } => {
                if let Some(s) = stmts.get(sql) {
                    return Ok(s.clone());
                }
                let prepared = tx.prepare(&to_pg_placeholders(sql));
                (stmts, prepared)
            }
            Tx::PgAuto { client, stmts, .. } => {
                if let Some(s) = stmts.get(sql) {
                    return Ok(s.clone());
                }
                let prepared = client.prepare(&to_pg_placeholders(sql));
                (stmts, prepared)
            }
        };
        let stmt = prepared
            .map_err(pg_error)
            .with_context(|| format!("preparing: {}", first_words(sql)))?;
        stmts.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Runs a statement; the number of rows it changed.
    pub fn exec(&mut self, sql: &str, params: &[&dyn ToParam]) -> anyhow::Result<usize> {
        let params: Vec<Param<'_>> = params.iter().map(|p| p.to_param()).collect();
        match self {
            Tx::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?),
            _ => {
                let stmt = self.pg_statement(sql)?;
                let args = pg_params(&params);
                let n = match self {
                    Tx::Postgres { tx, .. } => tx.execute(&stmt, &args),
                    Tx::PgAuto { client, sent, .. } => {
                        *sent = true;
                        client.execute(&stmt, &args)
                    }
                    Tx::Sqlite(_) => unreachable!(),
                }
                .map_err(pg_error)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs a query; every row.
    pub fn query(&mut self, sql: &str, params: &[&dyn ToParam]) -> anyhow::Result<Vec<Row>> {
        let params: Vec<Param<'_>> = params.iter().map(|p| p.to_param()).collect();
        match self {
            Tx::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), lite_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<Row>>>()?)
            }
            _ => {
                let stmt = self.pg_statement(sql)?;
                let args = pg_params(&params);
                let rows = match self {
                    Tx::Postgres { tx, .. } => tx.query(&stmt, &args),
                    Tx::PgAuto { client, sent, .. } => {
                        *sent = true;
                        client.query(&stmt, &args)
                    }
                    Tx::Sqlite(_) => unreachable!(),
                }
                .map_err(pg_error)?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// Runs a query; its first row, if any.
    pub fn query_opt(&mut self, sql: &str, params: &[&dyn ToParam]) -> anyhow::Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs a query that returns one row.
    pub fn query_one(&mut self, sql: &str, params: &[&dyn ToParam]) -> anyhow::Result<Row> {
        self.query_opt(sql, params)?
            .with_context(|| format!("no row from: {}", first_words(sql)))
    }

    /// The first column of a one-row query.
    pub fn value<T: FromValue>(&mut self, sql: &str, params: &[&dyn ToParam]) -> anyhow::Result<T> {
        self.query_one(sql, params)?.get(0)
    }
}

fn first_words(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(8).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            to_pg_placeholders("SELECT '?1', \"a?\" FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', \"a?\" FROM t WHERE a = $1 AND b = $12"
        );
    }

    #[test]
    fn values_read_back_as_the_store_asks() {
        assert_eq!(i64::from_value(&Value::Int(7)), Ok(7));
        assert_eq!(Option::<i64>::from_value(&Value::Null), Ok(None));
        assert!(i64::from_value(&Value::Text("7".into())).is_err());
        assert!(u32::from_value(&Value::Int(-1)).is_err());
        assert_eq!(bool::from_value(&Value::Int(1)), Ok(true));
    }
}
