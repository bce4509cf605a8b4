//! The OpenRPC document of the local API, generated from [`crate::methods::ALL`].

use serde_json::{Value, json};

use crate::error::ErrorKind;
use crate::methods::ALL;

/// Builds the OpenRPC 1.2 document for the given method names (those the daemon registered),
/// in the order of [`ALL`]. Unknown names are skipped.
pub fn document(version: &str, registered: &[&str]) -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = settings.into_generator();
    let methods: Vec<Value> = ALL
        .iter()
        .filter(|m| registered.contains(&m.name))
        .map(|m| {
            let params = (m.params_schema)(&mut generator);
            let result = (m.result_schema)(&mut generator);
            json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": [{"name": "params", "required": false, "schema": params}],
                "result": {"name": "result", "schema": result},
            })
        })
        .collect();
    let schemas: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    let errors: Vec<Value> = ErrorKind::ALL
        .iter()
        .map(|k| json!({"code": k.code(), "message": k.as_str(), "data": {"kind": k.as_str()}}))
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "Sotto daemon API",
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

#[cfg(test)]
mod tests {
    #[test]
    fn lists_registered_methods_only() {
        let doc = super::document("0.0.0", &["daemon.status", "account.info"]);
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["daemon.status", "account.info"]);
        assert!(doc["components"]["schemas"].get("Account").is_some());
    }
}
