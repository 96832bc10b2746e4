//! Many rows per statement: the writer's batch inserts its request rows and upserts its rollup
//! rows with multi-row `VALUES`, one statement for up to 64 rows. A statement has room for 4,
//! 8, 16, 32 or 64 rows; the rows a batch does not fill are left unbound, which SQLite reads
//! as NULL (sqlx binds only the values it is given, and clears a cached statement's bindings
//! before it runs it again), and the statement's `WHERE column1 IS NOT NULL` leaves them out,
//! so a table's rows cost one statement whatever their count (below 64), and only five texts
//! per table are ever prepared (sqlx caches statements by text, per connection). Every
//! statement is a round trip to the connection's thread, two thread wake-ups and a handful of
//! system calls, which was most of what a batch cost: exact-size statements (64, 16, 4 and 1
//! rows, several per table) took about twice as many (docs/benchmarks.md, "Fewer system calls
//! per batch"). An unfilled row is not free, though: SQLite clears every binding of a
//! statement before it runs again and walks each row of the `VALUES`. So the sizes double,
//! and a statement for more than four rows has at most about twice the rows it is given (a
//! batch of 17 request rows in a 64-row statement spent ~5k instructions per request on the
//! 47 empty ones).
//!
//! Several tables' statements can also go as one query ([`write_all`]: the rollups' tables),
//! and a whole transaction as two ([`write_transaction`]: the writer's batch, `BEGIN
//! IMMEDIATE` to `COMMIT`): sqlx binds a query's values statement after statement, so there
//! every value of a statement's empty rows is bound NULL rather than left unbound, but for
//! the last statement's (none with parameters follows it).

use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqliteConnection};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Rows a statement has room for, smallest first.
const SIZES: [usize; 5] = [4, 8, 16, 32, 64];

/// The most rows of one statement.
const MOST: usize = SIZES[SIZES.len() - 1];

/// A multi-row statement: `{head} SELECT * FROM (VALUES (…), …) WHERE column1 IS NOT NULL
/// {tail}`, `width` values per row. Its texts are built once, on first use, and kept: the
/// writer's statements are statics, so a batch neither formats SQL nor allocates for it.
#[derive(Debug)]
pub(crate) struct Rows {
    head: Cow<'static, str>,
    tail: Cow<'static, str>,
    width: usize,
    texts: [OnceLock<String>; SIZES.len()],
}

impl Rows {
    /// `head` is an insert with its columns, or the start of an update from the rows as a
    /// subquery; `tail` what follows the rows (an upsert's `ON CONFLICT`, the subquery's end).
    pub(crate) const fn new(head: &'static str, tail: &'static str, width: usize) -> Rows {
        Rows::of(Cow::Borrowed(head), Cow::Borrowed(tail), width)
    }

    /// [`Rows::new`] with texts built at run time (names that are constants, all the same).
    pub(crate) const fn of(head: Cow<'static, str>, tail: Cow<'static, str>, width: usize) -> Rows {
        Rows {
            head,
            tail,
            width,
            texts: [const { OnceLock::new() }; SIZES.len()],
        }
    }

    /// The text with room for `SIZES[slot]` rows.
    fn text(&self, slot: usize) -> &str {
        self.texts[slot].get_or_init(|| statement(&self.head, &self.tail, self.width, SIZES[slot]))
    }
}

/// One table's rows for [`write_all`]: its statement, the rows, and how a row binds, in the
/// order of the head's columns (an insert) or of `column1`, `column2`… as the head and tail
/// read them (an update from the rows as a subquery). The first value of every row must not
/// be NULL: it is a key in every table written so.
pub(crate) struct Table<'a, T, F> {
    statement: &'a Rows,
    rows: &'a [T],
    bind: F,
}

impl<'a, T, F> Table<'a, T, F>
where
    F: for<'q> Fn(Query<'q>, &'q T) -> Query<'q>,
{
    pub(crate) fn new(statement: &'a Rows, rows: &'a [T], bind: F) -> Self {
        Table {
            statement,
            rows,
            bind,
        }
    }
}

/// Several tables' rows, written together.
pub(crate) type Parts<'a, 'b> = &'a [&'b (dyn Part + Sync)];

/// A [`Table`] whatever its row type.
pub(crate) trait Part {
    fn statement(&self) -> &Rows;
    fn len(&self) -> usize;
    /// Binds the rows in `range`.
    fn bind<'q>(&'q self, query: Query<'q>, range: Range<usize>) -> Query<'q>;
}

impl<T, F> Part for Table<'_, T, F>
where
    F: for<'q> Fn(Query<'q>, &'q T) -> Query<'q>,
{
    fn statement(&self) -> &Rows {
        self.statement
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn bind<'q>(&'q self, mut query: Query<'q>, range: Range<usize>) -> Query<'q> {
        for row in &self.rows[range] {
            query = (self.bind)(query, row);
        }
        query
    }
}

/// Writes every part's rows. When each fits one statement, all of them go to SQLite's thread
/// as one query, one round trip (the rollups' tables): sqlx binds such a query's values
/// statement after statement, so every value of a statement's empty rows is bound NULL.
/// Otherwise each part goes alone, in statements of up to 64 rows, the empty rows left
/// unbound (NULL).
pub(crate) async fn write_all(
    tx: &mut SqliteConnection,
    parts: &[&(dyn Part + Sync)],
) -> Result<(), sqlx::Error> {
    if together(parts) {
        return one_query(tx, None, parts, None).await;
    }
    for part in present(parts) {
        for start in (0..part.len()).step_by(MOST) {
            let end = (start + MOST).min(part.len());
            let query = sqlx::query(part.statement().text(slot(end - start)));
            // The rest of the statement's rows stay unbound: NULL.
            part.bind(query, start..end).execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// Writes every part's rows in a transaction of its own on `tx`, which has none open (a
/// `Db::write_connection`), in two queries when each part fits one statement: `BEGIN
/// IMMEDIATE` and `first`'s statements, then `rest`'s and `COMMIT` (the writer's batch made
/// five round trips to SQLite's thread: BEGIN, the request rows, the rollups, the accounts'
/// states, COMMIT, each a wake-up of that thread and one back). Not one: sqlx caches a query
/// by its whole text, and a statement's text changes with its rows' slot, so a query of many
/// parts is prepared again (~1M instructions) for each new combination; `first` is the part
/// whose slot changes most (the request rows). Otherwise BEGIN, the parts as [`write_all`]
/// writes them, and COMMIT go apart. On an error the transaction may be left open: the
/// caller closes the connection, which rolls it back. Nothing to write begins nothing.
pub(crate) async fn write_transaction(
    tx: &mut SqliteConnection,
    first: &[&(dyn Part + Sync)],
    rest: &[&(dyn Part + Sync)],
) -> Result<(), sqlx::Error> {
    if present(first).chain(present(rest)).next().is_none() {
        return Ok(());
    }
    if fits(first) && fits(rest) {
        one_query(tx, Some("BEGIN IMMEDIATE"), first, None).await?;
        return one_query(tx, None, rest, Some("COMMIT")).await;
    }
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx).await?;
    write_all(tx, first).await?;
    write_all(tx, rest).await?;
    sqlx::query("COMMIT").execute(&mut *tx).await?;
    Ok(())
}

/// The parts that have rows.
fn present<'a>(
    parts: &'a [&'a (dyn Part + Sync)],
) -> impl Iterator<Item = &'a &'a (dyn Part + Sync)> {
    parts.iter().filter(|part| part.len() > 0)
}

/// Every part's statement, between `before` and `after` (statements without parameters), as
/// one query (each part fits one statement). Put the part with the most empty values last:
/// only its are left unbound.
async fn one_query(
    tx: &mut SqliteConnection,
    before: Option<&str>,
    parts: &[&(dyn Part + Sync)],
    after: Option<&str>,
) -> Result<(), sqlx::Error> {
    let texts = present(parts).map(|part| part.statement().text(slot(part.len())));
    let mut sql = String::new();
    for text in before.into_iter().chain(texts).chain(after) {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(text);
    }
    let mut query = sqlx::query(&sql);
    let last = present(parts).count().saturating_sub(1);
    for (i, part) in present(parts).enumerate() {
        query = part.bind(query, 0..part.len());
        // The last statement's empty rows stay unbound (NULL), as a statement's alone: no
        // statement with parameters follows it. Binding them costs ~250 instructions a value.
        if i < last {
            let empty = SIZES[slot(part.len())] - part.len();
            for _ in 0..empty * part.statement().width {
                query = query.bind(None::<i64>);
            }
        }
    }
    query.execute(&mut *tx).await?;
    Ok(())
}

/// Whether [`write_all`] sends `parts` as one query: more than one has rows, and each fits
/// one statement.
fn together(parts: &[&(dyn Part + Sync)]) -> bool {
    present(parts).count() > 1 && fits(parts)
}

/// Whether each part's rows fit one statement.
fn fits(parts: &[&(dyn Part + Sync)]) -> bool {
    present(parts).all(|part| part.len() <= MOST)
}

/// `bind` as it is, its type pinned to what a [`Table`] takes (a closure kept in a variable
/// to serve two tables is otherwise not inferred to take rows of any lifetime).
pub(crate) fn binder<T, F>(bind: F) -> F
where
    F: for<'a> Fn(Query<'a>, &'a T) -> Query<'a>,
{
    bind
}

/// The slot (index in [`SIZES`]) of a statement for `rows` rows (at most [`MOST`]).
fn slot(rows: usize) -> usize {
    SIZES
        .iter()
        .position(|size| *size >= rows)
        .unwrap_or(SIZES.len() - 1)
}

/// `{head} SELECT * FROM (VALUES (?, …), …) WHERE column1 IS NOT NULL {tail}` with `rows`
/// groups of `width` placeholders. (The `WHERE` is also what lets SQLite tell an upsert's
/// `ON CONFLICT` in `tail` from a join's `ON`.)
fn statement(head: &str, tail: &str, width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(", "));
    format!(
        "{head} SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL {tail}",
        vec![group; rows].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_has_a_group_of_placeholders_per_row() {
        assert_eq!(
            statement("INSERT INTO t (a, b)", "ON CONFLICT (a) DO NOTHING", 2, 3),
            "INSERT INTO t (a, b) SELECT * FROM (VALUES (?, ?), (?, ?), (?, ?)) \
             WHERE column1 IS NOT NULL ON CONFLICT (a) DO NOTHING"
        );
    }

    /// A connection to a fresh in-memory database holding `t (n, label)`.
    async fn labels_table() -> SqliteConnection {
        use sqlx::Connection;
        let mut db = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY, label TEXT)")
            .execute(&mut db)
            .await
            .unwrap();
        db
    }

    async fn write_labels(db: &mut SqliteConnection, rows: &[(i64, Option<String>)]) {
        static LABELS: Rows = Rows::new("INSERT INTO t (n, label)", "", 2);
        let table = Table::new(&LABELS, rows, |q, (n, label): &(i64, Option<String>)| {
            q.bind(*n).bind(label.as_deref())
        });
        write_all(db, &[&table]).await.unwrap();
    }

    async fn stored_labels(db: &mut SqliteConnection) -> Vec<(i64, Option<String>)> {
        sqlx::query_as("SELECT n, label FROM t ORDER BY n")
            .fetch_all(db)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_row_is_written_whatever_the_count() {
        // Each size exactly, one row more and one less; several statements; none at all.
        let boundaries = SIZES.iter().flat_map(|&size| [size - 1, size, size + 1]);
        for count in [0, 1, 103, 130].into_iter().chain(boundaries) {
            let count = count as i64;
            let mut db = labels_table().await;
            // Every third row's label is NULL: only a row whose first value is NULL is padding.
            let rows: Vec<(i64, Option<String>)> = (0..count)
                .map(|n| (n, (n % 3 != 0).then(|| format!("row {n}"))))
                .collect();
            write_labels(&mut db, &rows).await;
            assert_eq!(stored_labels(&mut db).await, rows, "{count} rows");
        }
    }

    #[tokio::test]
    async fn a_statement_run_again_with_fewer_rows_writes_only_those() {
        let mut db = labels_table().await;
        // 16 rows, then 5 through the same (cached) 16-row statement: the 11 rows it does not
        // bind the second time must not be the first time's.
        let first: Vec<(i64, Option<String>)> =
            (0..16).map(|n| (n, Some(format!("{n}")))).collect();
        let second: Vec<(i64, Option<String>)> = (100..105).map(|n| (n, None)).collect();
        write_labels(&mut db, &first).await;
        write_labels(&mut db, &second).await;
        let expected: Vec<(i64, Option<String>)> = first.into_iter().chain(second).collect();
        assert_eq!(stored_labels(&mut db).await, expected);
    }

    #[tokio::test]
    async fn an_upsert_adds_to_the_rows_it_meets() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
            .execute(&mut db)
            .await
            .unwrap();
        async fn upsert(db: &mut SqliteConnection, rows: Vec<(i64, i64)>) {
            static TOTALS: Rows = Rows::new(
                "INSERT INTO t (k, total)",
                "ON CONFLICT (k) DO UPDATE SET total = total + excluded.total",
                2,
            );
            let table = Table::new(&TOTALS, &rows, |q, (k, total): &(i64, i64)| {
                q.bind(*k).bind(*total)
            });
            write_all(db, &[&table]).await.unwrap();
        }
        upsert(&mut db, (0..20).map(|k| (k, 1)).collect()).await;
        upsert(&mut db, (10..30).map(|k| (k, 5)).collect()).await;
        let stored: Vec<(i64, i64)> = sqlx::query_as("SELECT k, total FROM t ORDER BY k")
            .fetch_all(&mut db)
            .await
            .unwrap();
        let expected: Vec<(i64, i64)> = (0..30)
            .map(|k| {
                (
                    k,
                    if k < 10 {
                        1
                    } else if k < 20 {
                        6
                    } else {
                        5
                    },
                )
            })
            .collect();
        assert_eq!(stored, expected);
    }

    #[tokio::test]
    async fn tables_written_together_hold_what_each_would_alone() {
        static LABELS: Rows = Rows::new("INSERT INTO t (n, label)", "", 2);
        static TOTALS: Rows = Rows::new(
            "INSERT INTO u (k, total)",
            "ON CONFLICT (k) DO UPDATE SET total = total + excluded.total",
            2,
        );
        // Each size and its neighbours, on both sides of the query, one table empty, and
        // more rows than one statement holds (each table on its own then).
        for (a, b) in [
            (1, 1),
            (3, 5),
            (4, 17),
            (16, 64),
            (7, 9),
            (31, 33),
            (5, 0),
            (0, 7),
            (63, 2),
            (65, 1),
        ] {
            let mut db = labels_table().await;
            sqlx::query("CREATE TABLE u (k INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
                .execute(&mut db)
                .await
                .unwrap();
            let labels: Vec<(i64, Option<String>)> = (0..a)
                .map(|n| (n, (n % 2 == 0).then(|| format!("row {n}"))))
                .collect();
            let totals: Vec<(i64, i64)> = (0..b).map(|k| (k, k * 10)).collect();
            let label = Table::new(&LABELS, &labels, |q, (n, label): &(i64, Option<String>)| {
                q.bind(*n).bind(label.as_deref())
            });
            let total = Table::new(&TOTALS, &totals, |q, (k, total): &(i64, i64)| {
                q.bind(*k).bind(*total)
            });
            let parts: [&(dyn Part + Sync); 2] = [&label, &total];
            let one_query = a > 0 && b > 0 && a <= 64 && b <= 64;
            assert_eq!(together(&parts), one_query, "{a} and {b} rows");
            write_all(&mut db, &parts).await.unwrap();
            assert_eq!(stored_labels(&mut db).await, labels, "{a}, {b}");
            let stored: Vec<(i64, i64)> = sqlx::query_as("SELECT k, total FROM u ORDER BY k")
                .fetch_all(&mut db)
                .await
                .unwrap();
            assert_eq!(stored, totals, "{a}, {b}");
        }
    }

    #[tokio::test]
    async fn a_transaction_of_its_own_writes_all_or_nothing() {
        static LABELS: Rows = Rows::new("INSERT INTO t (n, label)", "", 2);
        static TOTALS: Rows = Rows::new("INSERT INTO u (k, total)", "", 2);
        async fn write(
            db: &mut SqliteConnection,
            labels: &[(i64, Option<String>)],
            totals: &[(i64, i64)],
        ) -> Result<(), sqlx::Error> {
            let label = Table::new(&LABELS, labels, |q, (n, label): &(i64, Option<String>)| {
                q.bind(*n).bind(label.as_deref())
            });
            let total = Table::new(&TOTALS, totals, |q, (k, total): &(i64, i64)| {
                q.bind(*k).bind(*total)
            });
            write_transaction(db, &[&label], &[&total]).await
        }
        /// Whether the connection is outside any transaction (a BEGIN would fail inside one).
        async fn no_transaction_open(db: &mut SqliteConnection) -> bool {
            let outside = sqlx::query("BEGIN").execute(&mut *db).await.is_ok();
            if outside {
                sqlx::query("ROLLBACK").execute(&mut *db).await.unwrap();
            }
            outside
        }
        let mut db = labels_table().await;
        sqlx::query(
            "CREATE TABLE u (k INTEGER PRIMARY KEY, total INTEGER NOT NULL CHECK (total >= 0))",
        )
        .execute(&mut db)
        .await
        .unwrap();
        let labels: Vec<(i64, Option<String>)> =
            (0..5).map(|n| (n, Some(format!("{n}")))).collect();

        // Both tables in a transaction of two queries, committed.
        write(&mut db, &labels, &[(1, 10), (2, 20)]).await.unwrap();
        assert_eq!(stored_labels(&mut db).await, labels);
        assert!(no_transaction_open(&mut db).await);

        // Rows in the second query only: the first is the BEGIN alone.
        write(&mut db, &[], &[(5, 50)]).await.unwrap();
        assert!(no_transaction_open(&mut db).await);

        // More rows than a statement holds: BEGIN, the statements, COMMIT apart.
        let many: Vec<(i64, i64)> = (100..200).map(|k| (k, k)).collect();
        write(&mut db, &[], &many).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM u")
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(count, 103);
        assert!(no_transaction_open(&mut db).await);

        // A refused row in the second table: the first table's rows are in the same
        // transaction, which the writer rolls back by closing the connection.
        let more: Vec<(i64, Option<String>)> = (50..53).map(|n| (n, None)).collect();
        write(&mut db, &more, &[(3, -1)])
            .await
            .expect_err("a CHECK refuses -1");
        sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();
        assert_eq!(stored_labels(&mut db).await, labels);

        // Nothing to write begins nothing.
        write(&mut db, &[], &[]).await.unwrap();
        assert!(no_transaction_open(&mut db).await);
    }

    #[tokio::test]
    async fn a_query_run_again_with_fewer_rows_in_its_last_statement_writes_only_those() {
        static LABELS: Rows = Rows::new("INSERT INTO t (n, label)", "", 2);
        static TOTALS: Rows = Rows::new("INSERT INTO u (k, total)", "", 2);
        let mut db = labels_table().await;
        sqlx::query("CREATE TABLE u (k INTEGER PRIMARY KEY, total INTEGER NOT NULL)")
            .execute(&mut db)
            .await
            .unwrap();
        // The same cached query (16 rows of room in its last statement) twice: the 3 rows the
        // second run does not bind must not be the first run's.
        for (labels, totals) in [(0..3, 0..16), (10..13, 100..113)] {
            let labels: Vec<(i64, Option<String>)> = labels.map(|n| (n, None)).collect();
            let totals: Vec<(i64, i64)> = totals.map(|k| (k, k)).collect();
            let label = Table::new(&LABELS, &labels, |q, (n, label): &(i64, Option<String>)| {
                q.bind(*n).bind(label.as_deref())
            });
            let total = Table::new(&TOTALS, &totals, |q, (k, total): &(i64, i64)| {
                q.bind(*k).bind(*total)
            });
            write_all(&mut db, &[&label, &total]).await.unwrap();
        }
        let keys: Vec<i64> = sqlx::query_scalar("SELECT k FROM u ORDER BY k")
            .fetch_all(&mut db)
            .await
            .unwrap();
        let expected: Vec<i64> = (0..16).chain(100..113).collect();
        assert_eq!(keys, expected);
    }
}
