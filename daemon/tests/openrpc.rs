//! `rpc.discover` from a real daemon: valid against the official OpenRPC meta-schema (the
//! JSON schema of npm's `@open-rpc/meta-schema`, a fixture with its licence), self-contained,
//! and usable by a generator: every method called with params built only from its content
//! descriptors is accepted, and its result matches the declared schema.

use serde_json::{Map, Value, json};

use crate::support::{Daemon, Relay};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openrpc");

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    // Both name their own dialect URI, which is draft 7 with annotations; say so directly.
    v.as_object_mut().unwrap().remove("$schema");
    v
}

/// A validator for the OpenRPC meta-schema, resolving the JSON Schema meta-schema it refers
/// to from the fixture (never from the network).
fn meta_validator() -> jsonschema::Validator {
    let registry = jsonschema::Registry::new()
        .draft(jsonschema::Draft::Draft7)
        .add(
            "https://meta.json-schema.tools",
            fixture("json-schema-tools-meta-schema-1.8.0.json"),
        )
        .expect("a valid URI")
        .prepare()
        .expect("the JSON Schema meta-schema indexes");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_registry(&registry)
        .offline()
        .build(&fixture("openrpc-meta-schema-1.14.9.json"))
        .expect("the OpenRPC meta-schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `schema` with the document's components beside it, so its `#/components/...` refs resolve.
fn with_components(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({"allOf": [schema], "components": doc["components"]});
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .offline()
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

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
fn rpc_discover_is_a_valid_self_contained_openrpc_document() {
    let mut d = Daemon::new("file");
    d.start();
    let doc = d.client().ok("rpc.discover", json!({}));
    let meta = meta_validator();
    assert_eq!(errors(&meta, &doc), Vec::<String>::new(), "{doc:#}");
    // The validator does validate: the old shape (errors as a list) is refused.
    let mut old = doc.clone();
    old["components"]["errors"] = json!([{"code": -32000, "message": "x"}]);
    assert!(!errors(&meta, &old).is_empty());
    let mut bad = doc.clone();
    bad["methods"][0]["params"] = json!([{"name": "params"}]);
    assert!(
        !errors(&meta, &bad).is_empty(),
        "a descriptor without schema"
    );

    // Self-contained: every $ref is into the document and resolves.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in &found {
        assert!(r.starts_with("#/components/"), "{r} leaves the document");
        assert!(doc.pointer(&r[1..]).is_some(), "{r} points nowhere");
    }
    // Every schema under components compiles as draft 7 (its refs resolving).
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(
            jsonschema::draft7::meta::is_valid(schema),
            "{name} is not a draft 7 schema"
        );
        with_components(&doc, schema);
    }
    // Events: each type a schema, `Event` their oneOf, and a real event matches it.
    let event = with_components(&doc, &json!({"$ref": "#/components/schemas/Event"}));
    let ok = json!({"seq": 3, "type": "relay.connected", "url": "ws://127.0.0.1:1/sotto/v1"});
    assert!(event.is_valid(&ok));
    assert!(!event.is_valid(&json!({"seq": 3, "type": "relay.connected"})));
    assert!(
        doc["components"]["schemas"]["ConversationReadEvent"]["properties"]["conversation"]
            .is_object()
    );
    // Errors: a map from data.kind.
    assert_eq!(
        doc["components"]["errors"]["not_found"]["data"]["kind"],
        "not_found"
    );
    d.stop();
}

/// Values for `schema`, built only from the schema: examples, consts, enums, then the type.
/// An `Address` is `address` (a contact that exists), so calls get past the address lookup.
fn example(doc: &Value, schema: &Value, address: &str) -> Value {
    if let Some(r) = schema["$ref"].as_str() {
        if r == "#/components/schemas/Address" {
            return json!(address);
        }
        let target = doc.pointer(&r[1..]).expect("ref resolves");
        return example(doc, target, address);
    }
    if let Some(e) = schema["examples"].get(0) {
        return e.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(e) = schema["enum"].get(0) {
        return e.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = schema[key].as_array() {
            let not_null = list
                .iter()
                .find(|s| s["type"] != "null")
                .unwrap_or(&list[0]);
            return example(doc, not_null, address);
        }
    }
    let ty = match &schema["type"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_owned(),
        _ => "object".to_owned(),
    };
    match ty.as_str() {
        "string" => json!("x"),
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "boolean" => json!(false),
        "array" => json!([example(doc, &schema["items"], address)]),
        "null" => Value::Null,
        _ => {
            let mut m = Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                m.insert(
                    name.to_owned(),
                    example(doc, &schema["properties"][name], address),
                );
            }
            Value::Object(m)
        }
    }
}

#[test]
fn every_method_accepts_params_built_from_its_descriptors() {
    let relay = Relay::start();
    let mut bob = Daemon::new("file");
    let bob_address = bob.account(&relay, "bob");
    let mut d = Daemon::new("file");
    d.account(&relay, "alice");
    let mut c = d.client();
    let doc = c.ok("rpc.discover", json!({}));
    let methods = doc["methods"].as_array().unwrap();
    assert_eq!(methods.len(), sotto_protocol::methods::ALL.len());
    // daemon.shutdown last: it stops the daemon.
    let mut order: Vec<&Value> = methods
        .iter()
        .filter(|m| m["name"] != "daemon.shutdown")
        .collect();
    order.extend(methods.iter().filter(|m| m["name"] == "daemon.shutdown"));
    let mut succeeded = 0;
    for m in order {
        let name = m["name"].as_str().unwrap();
        assert_eq!(m["paramStructure"], "by-name");
        let mut params = Map::new();
        for p in m["params"].as_array().unwrap() {
            assert!(p["required"].is_boolean(), "{name}: {p}");
            params.insert(
                p["name"].as_str().unwrap().to_owned(),
                example(&doc, &p["schema"], &bob_address),
            );
        }
        let r = c.call(name, Value::Object(params.clone()));
        if let Some(e) = r.get("error") {
            let message = e["message"].as_str().unwrap_or("");
            assert!(
                !message.starts_with("invalid params for"),
                "{name} refused params built from its descriptors {params:?}: {r}"
            );
            assert!(
                ![-32601, -32603, -32700, -32600].contains(&e["code"].as_i64().unwrap()),
                "{name}: {r}"
            );
            assert!(e["data"]["kind"].is_string(), "{name}: {r}");
        } else {
            let result = &r["result"];
            let v = with_components(&doc, &m["result"]["schema"]);
            let problems: Vec<String> = v.iter_errors(result).map(|e| e.to_string()).collect();
            assert!(
                problems.is_empty(),
                "{name}'s result {result} does not match its schema: {problems:?}"
            );
            succeeded += 1;
        }
        // A required param left out is refused, naming it.
        for p in m["params"].as_array().unwrap() {
            if p["required"] == true {
                let mut missing = params.clone();
                let pname = p["name"].as_str().unwrap();
                missing.remove(pname);
                let r = c.call(name, Value::Object(missing));
                assert_eq!(r["error"]["code"], -32602, "{name} without {pname}: {r}");
                assert!(
                    r["error"]["message"].as_str().unwrap().contains(pname),
                    "{r}"
                );
            }
        }
    }
    assert!(succeeded >= 10, "only {succeeded} calls succeeded");
    d.wait_exit();
    drop(bob);
}
