//! Dataframes read from files by the workers: `read_parquet` (one partition per file,
//! only the columns asked for and only the rows a filter keeps: Polars' scan pushes both
//! into the reader) and `read_csv` (each file cut into blocks of bytes that the workers
//! read themselves, a row belonging to the block it starts in; the header and the column
//! types are read once, on the client, from the first rows of the first file).

use super::{DataFrame, describe, polars_message};
use crate::client::Client;
use crate::collections::bag::{Bag, expand_glob, file_blocks, read_block};
use crate::error::{Error, Result};
use polars::prelude::{
    CsvParseOptions, CsvReadOptions, DataFrame as Frame, DataType, Expr, Field, IntoLazy,
    LazyFrame, PolarsResult, ScanArgsParquet, Schema, SchemaRef, SerReader, col,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

/// What `read_parquet_with` reads of each file.
#[derive(Clone, Debug, Default)]
pub struct ParquetOptions {
    /// Only these columns, in this order (all when `None`).
    pub columns: Option<Vec<String>>,
    /// Only the rows for which this expression is true, tested while reading (row groups
    /// whose statistics rule it out are not read).
    pub filter: Option<Expr>,
}

/// How `read_csv_with` reads the files.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    /// Bytes per partition, about (a row belongs to the block it starts in).
    pub blocksize: u64,
    /// Column types given instead of inferred, by name.
    pub dtypes: Vec<(String, DataType)>,
    /// Rows of the first file the column types are inferred from.
    pub infer_rows: usize,
    /// The field separator.
    pub separator: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            blocksize: 64 << 20,
            dtypes: Vec::new(),
            infer_rows: 1000,
            separator: b',',
        }
    }
}

/// One file of `read_parquet`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ParquetPart {
    path: String,
    columns: Option<Vec<String>>,
    filter: Option<Expr>,
}

impl ParquetPart {
    fn scan(&self) -> std::result::Result<LazyFrame, String> {
        let mut frame =
            LazyFrame::scan_parquet(self.path.as_str().into(), ScanArgsParquet::default())
                .map_err(|e| format!("read_parquet: {}: {}", self.path, polars_message(&e)))?;
        if let Some(columns) = &self.columns {
            frame = frame.select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
        }
        if let Some(filter) = &self.filter {
            frame = frame.filter(filter.clone());
        }
        Ok(frame)
    }
}

/// The step that reads one Parquet file.
fn parquet_part(part: ParquetPart) -> std::result::Result<Frame, String> {
    part.scan()?
        .collect()
        .map_err(|e| format!("read_parquet: {}: {}", part.path, polars_message(&e)))
}

/// One block of `read_csv`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CsvBlock {
    path: String,
    start: u64,
    end: u64,
    /// The columns and their types.
    fields: Vec<(String, DataType)>,
    separator: u8,
}

impl CsvBlock {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::from_iter(self.fields.iter().map(
            |(name, dtype)| Field::new(name.as_str().into(), dtype.clone()),
        )))
    }
}

/// The step that reads one block of a CSV file.
fn csv_block(block: CsvBlock) -> std::result::Result<Frame, String> {
    let bytes = read_block((block.path.clone(), block.start, block.end))?;
    let schema = block.schema();
    parse_csv(
        bytes,
        block.start == 0,
        Some(schema.clone()),
        block.separator,
    )
    .map_err(|e| {
        format!(
            "read_csv: {} (bytes {}..{}): {}; the column types were inferred from the \
             first rows of the first file ({}): give a column's type with read_csv_with \
             and CsvOptions::dtypes",
            block.path,
            block.start,
            block.end,
            polars_message(&e),
            describe(&schema)
        )
    })
}

/// `bytes` of CSV parsed by Polars: a header line first when `header`; the columns of
/// `schema`, or inferred from every row when `None`.
fn parse_csv(
    bytes: Vec<u8>,
    header: bool,
    schema: Option<SchemaRef>,
    separator: u8,
) -> PolarsResult<Frame> {
    CsvReadOptions::default()
        .with_has_header(header)
        .with_schema(schema)
        .with_infer_schema_length(None)
        .with_raise_if_empty(false)
        .with_parse_options(CsvParseOptions::default().with_separator(separator))
        .into_reader_with_file_handle(Cursor::new(bytes))
        .finish()
}

impl DataFrame {
    /// The Parquet files matching `pattern` (a path with `*`, `?` or `[..]`, or one file),
    /// one partition per file, read by the workers.
    pub fn read_parquet(client: &Client, pattern: &str) -> Result<DataFrame> {
        DataFrame::read_parquet_with(client, pattern, &ParquetOptions::default())
    }

    /// [`read_parquet`](Self::read_parquet) with only some columns and rows. Every file's
    /// columns are read on the client (from the file's footer): files whose columns differ
    /// from the first's are an error naming both.
    pub fn read_parquet_with(
        client: &Client,
        pattern: &str,
        options: &ParquetOptions,
    ) -> Result<DataFrame> {
        let files = expand_glob(pattern).map_err(|e| reading(pattern, e))?;
        let mut parts = Vec::with_capacity(files.len());
        let mut schema: Option<(String, SchemaRef)> = None;
        for path in files {
            let path = path.display().to_string();
            let whole = ParquetPart {
                path: path.clone(),
                columns: None,
                filter: None,
            };
            let columns = whole
                .scan()
                .and_then(|mut f| {
                    f.collect_schema()
                        .map_err(|e| format!("{path}: {}", polars_message(&e)))
                })
                .map_err(|e| Error::Config(format!("read_parquet: cannot read {e}")))?;
            match &schema {
                None => schema = Some((path.clone(), columns)),
                Some((first, expected)) if *expected != columns => {
                    return Err(Error::Config(format!(
                        "read_parquet: {path} has the columns {}, {first} has {}; every file \
                         needs the same columns and types",
                        describe(&columns),
                        describe(expected)
                    )));
                }
                Some(_) => {}
            }
            parts.push(ParquetPart {
                path,
                columns: options.columns.clone(),
                filter: options.filter.clone(),
            });
        }
        let (first, columns) = schema.expect("expand_glob gives at least one file");
        // The projection and the filter on an empty frame: their errors and the columns.
        let mut meta = Frame::empty_with_arc_schema(columns.clone()).lazy();
        if let Some(names) = &options.columns {
            meta = meta.select(names.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
        }
        if let Some(filter) = &options.filter {
            meta = meta.filter(filter.clone());
        }
        let meta = meta.collect().map_err(|e| {
            Error::Config(format!(
                "read_parquet: {} (the columns of {first} are {})",
                polars_message(&e),
                describe(&columns)
            ))
        })?;
        crate::protocol::encode_value(&parts[0]).map_err(|e| {
            Error::Config(format!(
                "read_parquet: the filter cannot be sent to the workers ({e}); expressions \
                 calling Rust closures do not encode"
            ))
        })?;
        Ok(DataFrame {
            parts: Bag::from_reads(client, parquet_part, "read_parquet", &parts),
            schema: meta.schema().clone(),
            divisions: None,
        })
    }

    /// The CSV files matching `pattern`, each with a header line, cut into blocks of about
    /// `blocksize` bytes read by the workers (Dask's `read_csv(pattern, blocksize=..)`).
    pub fn read_csv(client: &Client, pattern: &str, blocksize: u64) -> Result<DataFrame> {
        DataFrame::read_csv_with(
            client,
            pattern,
            &CsvOptions {
                blocksize,
                ..CsvOptions::default()
            },
        )
    }

    /// [`read_csv`](Self::read_csv) with the options given. The column names come from the
    /// first file's header, their types from its first `infer_rows` rows unless `dtypes`
    /// gives them; every other file's header must name the same columns. A quoted field
    /// holding a line break may be cut between blocks, as in Dask: such files need a
    /// `blocksize` above their size (one block per file).
    pub fn read_csv_with(
        client: &Client,
        pattern: &str,
        options: &CsvOptions,
    ) -> Result<DataFrame> {
        if options.blocksize == 0 {
            return Err(Error::Config("read_csv: blocksize must be above 0".into()));
        }
        let blocks = file_blocks(pattern, options.blocksize).map_err(|e| reading(pattern, e))?;
        let first = blocks[0].0.clone();
        let head = |path: &str, rows: usize| -> Result<Frame> {
            let bytes = first_lines(path, rows + 1)
                .map_err(|e| Error::Config(format!("read_csv: cannot read {path}: {e}")))?;
            parse_csv(bytes, true, None, options.separator).map_err(|e| {
                Error::Config(format!(
                    "read_csv: cannot read {path}: {}",
                    polars_message(&e)
                ))
            })
        };
        let sample = head(&first, options.infer_rows)?;
        let mut fields: Vec<(String, DataType)> = sample
            .schema()
            .iter()
            .map(|(name, dtype)| (name.to_string(), dtype.clone()))
            .collect();
        for (name, dtype) in &options.dtypes {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(field) => field.1 = dtype.clone(),
                None => {
                    return Err(Error::Config(format!(
                        "read_csv: CsvOptions::dtypes names '{name}', which {first} has no \
                         column of (its columns are {})",
                        describe(sample.schema())
                    )));
                }
            }
        }
        let names: Vec<&String> = fields.iter().map(|(n, _)| n).collect();
        let mut checked = vec![first.clone()];
        for (path, _, _) in &blocks {
            if checked.contains(path) {
                continue;
            }
            let other = head(path, 0)?;
            let other_names: Vec<String> =
                other.schema().iter_names().map(|n| n.to_string()).collect();
            if other_names.iter().collect::<Vec<_>>() != names {
                return Err(Error::Config(format!(
                    "read_csv: the header of {path} names the columns {other_names:?}, the \
                     header of {first} {names:?}; every file needs the same columns"
                )));
            }
            checked.push(path.clone());
        }
        let parts: Vec<CsvBlock> = blocks
            .into_iter()
            .map(|(path, start, end)| CsvBlock {
                path,
                start,
                end,
                fields: fields.clone(),
                separator: options.separator,
            })
            .collect();
        let schema = parts[0].schema();
        Ok(DataFrame {
            parts: Bag::from_reads(client, csv_block, "read_csv", &parts),
            schema,
            divisions: None,
        })
    }
}

/// The first `n` lines of `path` (decompressed when it ends in `.gz`).
fn first_lines(path: &str, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)?;
    let mut reader: Box<dyn BufRead> = if path.ends_with(".gz") {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut bytes = Vec::new();
    for _ in 0..n {
        if reader.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
    }
    Ok(bytes)
}

/// A pattern matching nothing, or a file that cannot be read, named as a reader's error.
fn reading(pattern: &str, e: Error) -> Error {
    match e {
        Error::Config(message) => Error::Config(format!("reading '{pattern}': {message}")),
        other => other,
    }
}
