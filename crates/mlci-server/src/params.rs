//! Step parameters at the edge: a JSON object (a request body, Jenkins form fields made
//! typed, a webhook's push) becomes a step's own params struct here, once, with unknown
//! fields refused and every error naming its field. The same struct gives the parameter
//! definitions Jenkins shows and the JSON Schema the OpenAPI document carries, so the
//! three cannot drift apart.

use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};

use crate::steps::{ParamDef, ParamError, ParamKind};

/// A step's parameters as they arrive: a JSON object, not yet checked.
pub type RawParams = Map<String, Value>;

/// Parse `raw` into `T` (a `#[serde(deny_unknown_fields)]` struct). Empty and
/// whitespace-only strings and `null` count as absent (what a Jenkins form sends for an
/// unset parameter). The error names the field: `is required`, `is not a parameter of
/// this step`, or the field's own message.
pub fn parse_params<T: DeserializeOwned>(raw: &RawParams) -> Result<T, ParamError> {
    let given: RawParams = raw
        .iter()
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::String(s) => !s.trim().is_empty(),
            _ => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_path_to_error::deserialize::<_, T>(Value::Object(given)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if let Some(name) = quoted_after(&inner, "missing field ") {
            ParamError::new(name, "is required")
        } else if let Some(name) = quoted_after(&inner, "unknown field ") {
            let known = field_names::<T>().join(", ");
            ParamError::new(
                name,
                format!("is not a parameter of this step (parameters: {known})"),
            )
        } else {
            let field = if path == "." { "body".to_owned() } else { path };
            ParamError::new(field, inner)
        }
    })
}

/// The name between backticks after `prefix` in a serde message (``missing field `x` ``).
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    Some(rest.split('`').next()?.to_owned())
}

/// The JSON Schema of `T` (for the OpenAPI document).
pub fn params_schema<T: JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

/// The parameter definitions of `T`, in declaration order: name, type, default and
/// description (its doc comment), from its JSON Schema.
pub fn param_definitions<T: JsonSchema + DeserializeOwned>() -> Vec<ParamDef> {
    let schema = params_schema::<T>();
    let properties = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    field_names::<T>()
        .into_iter()
        .map(|name| {
            let property = properties
                .and_then(|p| p.get(name))
                .cloned()
                .unwrap_or(Value::Null);
            ParamDef {
                name: name.to_owned(),
                kind: kind_of(&types_of(&schema, &property, 0)),
                default: property.get("default").and_then(|d| match d {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                }),
                description: property
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                required: required.contains(&name),
            }
        })
        .collect()
}

/// The JSON types a property admits, through `$ref`s into `$defs` and `anyOf`/`oneOf`
/// (an `Option` of a newtype is `anyOf: [{$ref}, {type: null}]`).
fn types_of(schema: &Value, property: &Value, depth: usize) -> Vec<String> {
    if depth > 8 {
        return Vec::new();
    }
    let mut types: Vec<String> = match property.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if let Some(target) = property
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| schema.get("$defs")?.get(name))
    {
        types.extend(types_of(schema, target, depth + 1));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(alternatives)) = property.get(key) {
            for alternative in alternatives {
                types.extend(types_of(schema, alternative, depth + 1));
            }
        }
    }
    types
}

fn kind_of(types: &[String]) -> ParamKind {
    let has = |t: &str| types.iter().any(|x| x == t);
    if has("integer") {
        ParamKind::Integer
    } else if has("number") {
        ParamKind::Number
    } else if has("boolean") {
        ParamKind::Bool
    } else {
        ParamKind::String
    }
}

/// The field names of a struct in declaration order, as serde sees them: asks `T`'s
/// `Deserialize` impl which fields it expects.
pub fn field_names<T: DeserializeOwned>() -> Vec<&'static str> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only records the field list `deserialize_struct` is called with.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Recorded;

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Recorded> {
        self.0.extend_from_slice(fields);
        Err(Recorded)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Declares a step set: an enum with one params struct per step, and its [`StepSet`]
/// implementation (names, parsing at the edge, definitions and schemas from the structs).
///
/// ```ignore
/// mlci_server::step_set! {
///     /// The steps of this service.
///     pub enum MySteps {
///         Noop(mlci_server::NoopParams) = "noop",
///     }
/// }
/// ```
///
/// [`StepSet`]: crate::StepSet
#[macro_export]
macro_rules! step_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($params:ty) = $step:literal ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant($params), )*
        }

        impl $crate::StepSet for $name {
            fn names() -> Vec<&'static str> {
                vec![$($step),*]
            }

            fn parse(step: &str, raw: &$crate::RawParams) -> Result<Self, $crate::ParamError> {
                match step {
                    $( $step => $crate::parse_params::<$params>(raw).map(Self::$variant), )*
                    other => Err($crate::ParamError::new("step", format!("no step `{other}`"))),
                }
            }

            fn name(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $step, )*
                }
            }

            fn definitions(step: &str) -> Vec<$crate::ParamDef> {
                match step {
                    $( $step => $crate::param_definitions::<$params>(), )*
                    _ => Vec::new(),
                }
            }

            fn schema(step: &str) -> Option<$crate::JsonValue> {
                match step {
                    $( $step => Some($crate::params_schema::<$params>()), )*
                    _ => None,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// `train`-like parameters for the tests.
    #[derive(Debug, PartialEq, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Example {
        /// repository name
        repository: String,
        /// validation accuracy goal
        #[serde(default = "goal")]
        goal: f64,
        /// how many
        count: Option<u32>,
        /// whether
        #[serde(default)]
        flag: bool,
    }

    fn goal() -> f64 {
        0.8
    }

    fn raw(v: Value) -> RawParams {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_valid_object_parses_and_empty_strings_are_absent() {
        let p: Example = parse_params(&raw(
            serde_json::json!({"repository": "m", "count": 3, "goal": ""}),
        ))
        .unwrap();
        assert_eq!(
            p,
            Example {
                repository: "m".into(),
                goal: 0.8,
                count: Some(3),
                flag: false
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_params::<Example>(&raw(serde_json::json!({"repository": " "}))).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("repository", "is required")
        );
        let e = parse_params::<Example>(&raw(serde_json::json!({"repository": "m", "nope": 1}))).unwrap_err();
        assert_eq!(e.field, "nope");
        assert!(e.message.contains("repository, goal, count, flag"), "{e}");
        let e =
            parse_params::<Example>(&raw(serde_json::json!({"repository": "m", "count": "x"}))).unwrap_err();
        assert_eq!(e.field, "count");
    }

    #[test]
    fn definitions_come_from_the_struct_in_order() {
        let defs = param_definitions::<Example>();
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["repository", "goal", "count", "flag"]);
        assert_eq!(defs[0].kind, ParamKind::String);
        assert_eq!(defs[0].description, "repository name");
        assert!(defs[0].required && !defs[1].required);
        assert_eq!(defs[1].kind, ParamKind::Number);
        assert_eq!(defs[1].default.as_deref(), Some("0.8"));
        assert_eq!(defs[2].kind, ParamKind::Integer);
        assert_eq!(defs[3].kind, ParamKind::Bool);
    }
}
