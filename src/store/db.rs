//! The two databases the store runs on, behind one small interface: SQLite (a file) and
//! PostgreSQL (a server, `postgres://...`).
//!
//! Every statement is written once, in SQLite's dialect with numbered parameters (`?1`), plus
//! two markers: `{now}` (the database's clock, in Unix seconds) and `{skip_locked}` (`FOR
//! UPDATE SKIP LOCKED` where rows can be locked). [`Dialect::sql`] turns a statement into the
//! database's own; [`Dialect::schema`] does the same for the schema (types, identity keys).
//! Values travel as [`Value`]: integers, reals, text and null; booleans are integers in both.

use std::borrow::Cow;
use std::cell::RefCell;

/// A parameter or a column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// What can be passed as a parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_value!(i64, i32, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for Cow<'_, str> {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, T::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// The parameters of a statement: `args![a, b, c]`.
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$($crate::store::db::ToValue::to_value(&$e)),*][..]
    };
}
pub(crate) use args;

/// What can be read from a column.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
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

/// One result row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` (from 0) as `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, DbError> {
        let v = self.0.get(i).ok_or_else(|| DbError::Column {
            column: i,
            message: format!("the row has only {} columns", self.0.len()),
        })?;
        T::from_value(v).map_err(|message| DbError::Column { column: i, message })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error("column {column}: {message}")]
    Column { column: usize, message: String },
}

/// Which SQL a database speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A statement written for SQLite (with the `{now}` and `{skip_locked}` markers) in this
    /// dialect.
    pub fn sql<'a>(self, sql: &'a str) -> Cow<'a, str> {
        let now = match self {
            Dialect::Sqlite => "((julianday('now') - 2440587.5) * 86400.0)",
            Dialect::Postgres => "(extract(epoch FROM clock_timestamp())::float8)",
        };
        let skip_locked = match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let mut out: Cow<'a, str> = Cow::Borrowed(sql);
        if sql.contains('{') {
            out = Cow::Owned(
                sql.replace("{now}", now)
                    .replace("{skip_locked}", skip_locked),
            );
        }
        if self == Dialect::Postgres && out.contains('?') {
            // `?N` → `$N` (no statement of the store has a `?` inside a literal).
            out = Cow::Owned(out.replace('?', "$"));
        }
        out
    }

    /// The schema (written for SQLite) in this dialect: 64-bit integers, double precision
    /// reals, identity keys, and no `WITHOUT ROWID`.
    pub fn schema(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => sql.to_string(),
            Dialect::Postgres => sql
                .replace(
                    "INTEGER PRIMARY KEY AUTOINCREMENT",
                    "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
                )
                .replace(" INTEGER", " BIGINT")
                .replace(" REAL", " DOUBLE PRECISION")
                .replace(") WITHOUT ROWID;", ");"),
        }
    }
}

/// An open connection.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(RefCell<postgres::Client>),
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, args: &[Value]) -> Result<u64, DbError> {
        let sql = self.dialect().sql(sql);
        match self {
            Db::Sqlite(c) => Ok(c.execute(&sql, rusqlite::params_from_iter(args))? as u64),
            Db::Postgres(c) => Ok(c.borrow_mut().execute(sql.as_ref(), &pg_args(args))?),
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>, DbError> {
        let sql = self.dialect().sql(sql);
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(&sql)?;
                let n = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(n);
                    for i in 0..n {
                        row.push(sqlite_value(r.get_ref(i)?, i)?);
                    }
                    out.push(Row(row));
                }
                Ok(out)
            }
            Db::Postgres(c) => c
                .borrow_mut()
                .query(sql.as_ref(), &pg_args(args))?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// The first row of a query, if any.
    pub fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Statements without parameters, separated by `;`.
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(c) => Ok(c.borrow_mut().batch_execute(sql)?),
        }
    }

    /// A write transaction. On SQLite `BEGIN IMMEDIATE`: the write lock is taken now (waiting
    /// up to the busy timeout), so it never fails half-way for another writer.
    pub fn write(&self) -> Result<Tx<'_>, DbError> {
        self.batch(match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        })?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    /// A read transaction: one consistent view for several queries.
    pub fn read(&self) -> Result<Tx<'_>, DbError> {
        self.batch(match self {
            Db::Sqlite(_) => "BEGIN DEFERRED",
            Db::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// An open transaction; rolled back when dropped without [`Tx::commit`].
pub struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        self.db.batch("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.batch("ROLLBACK");
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>, column: usize) -> Result<Value, DbError> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => {
            Value::Text(String::from_utf8(t.to_vec()).map_err(|e| DbError::Column {
                column,
                message: e.to_string(),
            })?)
        }
        ValueRef::Blob(_) => {
            return Err(DbError::Column {
                column,
                message: "a blob, where the store never writes one".into(),
            })
        }
    })
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(format!("cannot send the integer {i} as {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("cannot send the number {f} as {ty}").into()),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_args(args: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
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
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref other => {
                return Err(DbError::Column {
                    column: i,
                    message: format!("unexpected type {other} of column `{}`", c.name()),
                })
            }
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// Whether `db` names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `db` for a message: its secrets hidden ([`crate::secrets::redact`]), and the password of
/// a `USER:PASSWORD@HOST` without a scheme too.
pub fn shown_location(db: &str) -> String {
    let shown = crate::secrets::redact(db);
    if shown.contains("://") {
        return shown;
    }
    match (shown.find(':'), shown.rfind('@')) {
        (Some(c), Some(at)) if c < at => {
            format!("{}:{}{}", &shown[..c], crate::secrets::MASK, &shown[at..])
        }
        _ => shown,
    }
}

/// What a store location (`--db`) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// `postgres://...` or `postgresql://...`.
    Postgres(&'a str),
    /// A SQLite file.
    File(&'a str),
}

impl<'a> Location<'a> {
    /// `db` as a PostgreSQL URL or a SQLite file path. Anything else is an error saying why
    /// (another URL scheme, `USER:PASSWORD@HOST`, a `key=value` connection string, nothing),
    /// so that a mistyped server never becomes a new SQLite file named after it.
    pub fn parse(db: &'a str) -> Result<Location<'a>, String> {
        if is_postgres_url(db) {
            return Ok(Location::Postgres(db));
        }
        let t = db.trim();
        if t.is_empty() {
            return Err("it is empty".into());
        }
        let lower = t.to_ascii_lowercase();
        if let Some((scheme, _)) = t.split_once("://") {
            return Err(format!(
                "`{scheme}://` is not a store evoengineer knows (PostgreSQL: postgres://)"
            ));
        }
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            return Err("a PostgreSQL URL starts with postgres:// (lowercase)".into());
        }
        if let Some((before, _)) = t.split_once('@') {
            if before.contains(':') && !before.contains('/') {
                return Err("it looks like USER:PASSWORD@HOST without postgres:// in front".into());
            }
        }
        const LIBPQ_KEYS: [&str; 6] = [
            "host=",
            "hostaddr=",
            "port=",
            "dbname=",
            "user=",
            "password=",
        ];
        if LIBPQ_KEYS.iter().any(|k| lower.starts_with(k)) {
            return Err(
                "a key=value connection string; give the PostgreSQL server as a postgres:// URL"
                    .into(),
            );
        }
        Ok(Location::File(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_translate_to_postgres() {
        let s = "UPDATE work SET lease_until = {now} + ?3 WHERE id = (SELECT id FROM work LIMIT 1 {skip_locked}) AND claim = ?12";
        let pg = Dialect::Postgres.sql(s);
        assert!(
            pg.contains("$3") && pg.contains("$12") && !pg.contains('?'),
            "{pg}"
        );
        assert!(pg.contains("FOR UPDATE SKIP LOCKED"), "{pg}");
        assert!(pg.contains("clock_timestamp"), "{pg}");
        let lite = Dialect::Sqlite.sql(s);
        assert!(lite.contains("?3") && !lite.contains("SKIP LOCKED") && !lite.contains('{'));
        assert!(matches!(Dialect::Sqlite.sql("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_schema_translates_to_postgres() {
        let all = format!(
            "{}{}{}",
            super::super::schema::CREATE_V1,
            super::super::schema::MIGRATE_V2,
            super::super::schema::MIGRATE_V3
        );
        let pg = Dialect::Postgres.schema(&all);
        for sqlite_only in ["AUTOINCREMENT", "WITHOUT ROWID", " INTEGER", " REAL"] {
            assert!(!pg.contains(sqlite_only), "{sqlite_only} left in {pg}");
        }
        assert!(pg.contains("id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"));
        assert!(pg.contains("p50_us              DOUBLE PRECISION"));
    }

    #[test]
    fn locations_are_a_postgres_url_or_a_path() {
        assert!(is_postgres_url("postgresql://x") && !is_postgres_url("runs.db"));
        for ok in [
            "runs.db",
            "./a/b.db",
            "/tmp/x y/runs.db",
            "C:\\runs.db",
            "./a:b@c.db",
        ] {
            assert_eq!(Location::parse(ok), Ok(Location::File(ok)));
        }
        let pg = "postgres://evo:hunter2@db.example:5432/runs";
        assert_eq!(Location::parse(pg), Ok(Location::Postgres(pg)));
        for bad in [
            "",
            "  ",
            "mysql://x",
            "sqlite:///tmp/a.db",
            "Postgres://h/db",
            "postgres:h/db",
            "user:pass@host",
            "user:pass@host/db",
            "host=db.example password=hunter2 dbname=evo",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(shown_location("evo:hunter2@db-host"), "evo:***@db-host");
        assert_eq!(shown_location("mysql://u:hunter2@h/x"), "mysql://u:***@h/x");
        assert_eq!(
            shown_location("host=h password=hunter2"),
            "host=h password=***"
        );
    }
}
