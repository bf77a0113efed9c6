//! Vhost and user limits over HTTP, as RabbitMQ 3.10's management API has
//! them (`rabbit_mgmt_wm_limit[s]`, `rabbit_mgmt_wm_user_limit[s]`, and the
//! `vhost-limits` runtime parameter of `rabbit_mgmt_wm_parameter[s]`),
//! with its validation texts (`rabbit_parameter_validation`), which print
//! the offending JSON as Erlang terms (`~p`).
//!
//! * `GET /api/vhost-limits[/V]`: `[{"vhost": V, "value": {...}}]`;
//!   `PUT|DELETE /api/vhost-limits/V/NAME` (`{"value": N}`) set or remove
//!   one limit (administrators).
//! * `GET /api/user-limits[/U]`: `[{"user": U, "value": {...}}]`;
//!   `PUT|DELETE /api/user-limits/U/NAME` likewise.
//! * `GET|PUT|DELETE /api/parameters/vhost-limits/V/limits`: the vhost's
//!   whole set at once (what `warrenctl set_vhost_limits` and
//!   `clear_vhost_limits` use; policymakers), and the listings of
//!   `/api/parameters[/vhost-limits[/V]]`.

use super::Mgmt;
use super::api::{need_admin, visible_vhost};
use super::auth::Who;
use super::http::*;
use super::write::{self, control};
use crate::admin::{AdminOp, BrokerSnapshot, LimitsOp};
use crate::broker::limits::{Limits, USER_LIMITS, VHOST_LIMITS};
use axum::http::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Which limits: a vhost's (`limits`, RabbitMQ's parameter name) or a
/// user's (`user-limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vhost,
    User,
}

impl Kind {
    fn names(self) -> &'static [&'static str; 2] {
        match self {
            Kind::Vhost => &VHOST_LIMITS,
            Kind::User => &USER_LIMITS,
        }
    }

    /// The name RabbitMQ's messages give the set.
    fn what(self) -> &'static str {
        match self {
            Kind::Vhost => "limits",
            Kind::User => "user-limits",
        }
    }
}

/// Checks a definition of limits (a JSON object; an array of `[name,
/// value]` pairs stands for an Erlang proplist) as
/// `rabbit_parameter_validation:proplist` does: every known name must
/// have an integer, anything else is "unrecognised". The errors come in
/// RabbitMQ's order: unrecognised terms first, then the known names last
/// to first.
pub fn validate(kind: Kind, def: &Value) -> Result<Limits, Vec<String>> {
    let pairs: Vec<(String, &Value)> = match def {
        Value::Object(o) => {
            let mut v: Vec<_> = o.iter().map(|(k, v)| (k.clone(), v)).collect();
            // An Erlang map's `maps:to_list` is ordered by key.
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
        Value::Array(a) if a.is_empty() => Vec::new(),
        // JSON has no Erlang tuples: no element of a list is a `{name, value}`.
        Value::Array(_) => {
            return Err(vec![format!(
                "Unrecognised terms {} in {}",
                erl(def),
                kind.what()
            )]);
        }
        other => return Err(vec![format!("{} not a list {}", kind.what(), erl(other))]),
    };
    let mut errors = Vec::new();
    let mut limits = Limits::default();
    for name in kind.names() {
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == name) {
            match v.as_i64() {
                Some(n) => {
                    limits.0.insert(name.to_string(), n);
                }
                None => errors.push(format!("{name} should be a number, actually was {}", erl(v))),
            }
        }
    }
    errors.reverse();
    let rest: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| !kind.names().contains(&k.as_str()))
        .map(|(k, v)| format!("{{{},{}}}", erl_binary(k.as_bytes()), erl(v)))
        .collect();
    if !rest.is_empty() {
        errors.insert(
            0,
            format!("Unrecognised terms [{}] in {}", rest.join(","), kind.what()),
        );
    }
    if errors.is_empty() {
        Ok(limits)
    } else {
        Err(errors)
    }
}

/// A vhost limits error as the API and rabbitmqctl show it
/// (`rabbit_runtime_parameters:format_error`).
pub fn vhost_error(errors: &[String]) -> String {
    let mut s = String::from("Validation failed\n\n");
    for e in errors {
        s.push_str(e);
        s.push('\n');
    }
    s
}

/// A user limits error: RabbitMQ formats the one error it expects
/// (`validate_parameters_and_update_limit`; with several it fails
/// outright, they are joined here).
pub fn user_error(errors: &[String]) -> String {
    errors.join("\n")
}

/// `io_lib:format("~p")` of a JSON value as RabbitMQ's JSON decoder gives
/// it to Erlang (strings are binaries, `true`/`false`/`null` atoms, objects
/// maps), on one line (RabbitMQ breaks terms past 80 columns; limit values
/// rarely get there).
pub fn erl(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => erl_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => erl_binary(s.as_bytes()),
        Value::Array(a) => {
            // A list of printable character codes is a string to `~p`.
            let codes: Option<Vec<u8>> = a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|c| u8::try_from(c).ok())
                        .filter(|&c| printable(c))
                })
                .collect();
            match codes {
                Some(c) if !c.is_empty() => quoted(&c),
                _ => format!("[{}]", a.iter().map(erl).collect::<Vec<_>>().join(",")),
            }
        }
        Value::Object(o) => {
            let mut items: Vec<_> = o.iter().collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = items
                .iter()
                .map(|(k, v)| format!("{} => {}", erl_binary(k.as_bytes()), erl(v)))
                .collect();
            format!("#{{{}}}", inner.join(","))
        }
    }
}

/// A float as Erlang prints it: shortest round-trip digits, always with a
/// fraction (`10.0`, `1.0e20`).
fn erl_float(f: f64) -> String {
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => s,
    }
}

use crate::session::erl::printable;

fn quoted(bytes: &[u8]) -> String {
    let mut out = String::new();
    crate::session::erl::quoted(bytes, &mut out);
    out
}

/// A binary as `~p` prints it: `<<"text">>` when every byte is printable
/// latin-1, the bytes otherwise.
fn erl_binary(b: &[u8]) -> String {
    if b.iter().all(|&c| printable(c)) {
        format!("<<{}>>", quoted(b))
    } else {
        let bytes: Vec<String> = b.iter().map(|c| c.to_string()).collect();
        format!("<<{}>>", bytes.join(","))
    }
}

/// Limits as the API shows them: an object, or `[]` for an empty set (an
/// empty Erlang proplist, as RabbitMQ answers).
fn value(l: &BTreeMap<String, i64>) -> Value {
    if l.is_empty() { json!([]) } else { json!(l) }
}

/// `rabbit_mgmt_util:with_decode([value], …)`: the body's `value`.
fn body_value(call: &Call) -> Result<Value, Reply> {
    let text = std::str::from_utf8(&call.body).unwrap_or("").trim();
    let obj = match text {
        "" | "null" | "undefined" => serde_json::Map::new(),
        _ => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => o,
            Ok(Value::Bool(_)) | Ok(Value::Null) => serde_json::Map::new(),
            Ok(Value::String(_)) => {
                return Err(bad_request(
                    "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?",
                ));
            }
            _ => return Err(bad_request("not_json")),
        },
    };
    obj.get("value")
        .cloned()
        .ok_or_else(|| bad_request("[{key_missing,value}]"))
}

fn vhost_limits_of<'a>(snap: &'a BrokerSnapshot, vhost: &str) -> Option<&'a BTreeMap<String, i64>> {
    snap.vhosts
        .iter()
        .find(|v| v.name == vhost)
        .and_then(|v| v.limits.as_ref())
}

/// The `vhost-limits` parameter of a vhost, as `/api/parameters` shows it.
fn parameter(vhost: &str, l: &BTreeMap<String, i64>) -> Value {
    json!({ "value": value(l), "vhost": vhost, "component": "vhost-limits", "name": "limits" })
}

/// Every `vhost-limits` parameter of the vhosts `keep` accepts (for
/// `/api/parameters` and definitions exports).
pub(super) fn parameters(snap: &BrokerSnapshot, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    snap.vhosts
        .iter()
        .filter(|v| keep(&v.name))
        .filter_map(|v| v.limits.as_ref().map(|l| parameter(&v.name, l)))
        .collect()
}

/// The GET endpoints; `None` when the path is not one of them.
pub(super) fn read(who: &Who, snap: &BrokerSnapshot, p: &[&str]) -> Option<Res> {
    Some(match p {
        ["vhost-limits"] => Ok(Reply::json(
            &snap
                .vhosts
                .iter()
                .filter(|v| who.sees_vhost(&v.name))
                .filter_map(|v| {
                    v.limits
                        .as_ref()
                        .map(|l| json!({ "vhost": v.name, "value": value(l) }))
                })
                .collect::<Vec<_>>(),
        )),
        ["vhost-limits", v] => visible_vhost(who, snap, v).map(|_| {
            // RabbitMQ lists a vhost's own limits only when there are some.
            let rows: Vec<Value> = vhost_limits_of(snap, v)
                .filter(|l| !l.is_empty())
                .map(|l| json!({ "vhost": v, "value": l }))
                .into_iter()
                .collect();
            Reply::json(&rows)
        }),
        ["user-limits"] => Ok(Reply::json(
            &snap
                .users
                .iter()
                .filter(|u| !u.limits.is_empty())
                .map(|u| json!({ "user": u.name, "value": u.limits }))
                .collect::<Vec<_>>(),
        )),
        ["user-limits", u] => match snap.users.iter().find(|x| x.name == *u) {
            None => Err(not_found()),
            Some(x) if x.limits.is_empty() => Ok(Reply::json(&json!([]))),
            Some(x) => Ok(Reply::json(&json!([{ "user": x.name, "value": x.limits }]))),
        },
        ["parameters", rest @ ..] if rest.len() <= 3 => {
            if let Err(e) = policymaker(who, snap, None) {
                return Some(Err(e));
            }
            let vhost = |v: &str| -> Result<(), Reply> {
                if !snap.vhosts.iter().any(|x| x.name == v) {
                    return Err(not_found());
                }
                policymaker(who, snap, Some(v))
            };
            match rest {
                [] => Ok(Reply::json(&parameters(snap, |v| who.sees_vhost(v)))),
                ["vhost-limits"] => Ok(Reply::json(&parameters(snap, |v| who.sees_vhost(v)))),
                ["vhost-limits", v] => vhost(v).map(|_| Reply::json(&parameters(snap, |x| x == *v))),
                ["vhost-limits", v, "limits"] => vhost(v).and_then(|_| {
                    vhost_limits_of(snap, v)
                        .map(|l| Reply::json(&parameter(v, l)))
                        .ok_or_else(not_found)
                }),
                // No other component exists here.
                [_] => Ok(Reply::json(&json!([]))),
                [_, v] => vhost(v).map(|_| Reply::json(&json!([]))),
                _ => Err(not_found()),
            }
        }
        _ => return None,
    })
}

/// The PUT and DELETE endpoints; `None` when the path is not one of them.
pub(super) fn write(m: &Mgmt, call: &Call, who: &Who, snap: &BrokerSnapshot, p: &[&str]) -> Option<Res> {
    let method = &call.method;
    Some(match (method, p) {
        (&Method::PUT, ["vhost-limits", v, name]) => need_admin(who).and_then(|_| {
            if !snap.vhosts.iter().any(|x| x.name == *v) {
                return Err(Reply::error(404, "not_found", "vhost_not_found"));
            }
            let val = body_value(call)?;
            let limits =
                validate(Kind::Vhost, &json!({ *name: val })).map_err(|e| bad_request(&vhost_error(&e)))?;
            control(
                m,
                who,
                AdminOp::VhostLimits {
                    vhost: v.to_string(),
                    op: LimitsOp::Merge(limits),
                },
            )?;
            Ok(Reply::empty(204))
        }),
        (&Method::DELETE, ["vhost-limits", v, name]) => need_admin(who).and_then(|_| {
            // RabbitMQ fails (500) for a missing vhost.
            if !snap.vhosts.iter().any(|x| x.name == *v) {
                return Err(Reply::error(404, "not_found", "vhost_not_found"));
            }
            control(
                m,
                who,
                AdminOp::VhostLimits {
                    vhost: v.to_string(),
                    op: LimitsOp::Remove(name.to_string()),
                },
            )?;
            Ok(Reply::empty(204))
        }),
        (&Method::PUT, ["user-limits", u, name]) => need_admin(who).and_then(|_| {
            let val = body_value(call)?;
            let limits =
                validate(Kind::User, &json!({ *name: val })).map_err(|e| bad_request(&user_error(&e)))?;
            if !snap.users.iter().any(|x| x.name == *u) {
                // RabbitMQ's answer, an Erlang tuple as a list.
                let mut r = Reply::json(&json!({ "error": "bad_request", "reason": ["no_such_user", u] }));
                r.status = 400;
                return Err(r);
            }
            control(
                m,
                who,
                AdminOp::UserLimits {
                    user: u.to_string(),
                    op: LimitsOp::Merge(limits),
                },
            )?;
            Ok(Reply::empty(204))
        }),
        (&Method::DELETE, ["user-limits", u, name]) => need_admin(who).and_then(|_| {
            // RabbitMQ fails (500) for a missing user.
            if !snap.users.iter().any(|x| x.name == *u) {
                return Err(not_found());
            }
            control(
                m,
                who,
                AdminOp::UserLimits {
                    user: u.to_string(),
                    op: LimitsOp::Remove(name.to_string()),
                },
            )?;
            Ok(Reply::empty(204))
        }),
        (&Method::PUT, ["parameters", component, v, name]) => {
            policymaker(who, snap, Some(v)).and_then(|_| {
                if !snap.vhosts.iter().any(|x| x.name == *v) {
                    return Err(Reply::error(404, "not_found", "vhost_not_found"));
                }
                let val = body_value(call)?;
                if *component != "vhost-limits" {
                    return Err(bad_request(&vhost_error(&[format!(
                        "component {component} not found"
                    )])));
                }
                // RabbitMQ keeps one parameter per vhost, named `limits`.
                if *name != "limits" {
                    return Err(bad_request(&vhost_error(&[format!(
                        "vhost-limits parameters are named 'limits', not '{name}'"
                    )])));
                }
                let limits = validate(Kind::Vhost, &val).map_err(|e| bad_request(&vhost_error(&e)))?;
                let existed = vhost_limits_of(snap, v).is_some();
                control(
                    m,
                    who,
                    AdminOp::VhostLimits {
                        vhost: v.to_string(),
                        op: LimitsOp::Set(limits),
                    },
                )?;
                Ok(Reply::created_or_updated(!existed))
            })
        }
        (&Method::DELETE, ["parameters", component, v, name]) => {
            policymaker(who, snap, Some(v)).and_then(|_| {
                if *component != "vhost-limits" || *name != "limits" || vhost_limits_of(snap, v).is_none() {
                    return Err(not_found());
                }
                control(
                    m,
                    who,
                    AdminOp::VhostLimits {
                        vhost: v.to_string(),
                        op: LimitsOp::Clear,
                    },
                )?;
                Ok(Reply::empty(204))
            })
        }
        _ => return None,
    })
}

/// `rabbit_mgmt_util:is_authorized_policies` (for a vhost, when one is
/// named): policymakers, in the vhosts they may use; RabbitMQ's text.
fn policymaker(who: &Who, snap: &BrokerSnapshot, v: Option<&str>) -> Result<(), Reply> {
    let denied = || forbidden("User not authorised to access object");
    if !who.is_policymaker() {
        return Err(denied());
    }
    match v {
        Some(v) if snap.vhosts.iter().any(|x| x.name == v) && !who.sees_vhost(v) => Err(denied()),
        _ => Ok(()),
    }
}

/// The limits of a user definition (`PUT /api/users/U`, definitions
/// imports), checked as RabbitMQ's `put_user` does; `None` without any.
pub(super) fn user_definition_limits(u: &Value) -> Result<Option<Limits>, Reply> {
    match u.get("limits") {
        None | Some(Value::Null) => Ok(None),
        Some(l) => validate(Kind::User, l)
            .map(Some)
            .map_err(|e| bad_request(&user_error(&e))),
    }
}

/// Applies a user definition's limits (merged over the user's, as
/// RabbitMQ's `internal_user:update_limits(add, …)`).
pub(super) fn put_user_limits(m: &Mgmt, who: &Who, user: &str, limits: Option<Limits>) -> Result<(), Reply> {
    match limits {
        Some(l) if !l.is_empty() => write::control(
            m,
            who,
            AdminOp::UserLimits {
                user: user.to_string(),
                op: LimitsOp::Merge(l),
            },
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(kind: Kind, j: &str) -> Vec<String> {
        validate(kind, &serde_json::from_str(j).unwrap()).unwrap_err()
    }

    #[test]
    fn texts_as_rabbitmq_3_10_8_answered() {
        // Each captured from a RabbitMQ 3.10.8 broker (rabbitmqctl and the
        // HTTP API).
        assert_eq!(
            vhost_error(&errs(Kind::Vhost, r#"{"max-queues":"x","max-connections":"y"}"#)),
            "Validation failed\n\nmax-queues should be a number, actually was <<\"x\">>\nmax-connections should be a number, actually was <<\"y\">>\n"
        );
        assert_eq!(
            vhost_error(&errs(Kind::Vhost, r#"{"max-foo":1}"#)),
            "Validation failed\n\nUnrecognised terms [{<<\"max-foo\">>,1}] in limits\n"
        );
        assert_eq!(
            vhost_error(&errs(Kind::Vhost, r#"{"max-queues":1.5}"#)),
            "Validation failed\n\nmax-queues should be a number, actually was 1.5\n"
        );
        assert_eq!(
            vhost_error(&errs(Kind::Vhost, r#"{"max-queues":3.5}"#)),
            "Validation failed\n\nmax-queues should be a number, actually was 3.5\n"
        );
        assert_eq!(
            user_error(&errs(Kind::User, r#"{"max-channels":"x"}"#)),
            "max-channels should be a number, actually was <<\"x\">>"
        );
        assert_eq!(
            user_error(&errs(Kind::User, r#"{"max-foo":3}"#)),
            "Unrecognised terms [{<<\"max-foo\">>,3}] in user-limits"
        );
    }

    #[test]
    fn valid_definitions() {
        let l = validate(Kind::Vhost, &json!({"max-connections": 10, "max-queues": -1})).unwrap();
        assert_eq!(l, Limits::from([("max-connections", 10), ("max-queues", -1)]));
        assert!(validate(Kind::Vhost, &json!({})).unwrap().is_empty());
        assert!(validate(Kind::Vhost, &json!([])).unwrap().is_empty());
        assert!(validate(Kind::User, &json!({"max-queues": 1})).is_err());
        assert!(validate(Kind::Vhost, &json!({"max-channels": 1})).is_err());
    }

    #[test]
    fn unrecognised_terms_come_first_in_key_order() {
        assert_eq!(
            errs(Kind::Vhost, r#"{"zz":true,"max-queues":null,"aa":[1,2]}"#),
            [
                "Unrecognised terms [{<<\"aa\">>,[1,2]},{<<\"zz\">>,true}] in limits",
                "max-queues should be a number, actually was null",
            ]
        );
    }

    #[test]
    fn erlang_terms() {
        assert_eq!(erl(&json!(10.0)), "10.0");
        assert_eq!(erl(&json!(1e20)), "1.0e20");
        assert_eq!(erl(&json!("a\"b")), "<<\"a\\\"b\">>");
        assert_eq!(erl(&json!([104, 105])), "\"hi\"");
        assert_eq!(erl(&json!([])), "[]");
        assert_eq!(
            erl(&json!({"b": 1, "a": "x"})),
            "#{<<\"a\">> => <<\"x\">>,<<\"b\">> => 1}"
        );
        assert_eq!(erl_binary(&[1, 2]), "<<1,2>>");
    }
}
