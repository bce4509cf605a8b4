//! The OpenRPC document of the local API (`rpc.discover`), generated from
//! [`crate::methods::ALL`].
//!
//! It is a valid OpenRPC 1.3 document, self-contained (every `$ref` points into its own
//! `components`), with JSON Schema draft 7 schemas:
//! - each named parameter is its own content descriptor, `required` as the params type
//!   says (`paramStructure` is `by-name`), so a generated client calls
//!   `message.send(conversation=…, text=…)`;
//! - `components.errors` maps each error kind (`data.kind`) to its code;
//! - every event type has a schema `<Type>Event` under `components.schemas` (`seq`, `type`
//!   and its payload), `Event` is their `oneOf`, and `EventNotification` is the params of
//!   the `event` notifications that `events.subscribe` starts.

use serde_json::{Map, Value, json};

use crate::api::{Event, SubscriptionClosed};
use crate::error::ErrorKind;
use crate::methods::{ALL, EVENT_NOTIFICATION, MethodInfo};

/// The OpenRPC version the document conforms to.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// Where schemas live in the document.
const SCHEMAS: &str = "#/components/schemas/";

/// Builds the OpenRPC document for the given method names (those the daemon registered),
/// in the order of [`ALL`]. Unknown names are skipped.
pub fn document(version: &str, registered: &[&str]) -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.definitions_path = SCHEMAS.into();
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let methods: Vec<Value> = ALL
        .iter()
        .filter(|m| registered.contains(&m.name))
        .map(|m| method(&mut generator, m))
        .collect();
    generator.subschema_for::<Event>();
    generator.subschema_for::<SubscriptionClosed>();
    let mut schemas = generator.take_definitions(true);
    split_events(&mut schemas);
    schemas.insert(
        "EventNotification".into(),
        json!({
            "description": format!(
                "The params of a `{EVENT_NOTIFICATION}` notification: one event of a subscription, \
                 or its last notification when the daemon ended it"
            ),
            "type": "object",
            "properties": {
                "subscription": {
                    "description": "The subscription id that `events.subscribe` returned",
                    "type": "string"
                },
                "result": {
                    "oneOf": [
                        {"$ref": format!("{SCHEMAS}Event")},
                        {"$ref": format!("{SCHEMAS}SubscriptionClosed")}
                    ]
                }
            },
            "required": ["subscription", "result"],
            "additionalProperties": false
        }),
    );
    let errors: Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str().to_owned(),
                json!({"code": k.code(), "message": k.as_str(), "data": {"kind": k.as_str()}}),
            )
        })
        .collect();
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "Sotto daemon API",
            "description": "The local API of sottod: JSON-RPC 2.0 over NDJSON on a Unix socket. \
                Sotto errors carry `data.kind` (see `components.errors`).",
            "version": version,
            "x-protocol": crate::PROTOCOL_VERSION,
        },
        "methods": methods,
        "components": {
            "schemas": schemas,
            "errors": errors,
        },
    })
}

/// One method object: its params as content descriptors, its result.
fn method(generator: &mut schemars::SchemaGenerator, m: &MethodInfo) -> Value {
    let params_schema = (m.params_schema)(generator).to_value();
    let params = content_descriptors(generator, &params_schema);
    let mut result = (m.result_schema)(generator).to_value();
    if result == Value::Bool(true) {
        // `rpc.discover`: any JSON, in fact an OpenRPC document.
        result = json!({"type": "object", "description": "An OpenRPC document"});
    }
    let mut object = json!({
        "name": m.name,
        "summary": m.summary,
        "paramStructure": "by-name",
        "params": params,
        "result": {"name": "result", "schema": result},
    });
    if m.name == "events.subscribe" {
        object["x-notification"] = json!({
            "method": EVENT_NOTIFICATION,
            "params": {"$ref": format!("{SCHEMAS}EventNotification")},
        });
    }
    object
}

/// The named params of a params object schema (a `$ref` to one, or inline): one content
/// descriptor each, required ones first.
fn content_descriptors(generator: &schemars::SchemaGenerator, schema: &Value) -> Vec<Value> {
    let object = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix(SCHEMAS)
            .and_then(|name| generator.definitions().get(name))
            .cloned()
            .unwrap_or(Value::Null),
        None => schema.clone(),
    };
    let properties = object
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<&String> = properties
        .keys()
        .filter(|k| required.contains(&k.as_str()))
        .collect();
    names.sort_by_key(|k| required.iter().position(|r| *r == k.as_str()));
    names.extend(
        properties
            .keys()
            .filter(|k| !required.contains(&k.as_str())),
    );
    names
        .into_iter()
        .map(|name| {
            let mut schema = properties[name].clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut d = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(text) = description {
                d["description"] = text;
            }
            d
        })
        .collect()
}

/// `ConversationRead` from `conversation.read`: the CamelCase of an event type.
fn camel(event_type: &str) -> String {
    event_type
        .split(['.', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Replaces the generated `Event` (the `seq` field flattened with the payload's variants)
/// by one schema per event type, `<Type>Event`, and `Event` as their `oneOf`.
fn split_events(schemas: &mut Map<String, Value>) {
    let Some(event) = schemas.get("Event").cloned() else {
        return;
    };
    let seq = event["properties"]["seq"].clone();
    let mut refs = Vec::new();
    for variant in event["oneOf"].as_array().into_iter().flatten() {
        let Some(type_name) = variant["properties"]["type"]["const"].as_str() else {
            continue;
        };
        if !type_name.contains('.') {
            continue; // `Unknown`: how clients treat types they do not know, not a type
        }
        let mut properties = Map::new();
        properties.insert("seq".into(), seq.clone());
        if let Some(p) = variant["properties"].as_object() {
            properties.extend(p.clone());
        }
        let mut required = vec![json!("seq")];
        required.extend(variant["required"].as_array().cloned().unwrap_or_default());
        let name = format!("{}Event", camel(type_name));
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "required": required,
        });
        if let Some(d) = variant.get("description") {
            schema["description"] = d.clone();
        }
        schemas.insert(name.clone(), schema);
        refs.push(json!({"$ref": format!("{SCHEMAS}{name}")}));
    }
    schemas.insert(
        "Event".into(),
        json!({
            "description": "A persisted event: `seq`, `type` and the type's payload. Clients ignore \
                types they do not know.",
            "oneOf": refs,
        }),
    );
    schemas.remove("EventPayload");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_names() -> Vec<&'static str> {
        ALL.iter().map(|m| m.name).collect()
    }

    #[test]
    fn lists_registered_methods_only() {
        let doc = document("0.0.0", &["daemon.status", "account.info"]);
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["daemon.status", "account.info"]);
        assert!(doc["components"]["schemas"].get("Account").is_some());
    }

    #[test]
    fn each_named_param_is_a_content_descriptor() {
        let doc = document("0.0.0", &all_names());
        let send = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "message.send")
            .unwrap();
        let params: Vec<(&str, bool)> = send["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["required"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            params,
            [
                ("conversation", true),
                ("text", true),
                ("idempotency_key", false),
                ("reply_to", false)
            ]
        );
        let status = &doc["methods"][0];
        assert_eq!(status["params"], json!([]));
    }

    /// Every `$ref` anywhere in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_inside_the_document() {
        let doc = document("0.0.0", &all_names());
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20);
        for r in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{r} leaves the document"));
            assert!(doc.pointer(pointer).is_some(), "{r} points nowhere");
        }
    }

    #[test]
    fn every_event_type_has_a_schema() {
        let doc = document("0.0.0", &all_names());
        let schemas = &doc["components"]["schemas"];
        let one_of = schemas["Event"]["oneOf"].as_array().unwrap();
        for t in [
            "account.created",
            "message.created",
            "message.received",
            "message.state",
            "conversation.joined",
            "conversation.changed",
            "conversation.change_failed",
            "conversation.removed",
            "conversation.broken",
            "conversation.read",
            "contact.identity_changed",
            "relay.connected",
            "relay.disconnected",
            "account.revoked",
        ] {
            let name = format!("{}Event", camel(t));
            let s = &schemas[&name];
            assert_eq!(s["properties"]["type"]["const"], t, "{name}: {s}");
            assert!(
                s["required"].as_array().unwrap().contains(&json!("seq")),
                "{s}"
            );
            assert!(
                one_of.contains(&json!({"$ref": format!("{SCHEMAS}{name}")})),
                "{name}"
            );
        }
        assert_eq!(one_of.len(), 14);
        assert_eq!(camel("contact.identity_changed"), "ContactIdentityChanged");
    }

    #[test]
    fn errors_are_a_map_of_kinds() {
        let doc = document("0.0.0", &[]);
        let errors = doc["components"]["errors"].as_object().unwrap();
        assert_eq!(errors.len(), ErrorKind::ALL.len());
        assert_eq!(errors["not_found"]["data"]["kind"], "not_found");
        assert!(errors["not_found"]["code"].is_i64());
    }
}
