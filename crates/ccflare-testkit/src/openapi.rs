//! Checking JSON against the schemas of an OpenAPI 3.0 document, for the test that holds every
//! answer of the management API to `docs/openapi.json`.
//!
//! It knows the subset of the Schema Object that document uses: `$ref` (within the document),
//! `type` (a name, or a list of names as in 3.1) with `nullable`, `enum`, `properties`,
//! `required`, `additionalProperties` (false, true or a schema), `items`, `minItems` and
//! `maxItems`, `minimum` and `maximum`, `allOf`, `oneOf` and `anyOf`, and the `int32` and
//! `int64` formats; `description`, `title`, `example`, `default` and `x-` extensions are
//! annotations. Any other keyword is an error rather than ignored, so the document cannot come
//! to say something this checker silently skips. "integer" is a JSON number written without a
//! fraction or exponent (`1.0` is a number, not an integer), which is how serde writes Rust
//! integers and never how it writes floats.
//!
//! `nullable: true` accepts `null` before any other keyword is looked at, so
//! `{"allOf": [{"$ref": …}], "nullable": true}` means "that schema, or null", as code
//! generators read it.
//!
//! Besides errors, a check records which documented properties it met with a value other than
//! `null` ([`Checked::seen`]); [`Document::properties`] lists every property a schema can
//! reach, so a test can say which documented fields its answers never exercised.

use serde_json::Value;
use std::collections::BTreeSet;

/// An OpenAPI document, with its schemas addressed by JSON-pointer fragments
/// (`#/components/schemas/Account`).
#[derive(Debug, Clone)]
pub struct Document {
    root: Value,
}

/// What checking one value found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Checked {
    /// Each mismatch, as `$.path.to[0].value: what is wrong`.
    pub errors: Vec<String>,
    /// The properties met with a non-null value, as the pointer of their schema
    /// (`#/components/schemas/Account/properties/subscription`).
    pub seen: BTreeSet<String>,
}

impl Checked {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, at: &str, what: impl std::fmt::Display) {
        self.errors.push(format!("{at}: {what}"));
    }
}

/// One operation of the document: `GET /api/accounts/{name}` and the statuses it documents
/// (`"200"`, `"404"`, `"default"`, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// Upper case, as HTTP spells it.
    pub method: String,
    /// The path template as the document spells it.
    pub path: String,
    pub statuses: Vec<String>,
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Keywords that only describe: they never make a value wrong.
const ANNOTATIONS: &[&str] = &["description", "title", "example", "default", "format"];

/// Keywords this checker applies.
const APPLIED: &[&str] = &[
    "$ref",
    "type",
    "nullable",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "allOf",
    "oneOf",
    "anyOf",
];

/// `token` escaped for a JSON pointer (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `value` is of the named type: an integer is also a number.
fn is_type(value: &Value, name: &str) -> bool {
    let kind = kind_of(value);
    kind == name || (name == "number" && kind == "integer")
}

impl Document {
    pub fn new(root: Value) -> Document {
        Document { root }
    }

    /// Parses a document; panics (this is test support) when it is not JSON.
    pub fn parse(text: &str) -> Document {
        Document::new(serde_json::from_str(text).expect("the OpenAPI document is JSON"))
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The value at a `#/…` pointer.
    pub fn resolve(&self, pointer: &str) -> Option<&Value> {
        let path = pointer.strip_prefix('#')?;
        if path.is_empty() {
            return Some(&self.root);
        }
        path.strip_prefix('/')?
            .split('/')
            .try_fold(&self.root, |value, token| {
                let token = unescape(token);
                match value {
                    Value::Object(map) => map.get(&token),
                    Value::Array(items) => items.get(token.parse::<usize>().ok()?),
                    _ => None,
                }
            })
    }

    /// Follows `$ref`s from `pointer` to the object that is not one, with its own pointer.
    fn follow(&self, pointer: &str) -> Result<(String, &Value), String> {
        let mut pointer = pointer.to_owned();
        for _ in 0..32 {
            let value = self
                .resolve(&pointer)
                .ok_or_else(|| format!("{pointer} is not in the document"))?;
            match value.get("$ref").and_then(Value::as_str) {
                Some(target) => pointer = target.to_owned(),
                None => return Ok((pointer, value)),
            }
        }
        Err(format!("{pointer}: $ref chain too long"))
    }

    /// Every operation, in the document's order of paths, then methods.
    pub fn operations(&self) -> Vec<Operation> {
        let mut out = Vec::new();
        let Some(paths) = self.root.get("paths").and_then(Value::as_object) else {
            return out;
        };
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let statuses = operation
                    .get("responses")
                    .and_then(Value::as_object)
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default();
                out.push(Operation {
                    method: method.to_uppercase(),
                    path: path.clone(),
                    statuses,
                });
            }
        }
        out
    }

    /// The pointer of the Response Object for `status` of `method path` (its own entry, else
    /// `default`), with `$ref`s followed, and the status key it was found under.
    pub fn response(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<(String, String), String> {
        let operation = format!(
            "#/paths/{}/{}",
            escape(path),
            escape(&method.to_lowercase())
        );
        if self.resolve(&operation).is_none() {
            return Err(format!("{method} {path} is not documented"));
        }
        for key in [status.to_string(), "default".to_owned()] {
            let pointer = format!("{operation}/responses/{key}");
            if self.resolve(&pointer).is_some() {
                let (pointer, _) = self.follow(&pointer)?;
                return Ok((pointer, key));
            }
        }
        Err(format!(
            "{method} {path} documents no {status} answer and no default"
        ))
    }

    /// The pointer of the schema for `media` (a content type without parameters) in the
    /// Response Object at `response`, and the Media Type Object's own pointer.
    pub fn media(&self, response: &str, media: &str) -> Result<String, String> {
        let pointer = format!("{response}/content/{}", escape(media));
        match self.resolve(&pointer) {
            Some(_) => Ok(pointer),
            None => {
                let documented: Vec<String> = self
                    .resolve(&format!("{response}/content"))
                    .and_then(Value::as_object)
                    .map(|c| c.keys().cloned().collect())
                    .unwrap_or_default();
                Err(format!(
                    "{response} documents {documented:?}, not {media:?}"
                ))
            }
        }
    }

    /// Checks `value` against the schema at `pointer`.
    pub fn check(&self, pointer: &str, value: &Value) -> Checked {
        let mut checked = Checked::default();
        self.check_at(pointer, value, "$", &mut checked);
        checked
    }

    fn check_at(&self, pointer: &str, value: &Value, at: &str, out: &mut Checked) {
        let Some(schema) = self.resolve(pointer) else {
            out.error(at, format!("schema {pointer} is not in the document"));
            return;
        };
        let Some(keywords) = schema.as_object() else {
            // `true` / `false` schemas are not OpenAPI 3.0.
            out.error(at, format!("schema {pointer} is not an object"));
            return;
        };
        for keyword in keywords.keys() {
            let known = APPLIED.contains(&keyword.as_str())
                || ANNOTATIONS.contains(&keyword.as_str())
                || keyword.starts_with("x-");
            if !known {
                out.error(
                    at,
                    format!("{pointer} uses {keyword:?}, which this checker does not know"),
                );
            }
        }
        if let Some(target) = keywords.get("$ref") {
            // OpenAPI 3.0 ignores a reference's siblings; a document that relies on them says
            // something its readers do not see.
            if let Some(other) = keywords
                .keys()
                .find(|k| !matches!(k.as_str(), "$ref" | "description"))
            {
                out.error(
                    at,
                    format!("{pointer} has {other:?} beside $ref, which readers ignore"),
                );
            }
            match target.as_str() {
                Some(target) if target.starts_with("#/") => {
                    self.check_at(target, value, at, out);
                }
                _ => out.error(at, format!("{pointer}: only local $refs are supported")),
            }
            return;
        }
        if value.is_null() && keywords.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        if let Some(types) = keywords.get("type") {
            let names: Vec<&str> = match types {
                Value::String(name) => vec![name.as_str()],
                Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if names.is_empty() {
                out.error(
                    at,
                    format!("{pointer}: type is not a name or a list of names"),
                );
                return;
            }
            if !names.iter().any(|name| is_type(value, name)) {
                out.error(
                    at,
                    format!("expected {}, got {}", names.join(" or "), describe(value)),
                );
                return;
            }
        }
        if let Some(allowed) = keywords.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            out.error(
                at,
                format!("{value} is not one of {}", Value::Array(allowed.clone())),
            );
        }
        if let Some(format) = keywords.get("format").and_then(Value::as_str) {
            self.check_format(format, value, at, out);
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = keywords.get("minimum").and_then(Value::as_f64)
                && number < minimum
            {
                out.error(at, format!("{value} is below the minimum {minimum}"));
            }
            if let Some(maximum) = keywords.get("maximum").and_then(Value::as_f64)
                && number > maximum
            {
                out.error(at, format!("{value} is above the maximum {maximum}"));
            }
        }
        if let Value::Array(items) = value {
            self.check_array(pointer, keywords, items, at, out);
        }
        if let Value::Object(fields) = value {
            self.check_object(pointer, keywords, fields, at, out);
        }
        if let Some(all) = keywords.get("allOf").and_then(Value::as_array) {
            for index in 0..all.len() {
                self.check_at(&format!("{pointer}/allOf/{index}"), value, at, out);
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(choices) = keywords.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            let results: Vec<Checked> = (0..choices.len())
                .map(|index| self.check(&format!("{pointer}/{keyword}/{index}"), value))
                .collect();
            let passed = results.iter().filter(|r| r.is_ok()).count();
            if passed == 0 {
                let why: Vec<String> = results.iter().map(|r| r.errors.join("; ")).collect();
                out.error(
                    at,
                    format!("matches none of {keyword}: [{}]", why.join("] [")),
                );
            } else if exactly_one && passed > 1 {
                out.error(at, format!("matches {passed} of oneOf, not exactly one"));
            }
            // Only the branches that hold count as having seen their properties; the paths in
            // them are relative to this value.
            for result in results.into_iter().filter(Checked::is_ok) {
                out.seen.extend(result.seen);
            }
        }
    }

    fn check_format(&self, format: &str, value: &Value, at: &str, out: &mut Checked) {
        match format {
            "int64" if value.is_number() && !value.is_i64() => {
                out.error(at, format!("{value} is not a 64-bit signed integer"));
            }
            "int32"
                if value.is_number()
                    && value.as_i64().and_then(|n| i32::try_from(n).ok()).is_none() =>
            {
                out.error(at, format!("{value} is not a 32-bit signed integer"));
            }
            "int64" | "int32" | "float" | "double" => {}
            other => out.error(at, format!("format {other:?} is not known to this checker")),
        }
    }

    fn check_array(
        &self,
        pointer: &str,
        keywords: &serde_json::Map<String, Value>,
        items: &[Value],
        at: &str,
        out: &mut Checked,
    ) {
        if let Some(min) = keywords.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            out.error(at, format!("{} items, fewer than {min}", items.len()));
        }
        if let Some(max) = keywords.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.error(at, format!("{} items, more than {max}", items.len()));
        }
        if keywords.contains_key("items") {
            for (index, item) in items.iter().enumerate() {
                self.check_at(
                    &format!("{pointer}/items"),
                    item,
                    &format!("{at}[{index}]"),
                    out,
                );
            }
        }
    }

    fn check_object(
        &self,
        pointer: &str,
        keywords: &serde_json::Map<String, Value>,
        fields: &serde_json::Map<String, Value>,
        at: &str,
        out: &mut Checked,
    ) {
        let properties = keywords.get("properties").and_then(Value::as_object);
        if let Some(required) = keywords.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    out.error(at, format!("the required field {name:?} is missing"));
                }
            }
        }
        for (name, field) in fields {
            let field_at = format!("{at}.{name}");
            if properties.is_some_and(|p| p.contains_key(name)) {
                let property = format!("{pointer}/properties/{}", escape(name));
                if !field.is_null() {
                    out.seen.insert(property.clone());
                }
                self.check_at(&property, field, &field_at, out);
                continue;
            }
            match keywords.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    out.error(
                        &field_at,
                        "a field the document does not list (additionalProperties is false)",
                    );
                }
                Some(Value::Object(_)) => {
                    self.check_at(
                        &format!("{pointer}/additionalProperties"),
                        field,
                        &field_at,
                        out,
                    );
                }
                _ => {}
            }
        }
    }

    /// Every property a value checked against the schema at `pointer` can have, as the
    /// pointers [`Checked::seen`] uses: through `$ref`s, `properties`, `items`,
    /// `additionalProperties` and the three combinations.
    pub fn properties(&self, pointer: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut visited = BTreeSet::new();
        self.collect(pointer, &mut found, &mut visited);
        found
    }

    fn collect(&self, pointer: &str, found: &mut BTreeSet<String>, visited: &mut BTreeSet<String>) {
        if !visited.insert(pointer.to_owned()) {
            return;
        }
        let Some(schema) = self.resolve(pointer).and_then(Value::as_object) else {
            return;
        };
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            self.collect(target, found, visited);
            return;
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for name in properties.keys() {
                let property = format!("{pointer}/properties/{}", escape(name));
                found.insert(property.clone());
                self.collect(&property, found, visited);
            }
        }
        for keyword in ["items", "additionalProperties"] {
            if schema.get(keyword).is_some_and(Value::is_object) {
                self.collect(&format!("{pointer}/{keyword}"), found, visited);
            }
        }
        for keyword in ["allOf", "oneOf", "anyOf"] {
            let count = schema
                .get(keyword)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for index in 0..count {
                self.collect(&format!("{pointer}/{keyword}/{index}"), found, visited);
            }
        }
    }
}

/// A value for a message: its type, and the value itself when it is short.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    if value.is_null() {
        text
    } else if text.len() <= 40 {
        format!("{} {text}", kind_of(value))
    } else {
        kind_of(value).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A document with the shapes the API's uses: a closed object with required, nullable and
    /// enum fields, a nested `$ref`, an array, a nullable `allOf` reference and a `oneOf`.
    fn document() -> Document {
        Document::new(json!({
            "openapi": "3.0.3",
            "paths": {
                "/api/things/{name}": {
                    "get": {
                        "responses": {
                            "200": {
                                "description": "A thing.",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Thing"}
                                }}
                            },
                            "default": {"$ref": "#/components/responses/Error"}
                        }
                    }
                }
            },
            "components": {
                "responses": {
                    "Error": {
                        "description": "Any other status.",
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    }
                },
                "schemas": {
                    "Thing": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["id", "name", "state", "parts", "owner", "ratio"],
                        "properties": {
                            "id": {"type": "integer", "format": "int64"},
                            "name": {"type": "string"},
                            "state": {"type": "string", "enum": ["on", "off"]},
                            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
                            "parts": {
                                "type": "array",
                                "maxItems": 2,
                                "items": {"$ref": "#/components/schemas/Part"}
                            },
                            "owner": {
                                "allOf": [{"$ref": "#/components/schemas/Part"}],
                                "nullable": true
                            },
                            "size": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                            "note": {"type": ["string", "null"]}
                        }
                    },
                    "Part": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["label"],
                        "properties": {"label": {"type": "string", "nullable": true}}
                    }
                }
            }
        }))
    }

    const THING: &str = "#/components/schemas/Thing";

    fn thing() -> Value {
        json!({
            "id": 7,
            "name": "lamp",
            "state": "on",
            "ratio": 0.5,
            "parts": [{"label": "bulb"}, {"label": null}],
            "owner": {"label": "kim"},
            "size": 3,
            "note": null
        })
    }

    /// The errors of checking `value` as a Thing, in order of the place they name.
    fn errors(value: &Value) -> Vec<String> {
        let mut errors = document().check(THING, value).errors;
        errors.sort();
        errors
    }

    #[test]
    fn a_value_as_documented_passes_and_says_which_fields_it_had() {
        let checked = document().check(THING, &thing());
        assert_eq!(checked.errors, Vec::<String>::new());
        let props = |names: &[&str]| -> BTreeSet<String> {
            names
                .iter()
                .map(|n| format!("{THING}/properties/{n}"))
                .collect()
        };
        let mut expected = props(&["id", "name", "state", "ratio", "parts", "owner", "size"]);
        expected.insert("#/components/schemas/Part/properties/label".to_owned());
        assert_eq!(checked.seen, expected, "note was null, so not seen");
    }

    #[test]
    fn an_undocumented_field_fails_where_additional_properties_is_false() {
        let mut value = thing();
        value["colour"] = json!("red");
        value["parts"][0]["weight"] = json!(1);
        assert_eq!(
            errors(&value),
            [
                "$.colour: a field the document does not list (additionalProperties is false)",
                "$.parts[0].weight: a field the document does not list (additionalProperties is false)",
            ]
        );
    }

    #[test]
    fn a_missing_required_field_fails() {
        let mut value = thing();
        value.as_object_mut().unwrap().remove("state");
        value["owner"].as_object_mut().unwrap().remove("label");
        assert_eq!(
            errors(&value),
            [
                "$.owner: the required field \"label\" is missing",
                "$: the required field \"state\" is missing",
            ]
        );
    }

    #[test]
    fn a_changed_type_fails() {
        for (field, wrong, says) in [
            ("id", json!("7"), "$.id: expected integer, got string \"7\""),
            ("id", json!(7.0), "$.id: expected integer, got number 7.0"),
            ("name", json!(null), "$.name: expected string, got null"),
            ("parts", json!({}), "$.parts: expected array, got object {}"),
            (
                "ratio",
                json!(true),
                "$.ratio: expected number, got boolean true",
            ),
        ] {
            let mut value = thing();
            value[field] = wrong;
            assert_eq!(errors(&value), [says], "{field}");
        }
        // An integer is a number.
        let mut value = thing();
        value["ratio"] = json!(1);
        assert_eq!(errors(&value), Vec::<String>::new());
    }

    #[test]
    fn nullable_enum_bounds_formats_and_choices() {
        let mut value = thing();
        value["owner"] = Value::Null;
        value["note"] = json!("fine");
        value["parts"][0]["label"] = Value::Null;
        value["size"] = json!("large");
        assert_eq!(errors(&value), Vec::<String>::new(), "nulls where allowed");

        let mut value = thing();
        value["state"] = json!("dim");
        value["ratio"] = json!(1.5);
        value["id"] = json!(u64::MAX);
        value["note"] = json!(3);
        value["size"] = json!(true);
        value["parts"] = json!([{"label": "a"}, {"label": "b"}, {"label": "c"}]);
        let found = errors(&value);
        let wanted = [
            "$.id: 18446744073709551615 is not a 64-bit signed integer",
            "$.note: expected string or null, got integer 3",
            "$.parts: 3 items, more than 2",
            "$.ratio: 1.5 is above the maximum 1",
            "$.size: matches none of oneOf",
            "$.state: \"dim\" is not one of [\"on\",\"off\"]",
        ];
        assert_eq!(found.len(), wanted.len(), "{found:#?}");
        for (found, wanted) in found.iter().zip(wanted) {
            assert!(found.starts_with(wanted), "{found} / {wanted}");
        }
    }

    #[test]
    fn one_of_must_match_exactly_one() {
        let document = Document::new(json!({"components": {"schemas": {
            "Either": {"oneOf": [{"type": "number"}, {"type": "integer"}]}
        }}}));
        let checked = document.check("#/components/schemas/Either", &json!(2));
        assert_eq!(checked.errors, ["$: matches 2 of oneOf, not exactly one"]);
        assert!(
            document
                .check("#/components/schemas/Either", &json!(2.5))
                .is_ok()
        );
    }

    #[test]
    fn an_unknown_keyword_or_a_broken_reference_is_an_error_not_a_pass() {
        let document = Document::new(json!({"components": {"schemas": {
            "Loose": {"type": "string", "pattern": "^a"},
            "Broken": {"$ref": "#/components/schemas/Nowhere"},
            "Beside": {"$ref": "#/components/schemas/Loose", "nullable": true}
        }}}));
        let loose = document.check("#/components/schemas/Loose", &json!("b"));
        assert_eq!(loose.errors.len(), 1);
        assert!(
            loose.errors[0].contains("\"pattern\""),
            "{:?}",
            loose.errors
        );
        let broken = document.check("#/components/schemas/Broken", &json!(1));
        assert!(
            broken.errors[0].contains("not in the document"),
            "{broken:?}"
        );
        let beside = document.check("#/components/schemas/Beside", &json!("a"));
        assert!(beside.errors[0].contains("beside $ref"), "{beside:?}");
    }

    #[test]
    fn responses_fall_back_on_default_and_media_types_must_be_documented() {
        let document = document();
        let (ok, key) = document.response("GET", "/api/things/{name}", 200).unwrap();
        assert_eq!(key, "200");
        assert_eq!(ok, "#/paths/~1api~1things~1{name}/get/responses/200");
        let schema = document.media(&ok, "application/json").unwrap();
        assert!(
            document
                .check(&format!("{schema}/schema"), &thing())
                .is_ok()
        );
        let (other, key) = document.response("GET", "/api/things/{name}", 404).unwrap();
        assert_eq!(
            (other.as_str(), key.as_str()),
            ("#/components/responses/Error", "default")
        );
        assert!(document.media(&ok, "text/plain").is_err());
        assert!(
            document
                .response("POST", "/api/things/{name}", 200)
                .is_err()
        );
        assert_eq!(
            document.operations(),
            [Operation {
                method: "GET".into(),
                path: "/api/things/{name}".into(),
                statuses: vec!["200".into(), "default".into()],
            }]
        );
    }

    #[test]
    fn properties_lists_every_reachable_field() {
        let all = document().properties(THING);
        assert_eq!(all.len(), 9, "{all:#?}");
        assert!(all.contains("#/components/schemas/Part/properties/label"));
        assert!(all.contains(&format!("{THING}/properties/note")));
    }
}
