//! Pure drift detection: does a live object still hold every field the operator applied?

use serde_json::Value;

/// The first path (JSON-pointer style) where `live` no longer holds what `desired` asks for, or
/// `None` when it holds all of it. Extra fields in `live` (API-server defaults, other field
/// managers) are fine; a desired list is held when each of its elements is held by some live
/// element (lists with merge keys may gain entries from other managers). Only paths are
/// returned, never values: the objects may be Secrets.
pub fn first_drift(desired: &Value, live: &Value) -> Option<String> {
    walk(desired, live, String::new())
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The lists (JSON pointer and the desired list) where `live` holds an element `desired` does not
/// ask for in place of one it does. Server-side apply cannot repair these when the live element
/// is keyed differently (a Service port renumbered by `kubectl edit` stays, owned by kubectl, and
/// the applied one then clashes with it), so the caller replaces such lists outright.
pub fn drifted_lists(desired: &Value, live: &Value) -> Vec<(String, Value)> {
    let mut out = vec![];
    lists(desired, live, String::new(), &mut out);
    out
}

fn lists(desired: &Value, live: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                if let Some(lv) = l.get(k) {
                    lists(dv, lv, format!("{path}/{}", escape(k)), out);
                }
            }
        }
        (Value::Array(_), Value::Array(_)) if walk(desired, live, String::new()).is_some() => {
            out.push((path, desired.clone()));
        }
        _ => {}
    }
}

/// JSON pointer escaping of one key (RFC 6901).
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn walk(desired: &Value, live: &Value, path: String) -> Option<String> {
    match (desired, live) {
        (Value::Null, _) => None,
        (Value::Object(d), Value::Object(l)) => d.iter().find_map(|(k, dv)| {
            let p = format!("{path}/{}", escape(k));
            match l.get(k) {
                Some(lv) => walk(dv, lv, p),
                // The API server drops empty values when it stores an object.
                None if empty(dv) => None,
                None => Some(p),
            }
        }),
        (Value::Array(d), Value::Array(l)) => d.iter().enumerate().find_map(|(i, dv)| {
            let held = l.iter().any(|lv| walk(dv, lv, String::new()).is_none());
            (!held).then(|| format!("{path}/{i}"))
        }),
        (Value::Array(d), Value::Null) if d.is_empty() => None,
        (Value::Object(d), Value::Null) if d.is_empty() => None,
        (Value::Number(a), Value::Number(b)) => (a.as_f64() != b.as_f64()).then_some(path),
        (d, l) => (d != l).then_some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_foreign_fields_are_not_drift() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "redis", "image": "redis:7", "env": [{"name": "A", "value": "1"}]}]}},
            "selector": {}, "tolerations": []}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10, "template": {"spec": {
            "containers": [{"name": "redis", "image": "redis:7", "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "B", "value": "x"}, {"name": "A", "value": "1"}]}],
            "dnsPolicy": "ClusterFirst"}}}});
        assert_eq!(first_drift(&desired, &live), None);
    }

    #[test]
    fn changed_or_removed_fields_are_drift_and_only_paths_are_reported() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "redis", "image": "redis:7"}]}}}, "data": {"password": "s3cret"}});
        let scaled = json!({"spec": {"replicas": 0, "template": {"spec": {"containers": [
            {"name": "redis", "image": "redis:7"}]}}}, "data": {"password": "s3cret"}});
        assert_eq!(
            first_drift(&desired, &scaled).as_deref(),
            Some("/spec/replicas")
        );
        let reimaged = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "redis", "image": "evil:1"}]}}}, "data": {"password": "s3cret"}});
        assert_eq!(
            first_drift(&desired, &reimaged).as_deref(),
            Some("/spec/template/spec/containers/0")
        );
        let changed = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "redis", "image": "redis:7"}]}}}, "data": {"password": "other"}});
        let p = first_drift(&desired, &changed).unwrap();
        assert_eq!(p, "/data/password");
        assert!(!p.contains("s3cret") && !p.contains("other"));
        let gone = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "redis", "image": "redis:7"}]}}}, "data": {"password": "s3cret"}});
        assert_eq!(
            first_drift(&desired, &gone).as_deref(),
            Some("/spec/replicas")
        );
    }

    #[test]
    fn drifted_lists_are_found_with_escaped_pointers() {
        let desired = json!({"metadata": {"annotations": {"a/b": "x"}},
            "spec": {"ports": [{"name": "mongodb", "port": 27017}], "selector": {"app": "m"},
            "template": {"spec": {"containers": [{"name": "c", "args": ["--x"]}]}}}});
        let live = json!({"metadata": {"annotations": {"a/b": "y"}},
            "spec": {"ports": [{"name": "mongodb", "port": 27018}], "selector": {"app": "m"},
            "template": {"spec": {"containers": [{"name": "c", "args": ["--x"], "image": "i"}]}}}});
        assert_eq!(
            drifted_lists(&desired, &live),
            vec![("/spec/ports".to_string(), desired["spec"]["ports"].clone())]
        );
        assert_eq!(
            first_drift(&desired, &live).as_deref(),
            Some("/metadata/annotations/a~1b")
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(first_drift(&json!({"a": 1}), &json!({"a": 1.0})), None);
        assert!(first_drift(&json!({"a": 1}), &json!({"a": "1"})).is_some());
    }
}
