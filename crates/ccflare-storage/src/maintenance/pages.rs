//! Reading rows straight from the pages of a database file, for a table whose b-tree SQLite
//! cannot walk: when the root page or an interior page is damaged, SQLite cannot reach the
//! leaves below it, though the leaves themselves, which hold every row, are intact. This
//! reads every page of the file, keeps the table-leaf pages that are not on the freelist (so
//! rows deleted by retention do not come back), decodes their cells (with overflow chains) in
//! SQLite's documented file format (<https://www.sqlite.org/fileformat2.html>), and keeps the
//! records whose shape fits the table: column count, NOT NULL columns and storage classes.
//! Rows of another table cannot fit a 28-column `requests`, nor a request row `accounts`.
//!
//! Pure reading of bytes: no SQLite, and nothing here writes. Every length and page number
//! read from the file is checked before use; a cell that does not decode is skipped.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// One stored value, by SQLite storage class.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A column's type affinity, from its declared type (SQLite's rules, §3.1 of datatype3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    pub(crate) fn of(declared: &str) -> Affinity {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("INT") {
            Affinity::Integer
        } else if ["CHAR", "CLOB", "TEXT"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Affinity::Text
        } else if declared.contains("BLOB") || declared.is_empty() {
            Affinity::Blob
        } else if ["REAL", "FLOA", "DOUB"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

/// What a table's rows look like on disk.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) affinity: Affinity,
    /// NOT NULL.
    pub(crate) not_null: bool,
    /// Has a DEFAULT, so a record written before the column was added may lack it.
    pub(crate) has_default: bool,
    /// The INTEGER PRIMARY KEY: the rowid itself, stored in the record as NULL.
    pub(crate) rowid_alias: bool,
}

/// Whether a record can be a row of a table with these columns.
pub(crate) fn fits(columns: &[Column], values: &[Value]) -> bool {
    if values.is_empty() || values.len() > columns.len() {
        return false;
    }
    columns.iter().enumerate().all(|(i, column)| {
        let Some(value) = values.get(i) else {
            // A record written before ALTER TABLE ADD COLUMN ends early.
            return !column.not_null || column.has_default;
        };
        if column.rowid_alias {
            return *value == Value::Null;
        }
        match (value, column.affinity) {
            (Value::Null, _) => !column.not_null,
            (_, Affinity::Blob) => true,
            (Value::Integer(_), Affinity::Text) => false,
            (Value::Integer(_), _) => true,
            (Value::Real(_), affinity) => affinity != Affinity::Text,
            (Value::Text(_), affinity) => affinity == Affinity::Text,
            (Value::Blob(_), _) => false,
        }
    })
}

/// One row found on a leaf page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    pub(crate) rowid: i64,
    pub(crate) values: Vec<Value>,
}

/// An open database file, read page by page.
pub(crate) struct PageFile {
    file: File,
    page_size: usize,
    /// The page size less the bytes each page reserves at its end.
    usable: usize,
    pages: u32,
    free: HashSet<u32>,
}

impl PageFile {
    /// Reads the file header and the freelist. Fails when the header is not SQLite's.
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<PageFile> {
        let mut file = File::open(path)?;
        let mut header = [0u8; 100];
        file.read_exact(&mut header)?;
        if &header[..16] != b"SQLite format 3\0" {
            return Err(invalid("not an SQLite file"));
        }
        let page_size = match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65_536,
            size if size >= 512 && size.is_power_of_two() => usize::from(size),
            _ => return Err(invalid("bad page size")),
        };
        let usable = page_size - usize::from(header[20]);
        if usable < 480 {
            return Err(invalid("bad reserved size"));
        }
        let length = file.metadata()?.len();
        let pages = u32::try_from(length / page_size as u64).unwrap_or(u32::MAX);
        let mut page_file = PageFile {
            file,
            page_size,
            usable,
            pages,
            free: HashSet::new(),
        };
        page_file.read_freelist(be32(&header, 32));
        Ok(page_file)
    }

    pub(crate) fn pages(&self) -> u32 {
        self.pages
    }

    /// The freelist's trunk pages and the leaf pages they list. A damaged trunk ends the walk:
    /// what it would have listed is then scanned like any page, and may bring back rows that
    /// were deleted (the price of not losing live ones).
    fn read_freelist(&mut self, first_trunk: u32) {
        let mut trunk = first_trunk;
        while trunk != 0 && trunk <= self.pages && self.free.insert(trunk) {
            let Ok(page) = self.read(trunk) else { return };
            let count = be32(&page, 4) as usize;
            if count > (self.usable - 8) / 4 {
                return;
            }
            for i in 0..count {
                self.free.insert(be32(&page, 8 + 4 * i));
            }
            trunk = be32(&page, 0);
        }
    }

    fn read(&mut self, page: u32) -> std::io::Result<Vec<u8>> {
        let mut bytes = vec![0; self.page_size];
        self.file
            .seek(SeekFrom::Start(u64::from(page - 1) * self.page_size as u64))?;
        self.file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// The rows on pages `first..first + count` that fit `columns`. Page 1 (the schema) and
    /// free pages are skipped; so is any page that is not a table leaf.
    pub(crate) fn rows(
        &mut self,
        first: u32,
        count: u32,
        columns: &[Column],
    ) -> std::io::Result<Vec<Found>> {
        let mut found = Vec::new();
        let last = first
            .saturating_add(count)
            .min(self.pages.saturating_add(1));
        for page in first.max(2)..last {
            if self.free.contains(&page) {
                continue;
            }
            let bytes = self.read(page)?;
            if bytes[0] != 0x0d {
                continue;
            }
            for cell in self.cells(&bytes) {
                if fits(columns, &cell.values) {
                    found.push(cell);
                }
            }
        }
        Ok(found)
    }

    /// The cells of a table-leaf page that decode.
    fn cells(&mut self, page: &[u8]) -> Vec<Found> {
        let count = usize::from(u16::from_be_bytes([page[3], page[4]]));
        if 8 + 2 * count > self.usable {
            return Vec::new();
        }
        (0..count)
            .filter_map(|i| {
                let at = usize::from(u16::from_be_bytes([page[8 + 2 * i], page[9 + 2 * i]]));
                self.cell(page, at)
            })
            .collect()
    }

    fn cell(&mut self, page: &[u8], at: usize) -> Option<Found> {
        let page = page.get(..self.usable)?;
        let mut offset = at;
        let payload = usize::try_from(varint(page, &mut offset)?).ok()?;
        // A payload longer than every page of the file together is garbage: refuse it before
        // walking (and gathering) overflow pages for it.
        if payload > (self.pages as usize).saturating_mul(self.usable) {
            return None;
        }
        let rowid = varint(page, &mut offset)?;
        // How much of the payload is on this page (fileformat2 §1.6).
        let usable = self.usable;
        let max_local = usable - 35;
        let local = if payload <= max_local {
            payload
        } else {
            let min_local = (usable - 12) * 32 / 255 - 23;
            let k = min_local + (payload - min_local) % (usable - 4);
            if k <= max_local { k } else { min_local }
        };
        let mut bytes = page.get(offset..offset.checked_add(local)?)?.to_vec();
        if local < payload {
            let mut next = be32(page.get(offset + local..offset + local + 4)?, 0);
            let mut hops = 0u32;
            while bytes.len() < payload {
                if next < 2 || next > self.pages || hops > self.pages {
                    return None;
                }
                hops += 1;
                let overflow = self.read(next).ok()?;
                let take = (payload - bytes.len()).min(usable - 4);
                bytes.extend_from_slice(overflow.get(4..4 + take)?);
                next = be32(&overflow, 0);
            }
        }
        Some(Found {
            rowid,
            values: record(&bytes)?,
        })
    }
}

/// Decodes a record: a header of serial types, then the values (fileformat2 §2.1).
pub(crate) fn record(bytes: &[u8]) -> Option<Vec<Value>> {
    let mut offset = 0;
    let header_size = usize::try_from(varint(bytes, &mut offset)?).ok()?;
    if header_size > bytes.len() || header_size < offset {
        return None;
    }
    let mut types = Vec::new();
    while offset < header_size {
        types.push(varint(bytes, &mut offset)?);
    }
    if offset != header_size {
        return None;
    }
    let mut body = header_size;
    let mut values = Vec::with_capacity(types.len());
    for serial in types {
        let size = match serial {
            0 | 8 | 9 => 0,
            1..=4 => serial as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return None,
            n if n < 0 => return None,
            n => usize::try_from((n - 12) / 2).ok()?,
        };
        let data = bytes.get(body..body.checked_add(size)?)?;
        body += size;
        values.push(match serial {
            0 => Value::Null,
            8 => Value::Integer(0),
            9 => Value::Integer(1),
            1..=6 => {
                // Big-endian two's complement, sign-extended from its width.
                let mut value: i64 = if data[0] & 0x80 != 0 { -1 } else { 0 };
                for byte in data {
                    value = (value << 8) | i64::from(*byte);
                }
                Value::Integer(value)
            }
            7 => Value::Real(f64::from_be_bytes(data.try_into().ok()?)),
            n if n % 2 == 0 => Value::Blob(data.to_vec()),
            _ => Value::Text(String::from_utf8(data.to_vec()).ok()?),
        });
    }
    (body == bytes.len()).then_some(values)
}

/// SQLite's variable-length integer: 1 to 9 bytes, big-endian, 7 bits a byte but the ninth.
fn varint(bytes: &[u8], offset: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *bytes.get(*offset)?;
        *offset += 1;
        if i == 8 {
            return Some(((value << 8) | u64::from(byte)) as i64);
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some(value as i64);
        }
    }
    None
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn invalid(reason: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(affinity: Affinity, not_null: bool) -> Column {
        Column {
            affinity,
            not_null,
            has_default: false,
            rowid_alias: false,
        }
    }

    #[test]
    fn records_decode_every_storage_class() {
        // Header: size 9, then NULL, int8 -2, int16 300, zero, one, text "hi", real, blob 1.
        let mut bytes = vec![9, 0, 1, 2, 8, 9, 17, 7, 14];
        bytes.extend_from_slice(&[0xfe]);
        bytes.extend_from_slice(&300i16.to_be_bytes());
        bytes.extend_from_slice(b"hi");
        bytes.extend_from_slice(&1.5f64.to_be_bytes());
        bytes.push(0xab);
        assert_eq!(
            record(&bytes),
            Some(vec![
                Value::Null,
                Value::Integer(-2),
                Value::Integer(300),
                Value::Integer(0),
                Value::Integer(1),
                Value::Text("hi".into()),
                Value::Real(1.5),
                Value::Blob(vec![0xab]),
            ])
        );
        // A record whose values run past its end, or that leaves bytes over, is not one.
        assert_eq!(record(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(record(&longer), None);
    }

    #[test]
    fn varints_take_up_to_nine_bytes() {
        let mut at = 0;
        assert_eq!(varint(&[0x81, 0x00], &mut at), Some(128));
        assert_eq!(at, 2);
        let mut at = 0;
        assert_eq!(varint(&[0xff; 9], &mut at), Some(-1));
        assert_eq!(at, 9);
        assert_eq!(varint(&[0x81], &mut 0), None);
    }

    #[test]
    fn a_record_fits_only_its_own_shape() {
        let table = [
            Column {
                rowid_alias: true,
                ..column(Affinity::Integer, false)
            },
            column(Affinity::Text, true),
            column(Affinity::Real, true),
            Column {
                has_default: true,
                ..column(Affinity::Integer, true)
            },
        ];
        let row = |values: Vec<Value>| fits(&table, &values);
        let name = || Value::Text("work".into());
        assert!(row(vec![
            Value::Null,
            name(),
            Value::Real(0.5),
            Value::Integer(3)
        ]));
        // REAL columns hold integral values as integers on disk.
        assert!(row(vec![
            Value::Null,
            name(),
            Value::Integer(2),
            Value::Integer(3)
        ]));
        // A record from before the last column was added (it has a default).
        assert!(row(vec![Value::Null, name(), Value::Real(0.5)]));
        assert!(!row(vec![Value::Null, name()]));
        // The rowid alias is stored as NULL; NOT NULL holds; text is not a number.
        assert!(!row(vec![Value::Integer(1), name(), Value::Real(0.5)]));
        assert!(!row(vec![Value::Null, Value::Null, Value::Real(0.5)]));
        assert!(!row(vec![Value::Null, name(), name()]));
        assert!(!row(vec![
            Value::Null,
            name(),
            Value::Real(0.5),
            Value::Integer(3),
            Value::Null
        ]));
    }

    #[test]
    fn affinities_follow_sqlite() {
        assert_eq!(Affinity::of("INTEGER"), Affinity::Integer);
        assert_eq!(Affinity::of("TEXT"), Affinity::Text);
        assert_eq!(Affinity::of("REAL"), Affinity::Real);
        assert_eq!(Affinity::of(""), Affinity::Blob);
        assert_eq!(Affinity::of("DECIMAL"), Affinity::Numeric);
    }
}
