//! A method's arguments and `a{sv} options` decoded into the protocol's params type.
//!
//! The positional arguments and the options are merged into one JSON object and decoded
//! exactly as the JSON-RPC adapter decodes params, so both transports refuse the same
//! things: an unknown option key, a wrong type, an address that breaks the grammar.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};
use sotto_protocol::Method;
use zbus::zvariant::{OwnedValue, Value};

use crate::service::ApiError;

/// The trailing `a{sv} options` of every method.
pub type Options = HashMap<String, OwnedValue>;

/// Decodes `M::Params` from the positional `args` (a JSON object) and `options`.
pub fn decode<M: Method>(args: Json, options: Options) -> Result<M::Params, ApiError> {
    let mut object = match args {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    for (key, value) in options {
        if object.contains_key(&key) {
            return Err(ApiError::invalid_params(format!(
                "option `{key}` is an argument of the method, not an option"
            )));
        }
        let value = to_json(&value)
            .map_err(|e| ApiError::invalid_params(format!("option `{key}`: {e}")))?;
        object.insert(key, value);
    }
    serde_json::from_value(Json::Object(object))
        .map_err(|e| ApiError::invalid_params(format!("invalid options for {}: {e}", M::NAME)))
}

/// A D-Bus value as JSON: numbers, strings, booleans, arrays and dicts (keys as strings).
pub(super) fn to_json(value: &Value<'_>) -> Result<Json, String> {
    Ok(match value {
        Value::U8(n) => Json::from(*n),
        Value::Bool(b) => Json::from(*b),
        Value::I16(n) => Json::from(*n),
        Value::U16(n) => Json::from(*n),
        Value::I32(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F64(n) => serde_json::Number::from_f64(*n)
            .map(Json::Number)
            .ok_or("not a finite number")?,
        Value::Str(s) => Json::from(s.as_str()),
        Value::Signature(s) => Json::from(s.to_string()),
        Value::ObjectPath(p) => Json::from(p.as_str()),
        Value::Value(v) => to_json(v)?,
        Value::Array(a) => Json::Array(a.inner().iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Dict(d) => {
            let mut out = Map::new();
            for (k, v) in d.iter() {
                let key = match to_json(k)? {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, to_json(v)?);
            }
            Json::Object(out)
        }
        Value::Structure(s) => {
            Json::Array(s.fields().iter().map(to_json).collect::<Result<_, _>>()?)
        }
        #[allow(unreachable_patterns)]
        _ => {
            return Err(format!(
                "values of type {} are not accepted",
                value.value_signature()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sotto_protocol::ErrorKind;
    use sotto_protocol::methods::{DaemonStatus, MessageList, MessageSend};

    fn opts(pairs: &[(&str, Value<'static>)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OwnedValue::try_from(v.clone()).unwrap()))
            .collect()
    }

    #[test]
    fn options_merge_with_arguments() {
        let p = decode::<MessageSend>(
            json!({"conversation": "c1", "text": "hi"}),
            opts(&[("reply_to", Value::from("m0"))]),
        )
        .unwrap();
        assert_eq!(p.reply_to.as_deref(), Some("m0"));
        let p = decode::<MessageList>(
            json!({"conversation": "c1"}),
            opts(&[("limit", Value::from(5u32))]),
        )
        .unwrap();
        assert_eq!(p.limit, Some(5));
    }

    #[test]
    fn unknown_options_and_shadowed_arguments_are_refused() {
        let e =
            decode::<DaemonStatus>(json!({}), opts(&[("colour", Value::from("red"))])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParams);
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = decode::<MessageSend>(
            json!({"conversation": "c1", "text": "hi"}),
            opts(&[("text", Value::from("again"))]),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParams);
        let e = decode::<MessageList>(
            json!({"conversation": "c1"}),
            opts(&[("limit", Value::from("ten"))]),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParams);
    }
}
