//! Many rows in one statement: the rows travel as one JSON array of arrays, bound as a single
//! text parameter, and the statement reads them from [`WITH_ROWS`]'s table `batch`, whose
//! column `r` holds each row as SQLite's binary JSON (`r ->> 0` is the row's first value). The
//! statement's text is the same whatever the number of rows, so it is prepared once and
//! cached, and a batch of any size is one call into the connection's thread instead of one per
//! row (docs/benchmarks.md, "The writer's batch in one statement").
//!
//! Each row is converted to binary JSON once (the `MATERIALIZED` table): reading thirty values
//! out of a row of text JSON would render and parse the row for each of them, which cost more
//! than binding the values one statement per row did.
//!
//! Values keep their SQL types: a JSON integer is read back as an INTEGER, a number with a
//! fraction or exponent as a REAL, a string as TEXT, `true`/`false` as 1/0 and `null` as NULL.

use serde::Serialize;

/// A JSON array of rows being written.
pub(crate) struct Rows {
    json: Vec<u8>,
    empty: bool,
}

impl Rows {
    pub(crate) fn new() -> Rows {
        Rows {
            json: b"[".to_vec(),
            empty: true,
        }
    }

    /// Starts a row; its values are added with [`Row::put`], and it ends when dropped.
    pub(crate) fn row(&mut self) -> Row<'_> {
        if !self.empty {
            self.json.push(b',');
        }
        self.empty = false;
        self.json.push(b'[');
        Row {
            json: &mut self.json,
            first: true,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.empty
    }

    /// The array, to bind as text (a blob would be read as SQLite's binary JSON).
    pub(crate) fn into_json(mut self) -> String {
        self.json.push(b']');
        // Valid UTF-8: serde_json writes it, and the brackets and commas are ASCII.
        String::from_utf8(self.json)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    }
}

/// One row of [`Rows`].
pub(crate) struct Row<'a> {
    json: &'a mut Vec<u8>,
    first: bool,
}

impl Row<'_> {
    /// Adds the next value: a number, a string, a bool, or an `Option` of one (`None` is NULL).
    /// A float that is not finite is written as NULL, as SQLite stores a NaN.
    pub(crate) fn put<T: Serialize + ?Sized>(&mut self, value: &T) -> &mut Self {
        if !self.first {
            self.json.push(b',');
        }
        self.first = false;
        // Writing a plain value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.json, value);
        self
    }
}

impl Drop for Row<'_> {
    fn drop(&mut self) {
        self.json.push(b']');
    }
}

/// What a statement starts with to read one [`Rows`] parameter as the table `batch(r)`.
pub(crate) const WITH_ROWS: &str =
    "WITH batch(r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?)) ";

/// `r ->> 0, r ->> 1, …` for `count` columns: the select list that reads a row of `batch`.
pub(crate) fn columns(count: usize) -> String {
    (0..count)
        .map(|i| format!("r ->> {i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_a_json_array_of_arrays() {
        let mut rows = Rows::new();
        rows.row()
            .put(&1i64)
            .put("a \"quoted\" name")
            .put(&None::<i64>);
        rows.row().put(&true).put(&0.5f64).put(&Some("x"));
        assert_eq!(
            rows.into_json(),
            r#"[[1,"a \"quoted\" name",null],[true,0.5,"x"]]"#
        );
        assert_eq!(Rows::new().into_json(), "[]");
    }

    #[tokio::test]
    async fn sqlite_reads_every_value_back_with_its_type() {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let mut rows = Rows::new();
        rows.row()
            .put(&i64::MAX)
            .put(&0.1f64)
            .put("tab\t\"quote\" é")
            .put(&true)
            .put(&None::<i64>);
        let sql = format!(
            "{WITH_ROWS}SELECT {c}, typeof(r ->> 0), typeof(r ->> 1), typeof(r ->> 4) FROM batch",
            c = columns(5)
        );
        let row: (i64, f64, String, bool, Option<i64>, String, String, String) =
            sqlx::query_as(&sql)
                .bind(rows.into_json())
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert_eq!(
            row,
            (
                i64::MAX,
                0.1,
                "tab\t\"quote\" é".to_owned(),
                true,
                None,
                "integer".to_owned(),
                "real".to_owned(),
                "null".to_owned()
            )
        );
    }

    #[test]
    fn a_float_that_is_not_finite_is_null() {
        let mut rows = Rows::new();
        rows.row().put(&f64::NAN).put(&f64::INFINITY);
        assert_eq!(rows.into_json(), "[[null,null]]");
    }
}
