//! Printing results: human text by default, JSON with `--json`.

use serde::Serialize;

/// Prints `value` as one JSON document.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints aligned `key: value` lines.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k:>width$}  {v}");
    }
}

/// A fingerprint in groups of 4 hex digits for reading aloud.
pub fn grouped(fp: &str) -> String {
    fp.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
