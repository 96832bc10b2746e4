//! Many rows per statement: the writer's batch inserts its request rows and upserts its rollup
//! rows with multi-row `VALUES`, cut into statements of 64, 16, 4 and 1 rows. Each of those four
//! texts is prepared once per connection (sqlx caches statements by text), and a batch of n rows
//! costs a handful of statements instead of n. Every statement is a round trip to the
//! connection's thread (two thread wake-ups), which was most of what a batch cost.

use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqliteConnection};

pub(crate) type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Rows per statement, largest first; the last is 1, so any count is covered.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// Runs `{head} VALUES (…), … {tail}` for all of `rows`, `width` values per row, which `bind`
/// binds in the order of `head`'s columns.
pub(crate) async fn insert<T>(
    tx: &mut SqliteConnection,
    head: &str,
    tail: &str,
    width: usize,
    rows: &[T],
    bind: impl for<'a> Fn(Query<'a>, &'a T) -> Query<'a>,
) -> Result<(), sqlx::Error> {
    let mut texts: [Option<String>; CHUNKS.len()] = Default::default();
    let mut rest = rows;
    while !rest.is_empty() {
        let (slot, size) = CHUNKS
            .iter()
            .enumerate()
            .find(|(_, size)| **size <= rest.len())
            .map_or((CHUNKS.len() - 1, 1), |(slot, size)| (slot, *size));
        let (chunk, after) = rest.split_at(size);
        let sql = texts[slot].get_or_insert_with(|| statement(head, tail, width, size));
        let mut query = sqlx::query(sql.as_str());
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(&mut *tx).await?;
        rest = after;
    }
    Ok(())
}

/// `{head} VALUES (?, …), … {tail}` with `rows` groups of `width` placeholders.
fn statement(head: &str, tail: &str, width: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; width].join(", "));
    format!("{head} VALUES {} {tail}", vec![group; rows].join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_has_a_group_of_placeholders_per_row() {
        assert_eq!(
            statement("INSERT INTO t (a, b)", "ON CONFLICT (a) DO NOTHING", 2, 3),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT (a) DO NOTHING"
        );
    }

    #[tokio::test]
    async fn every_row_is_written_whatever_the_count() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY, label TEXT)")
            .execute(&mut db)
            .await
            .unwrap();
        // 64 + 16 + 16 + 4 + 1 + 1 + 1: every statement size, and the same one again.
        let rows: Vec<(i64, String)> = (0..103).map(|n| (n, format!("row {n}"))).collect();
        insert(
            &mut db,
            "INSERT INTO t (n, label)",
            "",
            2,
            &rows,
            |q, (n, label)| q.bind(*n).bind(label.as_str()),
        )
        .await
        .unwrap();
        let stored: Vec<(i64, String)> = sqlx::query_as("SELECT n, label FROM t ORDER BY n")
            .fetch_all(&mut db)
            .await
            .unwrap();
        assert_eq!(stored, rows);
    }
}
