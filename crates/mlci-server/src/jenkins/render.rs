//! How Jenkins' remote API answers: one object model (JSON values, as Stapler's
//! `@Exported` beans) written as `api/json`, `api/xml` or `api/python`, pruned by
//! `?tree=` (nested fields and `{m,n}` ranges) and shaped by `?depth=`; `api/xml` also
//! takes `?xpath=` (the subset clients send: paths, `text()`, `concat`) and `?wrapper=`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::JError;
use crate::error::ApiError;

/// Deepest `?depth=` answered (Jenkins has no limit, but its answers grow fast).
pub(crate) const MAX_DEPTH: u32 = 3;

/// The three flavours of `…/api/<flavour>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Json,
    Xml,
    Python,
}

/// One `name[children]{range}` of a `?tree=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeNode {
    pub name: String,
    pub children: Option<Vec<TreeNode>>,
    pub range: Option<(Option<usize>, Option<usize>)>,
}

/// What a request to `…/api/<flavour>` asked for. Extracted from the path and query, so
/// every API endpoint takes the same parameters the same way.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub flavor: Flavor,
    pub tree: Option<Vec<TreeNode>>,
    pub depth: u32,
    xpath: Option<String>,
    wrapper: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Api {
    type Rejection = JError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path().trim_end_matches('/');
        let flavor = match path.rsplit('/').next() {
            Some("json") => Flavor::Json,
            Some("xml") => Flavor::Xml,
            Some("python") => Flavor::Python,
            other => {
                return Err(ApiError::not_found(format!(
                    "no API flavour `{}` (json, xml or python)",
                    other.unwrap_or_default()
                ))
                .into())
            }
        };
        let mut api = Api {
            flavor,
            tree: None,
            depth: 0,
            xpath: None,
            wrapper: None,
        };
        for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "tree" => api.tree = Some(parse_tree(&value).map_err(|e| ApiError::bad_field("tree", e))?),
                "depth" => {
                    api.depth = value
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|d| *d <= MAX_DEPTH)
                        .ok_or_else(|| {
                            ApiError::bad_field(
                                "depth",
                                format!("must be an integer from 0 to {MAX_DEPTH}, not `{value}`"),
                            )
                        })?;
                }
                "xpath" => api.xpath = Some(value.into_owned()),
                "wrapper" => api.wrapper = Some(value.into_owned()),
                // `pretty`, `jsonp` (not served: no script callbacks), cache busters
                // such as the Remote Trigger plugin's `seed`: ignored as Jenkins does.
                _ => {}
            }
        }
        if api.xpath.is_some() && flavor != Flavor::Xml {
            return Err(ApiError::bad_field("xpath", "only api/xml takes xpath").into());
        }
        Ok(api)
    }
}

impl Api {
    /// Whether nested objects under `key` must be whole (not `{_class, number, url}`
    /// references): at `depth` ≥ 1, or when `tree` asks for fields the reference lacks.
    pub(crate) fn expand(&self, key: &str, reference: &[&str]) -> bool {
        if self.depth >= 1 {
            return true;
        }
        self.tree.as_ref().is_some_and(|tree| {
            tree.iter().any(|n| {
                n.name == key
                    && n.children.as_ref().is_some_and(|c| {
                        c.iter()
                            .any(|f| f.name != "_class" && !reference.contains(&f.name.as_str()))
                    })
            })
        })
    }

    /// The request as seen by the objects under `key`: one level less deep, and the
    /// part of `tree` naming their fields.
    pub(crate) fn child(&self, key: &str) -> Api {
        Api {
            flavor: self.flavor,
            tree: self.tree.as_ref().map(|tree| {
                tree.iter()
                    .find(|n| n.name == key)
                    .and_then(|n| n.children.clone())
                    .unwrap_or_default()
            }),
            depth: self.depth.saturating_sub(1),
            xpath: None,
            wrapper: None,
        }
    }

    /// Whether `key` is asked for at all (fields Jenkins leaves out unless named in `tree`).
    pub(crate) fn names(&self, key: &str) -> bool {
        self.tree
            .as_ref()
            .is_some_and(|t| t.iter().any(|n| n.name == key))
    }

    /// The answer: `value` pruned by `tree` and written in the requested flavour.
    pub(crate) fn respond(&self, value: Value) -> Result<Response, JError> {
        let value = match &self.tree {
            Some(tree) => prune(&value, tree),
            None => value,
        };
        Ok(match self.flavor {
            Flavor::Json => typed("application/json;charset=utf-8", value.to_string()),
            Flavor::Python => typed("text/x-python;charset=utf-8", python(&value)),
            Flavor::Xml => {
                let root = Node::from_value(&root_name(&value), &value);
                match &self.xpath {
                    None => typed("application/xml;charset=utf-8", root.to_xml()),
                    Some(xpath) => self.select(&root, xpath)?,
                }
            }
        })
    }

    fn select(&self, root: &Node, xpath: &str) -> Result<Response, JError> {
        let bad = |why: String| JError::from(ApiError::bad_field("xpath", why));
        match evaluate(root, xpath).map_err(&bad)? {
            Selected::Text(text) => Ok(typed("text/plain;charset=utf-8", text)),
            Selected::Nodes(nodes) => match (&self.wrapper, nodes.as_slice()) {
                (Some(wrapper), _) => {
                    if !is_xml_name(wrapper) {
                        return Err(bad(format!("wrapper `{wrapper}` is not an XML element name")));
                    }
                    let inner: String = nodes.iter().map(|n| n.to_xml()).collect();
                    Ok(typed(
                        "application/xml;charset=utf-8",
                        format!("<{wrapper}>{inner}</{wrapper}>"),
                    ))
                }
                (None, [one]) => Ok(typed("application/xml;charset=utf-8", one.to_xml())),
                (None, []) => Err(ApiError::not_found(format!("XPath {xpath} matched nothing")).into()),
                (None, many) => Err(bad(format!(
                    "XPath {xpath} matched {} nodes; add wrapper=NAME to get them all",
                    many.len()
                ))),
            },
        }
    }
}

fn typed(content_type: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Parses `jobs[name,builds[number]{0,5}],views{,2}`.
pub(crate) fn parse_tree(text: &str) -> Result<Vec<TreeNode>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let nodes = tree_list(&chars, &mut pos)?;
    if pos != chars.len() {
        return Err(format!(
            "unexpected `{}` at character {} of `{text}`",
            chars[pos],
            pos + 1
        ));
    }
    Ok(nodes)
}

fn tree_list(chars: &[char], pos: &mut usize) -> Result<Vec<TreeNode>, String> {
    let mut nodes = Vec::new();
    loop {
        let start = *pos;
        while *pos < chars.len() && !matches!(chars[*pos], ',' | '[' | ']' | '{' | '}') {
            *pos += 1;
        }
        let name: String = chars[start..*pos].iter().collect::<String>().trim().to_owned();
        if name.is_empty() {
            return Err(format!("a field name is missing at character {}", start + 1));
        }
        let mut node = TreeNode {
            name,
            children: None,
            range: None,
        };
        if chars.get(*pos) == Some(&'[') {
            *pos += 1;
            node.children = Some(tree_list(chars, pos)?);
            if chars.get(*pos) != Some(&']') {
                return Err(format!("`[` without `]` after `{}`", node.name));
            }
            *pos += 1;
        }
        if chars.get(*pos) == Some(&'{') {
            let close = chars[*pos..]
                .iter()
                .position(|c| *c == '}')
                .ok_or_else(|| format!("`{{` without `}}` after `{}`", node.name))?;
            let spec: String = chars[*pos + 1..*pos + close].iter().collect();
            node.range = Some(parse_range(&spec)?);
            *pos += close + 1;
        }
        nodes.push(node);
        match chars.get(*pos) {
            Some(',') => *pos += 1,
            _ => return Ok(nodes),
        }
    }
}

/// `{m,n}` (m inclusive, n exclusive), `{m,}`, `{,n}` and `{n}` (element n alone).
fn parse_range(spec: &str) -> Result<(Option<usize>, Option<usize>), String> {
    let number = |s: &str| -> Result<Option<usize>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse()
                .map(Some)
                .map_err(|_| format!("range `{{{spec}}}`: `{s}` is not a number"))
        }
    };
    match spec.split_once(',') {
        Some((from, to)) => Ok((number(from)?, number(to)?)),
        None => {
            let n = number(spec)?.ok_or_else(|| "an empty range `{}`".to_owned())?;
            Ok((Some(n), Some(n + 1)))
        }
    }
}

/// Keeps what `tree` names: a named object without children keeps its `_class` alone,
/// as Jenkins answers `tree=lastBuild`.
pub(crate) fn prune(value: &Value, tree: &[TreeNode]) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| prune(v, tree)).collect()),
        Value::Object(map) => {
            let mut out = Map::new();
            if let Some(class) = map.get("_class") {
                out.insert("_class".into(), class.clone());
            }
            for node in tree {
                let Some(field) = map.get(&node.name) else {
                    continue;
                };
                let field = match (field, node.range) {
                    (Value::Array(items), Some((from, to))) => {
                        let from = from.unwrap_or(0).min(items.len());
                        let to = to.unwrap_or(items.len()).clamp(from, items.len());
                        Value::Array(items[from..to].to_vec())
                    }
                    _ => field.clone(),
                };
                let kept = match &node.children {
                    Some(children) => prune(&field, children),
                    None => prune(&field, &[]),
                };
                out.insert(node.name.clone(), kept);
            }
            Value::Object(out)
        }
        scalar => scalar.clone(),
    }
}

/// `api/python`: Python literals (`True`, `False`, `None`) in JSON's layout, which
/// `ast.literal_eval` reads.
pub(crate) fn python(value: &Value) -> String {
    let mut out = String::new();
    write_python(value, &mut out);
    out
}

fn write_python(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        // JSON's string escapes (\", \\, \n, \uXXXX) are Python's too.
        Value::Number(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_python(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_python(item, out);
            }
            out.push('}');
        }
    }
}

/// An XML element of `api/xml`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    name: String,
    class: Option<String>,
    text: Option<String>,
    children: Vec<Node>,
}

/// Stapler's root element: the bean's class, simple name, first letter lowered
/// (`hudson.model.Queue$LeftItem` → `leftItem`).
fn root_name(value: &Value) -> String {
    let class = value.get("_class").and_then(Value::as_str).unwrap_or("object");
    let simple = class.rsplit(['.', '$']).next().unwrap_or(class);
    let mut chars = simple.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "object".into(),
    }
}

/// Stapler names each item of a collection property by the property's name without a
/// trailing `s` (`jobs` → `<job>`).
fn singular(name: &str) -> &str {
    name.strip_suffix('s').filter(|s| !s.is_empty()).unwrap_or(name)
}

fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Node {
    fn from_value(name: &str, value: &Value) -> Node {
        let mut node = Node {
            name: if is_xml_name(name) {
                name.to_owned()
            } else {
                "_".into()
            },
            class: None,
            text: None,
            children: Vec::new(),
        };
        match value {
            Value::Object(map) => {
                node.class = map.get("_class").and_then(Value::as_str).map(str::to_owned);
                for (key, item) in map {
                    match item {
                        Value::Null => {}
                        _ if key == "_class" => {}
                        Value::Array(items) => node.children.extend(
                            items
                                .iter()
                                .filter(|i| !i.is_null())
                                .map(|i| Node::from_value(singular(key), i)),
                        ),
                        _ => node.children.push(Node::from_value(key, item)),
                    }
                }
            }
            Value::String(s) => node.text = Some(s.clone()),
            Value::Null => {}
            other => node.text = Some(other.to_string()),
        }
        node
    }

    fn to_xml(&self) -> String {
        let mut out = format!("<{}", self.name);
        if let Some(class) = &self.class {
            out.push_str(&format!(
                " _class=\"{}\"",
                quick_xml::escape::escape(class.as_str())
            ));
        }
        out.push('>');
        if let Some(text) = &self.text {
            out.push_str(&quick_xml::escape::escape(text.as_str()));
        }
        for child in &self.children {
            out.push_str(&child.to_xml());
        }
        out.push_str(&format!("</{}>", self.name));
        out
    }

    /// The concatenated text of the element and its descendants (XPath's string value).
    fn string_value(&self) -> String {
        let mut out = self.text.clone().unwrap_or_default();
        for child in &self.children {
            out.push_str(&child.string_value());
        }
        out
    }

    fn descendants<'a>(&'a self, out: &mut Vec<&'a Node>) {
        for child in &self.children {
            out.push(child);
            child.descendants(out);
        }
    }
}

enum Selected<'a> {
    Nodes(Vec<&'a Node>),
    Text(String),
}

/// The XPath subset Jenkins clients send: `/a/b`, `//a/b`, `…/text()`, `string(…)` and
/// `concat(…, "literal", …)` (the Remote Trigger plugin's crumb query).
fn evaluate<'a>(root: &'a Node, xpath: &str) -> Result<Selected<'a>, String> {
    let xpath = xpath.trim();
    if let Some(args) = call(xpath, "concat") {
        let mut text = String::new();
        for arg in split_args(args) {
            text.push_str(&string_of(root, &arg)?);
        }
        return Ok(Selected::Text(text));
    }
    if let Some(arg) = call(xpath, "string") {
        return string_of(root, arg).map(Selected::Text);
    }
    if let Some(path) = xpath.strip_suffix("/text()") {
        let nodes = path_nodes(root, path)?;
        return Ok(Selected::Text(nodes.iter().map(|n| n.string_value()).collect()));
    }
    path_nodes(root, xpath).map(Selected::Nodes)
}

fn call<'x>(xpath: &'x str, function: &str) -> Option<&'x str> {
    xpath
        .strip_prefix(function)
        .map(str::trim_start)
        .and_then(|rest| rest.strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
}

/// Arguments split on the commas outside quotes.
fn split_args(args: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote = None;
    for c in args.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                out.last_mut().expect("one").push(c);
            }
            (Some(q), _) if c == q => {
                quote = None;
                out.last_mut().expect("one").push(c);
            }
            (None, ',') => out.push(String::new()),
            _ => out.last_mut().expect("one").push(c),
        }
    }
    out.into_iter().map(|a| a.trim().to_owned()).collect()
}

fn string_of(root: &Node, arg: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if let Some(literal) = arg.strip_prefix(q).and_then(|a| a.strip_suffix(q)) {
            return Ok(literal.to_owned());
        }
    }
    let path = arg.strip_suffix("/text()").unwrap_or(arg);
    Ok(path_nodes(root, path)?
        .first()
        .map(|n| n.string_value())
        .unwrap_or_default())
}

fn path_nodes<'a>(root: &'a Node, path: &str) -> Result<Vec<&'a Node>, String> {
    let unsupported =
        || format!("`{path}` is not in the XPath subset served (/a/b, //a/b, text(), string(), concat())");
    let (anywhere, rest) = if let Some(rest) = path.strip_prefix("//") {
        (true, rest)
    } else if let Some(rest) = path.strip_prefix('/') {
        (false, rest)
    } else {
        return Err(unsupported());
    };
    let steps: Vec<&str> = rest.split('/').collect();
    if steps.iter().any(|s| !is_xml_name(s)) {
        return Err(unsupported());
    }
    let mut current: Vec<&Node> = if anywhere {
        let mut all = vec![root];
        root.descendants(&mut all);
        all.into_iter().filter(|n| n.name == steps[0]).collect()
    } else if root.name == steps[0] {
        vec![root]
    } else {
        Vec::new()
    };
    for step in &steps[1..] {
        current = current
            .iter()
            .flat_map(|n| n.children.iter().filter(|c| c.name == *step))
            .collect();
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn trees_parse_with_nesting_and_ranges() {
        let tree = parse_tree("jobs[name,builds[number]{0,5}],views{,2},x{3}").unwrap();
        assert_eq!(tree.len(), 3);
        assert_eq!(tree[0].name, "jobs");
        let builds = &tree[0].children.as_ref().unwrap()[1];
        assert_eq!(
            (builds.name.as_str(), builds.range),
            ("builds", Some((Some(0), Some(5))))
        );
        assert_eq!(tree[1].range, Some((None, Some(2))));
        assert_eq!(tree[2].range, Some((Some(3), Some(4))));
        for bad in ["", "jobs[name", "a,,b", "jobs{1,x}", "a]"] {
            assert!(parse_tree(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_keeps_named_fields_classes_and_ranges() {
        let value = json!({
            "_class": "hudson.model.Hudson",
            "mode": "NORMAL",
            "jobs": [
                {"_class": "P", "name": "a", "color": "blue", "url": "u/a"},
                {"_class": "P", "name": "b", "color": "red", "url": "u/b"},
                {"_class": "P", "name": "c", "color": "red", "url": "u/c"},
            ],
            "primaryView": {"_class": "V", "name": "all"},
        });
        let pruned = prune(&value, &parse_tree("jobs[name]{1,},primaryView").unwrap());
        assert_eq!(
            pruned,
            json!({
                "_class": "hudson.model.Hudson",
                "jobs": [{"_class": "P", "name": "b"}, {"_class": "P", "name": "c"}],
                "primaryView": {"_class": "V"},
            })
        );
    }

    #[test]
    fn python_literals_and_xml_follow_jenkins() {
        let value = json!({"_class": "hudson.model.Queue$LeftItem", "cancelled": false, "why": null,
            "jobs": [{"name": "a<b"}], "n": 3});
        assert_eq!(
            python(&value),
            r#"{"_class":"hudson.model.Queue$LeftItem","cancelled":False,"jobs":[{"name":"a<b"}],"n":3,"why":None}"#
        );
        let xml = Node::from_value(&root_name(&value), &value).to_xml();
        assert_eq!(
            xml,
            r#"<leftItem _class="hudson.model.Queue$LeftItem"><cancelled>false</cancelled><job><name>a&lt;b</name></job><n>3</n></leftItem>"#
        );
    }

    #[test]
    fn the_xpath_subset_answers_the_crumb_query_and_paths() {
        let value = json!({"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": "c0ffee",
            "crumbRequestField": "Jenkins-Crumb", "jobs": [{"name": "a"}, {"name": "b"}]});
        let root = Node::from_value(&root_name(&value), &value);
        let text = |x: &str| match evaluate(&root, x).unwrap() {
            Selected::Text(t) => t,
            Selected::Nodes(_) => panic!("{x}: nodes"),
        };
        assert_eq!(
            text(r#"concat(//crumbRequestField,":",//crumb)"#),
            "Jenkins-Crumb:c0ffee"
        );
        assert_eq!(text("/defaultCrumbIssuer/crumb/text()"), "c0ffee");
        match evaluate(&root, "//job/name").unwrap() {
            Selected::Nodes(nodes) => assert_eq!(nodes.len(), 2),
            Selected::Text(_) => panic!("text"),
        }
        assert!(evaluate(&root, "//job[1]").is_err());
        assert!(evaluate(&root, "count(//job)").is_err());
    }
}
