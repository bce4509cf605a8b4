//! `message.search`: full-text search over this device's history (SQLite FTS5).
//!
//! The index `messages_fts` is an external-content FTS5 table over `messages.text`, kept
//! by triggers in the same transaction as every message row (store migration 4). A query
//! is plain words, never FTS5 syntax: each word becomes a quoted FTS5 string (so `don't`,
//! `e-mail`, `AND`, `*` or `NEAR(` are just text), the last one also a prefix.

use rusqlite::params;
use sotto_protocol::methods::{MessageSearchParams, SearchHit};

use super::{ApiError, Service};
use crate::model;
use crate::store::StoreError;

/// Hits returned when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most hits one search returns.
pub const MAX_LIMIT: u32 = 200;
/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;

/// The FTS5 MATCH expression for a plain-words query (words split at whitespace and control
/// characters): every word that holds a letter or digit, quoted as an FTS5 string, the last also as a prefix; `None` when no word is left.
pub fn match_expression(query: &str) -> Option<String> {
    // Control characters separate words too (a NUL would end the string SQLite reads).
    let words: Vec<&str> = query
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect();
    let (last, rest) = words.split_last()?;
    let quote = |w: &str| format!("\"{}\"", w.replace('"', "\"\""));
    let mut terms: Vec<String> = rest.iter().map(|w| quote(w)).collect();
    terms.push(format!("{}*", quote(last)));
    Some(terms.join(" "))
}

impl Service {
    /// `message.search`: hits best first (bm25), each with a snippet.
    pub async fn message_search(&self, p: MessageSearchParams) -> Result<Vec<SearchHit>, ApiError> {
        if p.query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::invalid_params(format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES} are allowed",
                p.query.len()
            )));
        }
        if p.query.trim().is_empty() {
            return Err(ApiError::invalid_params(
                "the search query is empty: give at least one word",
            ));
        }
        let conversation = match &p.conversation {
            Some(c) => Some(self.resolve(c).await?.id),
            None => None,
        };
        // Only punctuation: nothing in the index can match it.
        let Some(expression) = match_expression(&p.query) else {
            return Ok(Vec::new());
        };
        let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        Ok(self
            .store
            .call(move |db| search(db.conn(), &expression, conversation.as_deref(), limit))
            .await?)
    }
}

/// Runs the MATCH `expression`, optionally within one conversation.
fn search(
    conn: &rusqlite::Connection,
    expression: &str,
    conversation: Option<&str>,
    limit: u32,
) -> Result<Vec<SearchHit>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.conversation, m.sender, m.id,
                snippet(messages_fts, 0, '[', ']', '…', 16)
         FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
         WHERE messages_fts MATCH ?1 AND (?2 IS NULL OR m.conversation = ?2)
         ORDER BY bm25(messages_fts), m.rowid DESC
         LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![expression, conversation, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut hits = Vec::with_capacity(rows.len());
    for (conv, sender, id, snippet) in rows {
        if let Some(message) = model::message(conn, &conv, &sender, &id)? {
            hits.push(SearchHit { message, snippet });
        }
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::match_expression;

    #[test]
    fn words_are_quoted_and_the_last_is_a_prefix() {
        assert_eq!(match_expression("hello").as_deref(), Some("\"hello\"*"));
        assert_eq!(
            match_expression("  don't  e-mail ").as_deref(),
            Some("\"don't\" \"e-mail\"*")
        );
        assert_eq!(
            match_expression("say \"hi\" AND NEAR( x*").as_deref(),
            Some("\"say\" \"\"\"hi\"\"\" \"AND\" \"NEAR(\" \"x*\"*")
        );
        assert_eq!(match_expression(""), None);
        assert_eq!(match_expression(" \t\n"), None);
        assert_eq!(match_expression("* \" ( -"), None);
        assert_eq!(
            match_expression("a\u{0}b\u{7}c").as_deref(),
            Some("\"a\" \"b\" \"c\"*")
        );
    }
}
