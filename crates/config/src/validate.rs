//! From a parsed document to a [`Config`], key by key, collecting every problem.
//!
//! Both formats are first read into a generic [`Value`], so YAML and JSON share one validator
//! and every key is checked even after an earlier one failed.

use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use crate::duration::parse_go_duration;
use crate::{Config, ConfigError, Loaded, ParseOptions, Problem, MIN_RESYNC_INTERVAL};

const NON_MASQUERADE_CIDRS: &str = "nonMasqueradeCIDRs";
const MASQ_LINK_LOCAL: &str = "masqLinkLocal";
const MASQ_LINK_LOCAL_IPV6: &str = "masqLinkLocalIPv6";
const RESYNC_INTERVAL: &str = "resyncInterval";
const CIDR_LIMIT: &str = "cidrLimit";
const NON_MASQUERADE_SRC_CIDRS: &str = "nonMasqueradeSrcCIDRs";

/// Every key masq reads, matched exactly as written (the upstream agents are case-sensitive).
const KNOWN_KEYS: [&str; 6] = [
    NON_MASQUERADE_CIDRS,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    RESYNC_INTERVAL,
    CIDR_LIMIT,
    NON_MASQUERADE_SRC_CIDRS,
];

/// Parses the text as JSON when its first non-blank character is `{`, as YAML otherwise.
pub(crate) fn read_document(text: &str) -> Result<Value, Problem> {
    // Editors on Windows may start the file with a byte-order mark; serde_json rejects it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.trim_start_matches(char::is_whitespace).chars().next();
    if first == Some('{') {
        serde_json::from_str(text).map_err(|e| Problem::Syntax {
            format: "JSON",
            line: e.line() as u64,
            column: e.column() as u64,
            message: strip_json_position(&e.to_string()),
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| yaml_problem(&e))
    }
}

/// serde_json ends its messages with " at line L column C", which the problem says already.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// serde-saphyr renders "error: line L column C: message" plus a source snippet; the problem
/// keeps one line.
fn yaml_problem(error: &serde_saphyr::Error) -> Problem {
    let (line, column) = error
        .location()
        .map_or((0, 0), |at| (at.line(), at.column()));
    let rendered = error.without_snippet().to_string();
    let first_line = rendered.lines().next().unwrap_or_default();
    let without_prefix = first_line.strip_prefix("error: ").unwrap_or(first_line);
    let position = format!("line {line} column {column}: ");
    let message = without_prefix
        .strip_prefix(&position)
        .unwrap_or(without_prefix);
    // Some scanner messages repeat the position at the end (" at line 1, column 3").
    let message = message
        .strip_suffix(&format!(" at line {line}, column {column}"))
        .unwrap_or(message);
    Problem::Syntax {
        format: "YAML",
        line,
        column,
        message: message.to_string(),
    }
}

/// Validates every key of the document; a null document means every default.
pub(crate) fn config_from_document(
    document: Value,
    opts: &ParseOptions,
) -> Result<Loaded, ConfigError> {
    let mut config = Config::with_default_cidrs(opts.default_cidrs);
    let keys = match document {
        Value::Null => {
            return Ok(Loaded {
                config,
                warnings: Vec::new(),
            })
        }
        Value::Object(keys) => keys,
        other => {
            return Err(ConfigError::one(Problem::NotAMapping {
                found: describe(&other),
            }))
        }
    };
    let mut problems = Vec::new();
    let warnings = keys
        .keys()
        .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
        .map(|key| unknown_key_warning(key))
        .collect();

    // A null scalar keeps its default, as Go's encoding/json leaves the field untouched; a null
    // list is empty, as Go sets the slice to nil (docs/config.md: `nonMasqueradeCIDRs:` means no CIDRs).
    let mut cidrs_written = None;
    if let Some(value) = keys.get(NON_MASQUERADE_CIDRS) {
        // Count what was written, good or bad, so the limit is reported with the other problems.
        cidrs_written = Some(value.as_array().map_or(0, Vec::len));
        config.non_masquerade_cidrs = cidr_list(NON_MASQUERADE_CIDRS, value, opts, &mut problems);
    }
    if let Some(value) = keys.get(NON_MASQUERADE_SRC_CIDRS) {
        config.non_masquerade_src_cidrs =
            cidr_list(NON_MASQUERADE_SRC_CIDRS, value, opts, &mut problems);
    }
    if let Some(flag) = bool_key(MASQ_LINK_LOCAL, keys.get(MASQ_LINK_LOCAL), &mut problems) {
        config.masq_link_local = flag;
    }
    let ipv6_flag = bool_key(
        MASQ_LINK_LOCAL_IPV6,
        keys.get(MASQ_LINK_LOCAL_IPV6),
        &mut problems,
    );
    if let Some(flag) = ipv6_flag {
        config.masq_link_local_ipv6 = flag;
    }
    if let Some(interval) = resync_interval(keys.get(RESYNC_INTERVAL), &mut problems) {
        config.resync_interval = interval;
    }
    if let Some(limit) = cidr_limit(keys.get(CIDR_LIMIT), &mut problems) {
        config.cidr_limit = limit;
    }
    // The limit bounds what the file lists. The built-in default set is not the file's, and the
    // link-local exemptions (which Cilium stores next to the CIDRs) are not counted either.
    if let Some(count) = cidrs_written {
        if count > config.cidr_limit {
            problems.push(Problem::OverCidrLimit {
                count,
                limit: config.cidr_limit,
            });
        }
    }

    if problems.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::new(problems))
    }
}

fn unknown_key_warning(key: &str) -> String {
    match KNOWN_KEYS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(key))
    {
        Some(known) => {
            format!("unknown key {key:?} ignored; keys are case-sensitive, did you mean {known}?")
        }
        None => format!("unknown key {key:?} ignored"),
    }
}

/// A list of CIDR strings; problems name the element by index. Returns the good elements.
fn cidr_list(
    key: &str,
    value: &Value,
    opts: &ParseOptions,
    problems: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let elements = match value {
        Value::Null => return Vec::new(),
        Value::Array(elements) => elements,
        other => {
            problems.push(Problem::WrongType {
                key: key.to_string(),
                expected: "a list of CIDR strings",
                found: describe(other),
            });
            return Vec::new();
        }
    };
    let mut cidrs = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let element_key = format!("{key}[{index}]");
        let Value::String(text) = element else {
            problems.push(Problem::WrongType {
                key: element_key,
                expected: "a CIDR string",
                found: describe(element),
            });
            continue;
        };
        match crate::parse_cidr(text) {
            Ok(IpNet::V6(_)) if !opts.enable_ipv6 => problems.push(Problem::Ipv6Disabled {
                key: element_key,
                value: text.clone(),
            }),
            Ok(cidr) => cidrs.push(cidr),
            Err(error) => problems.push(Problem::Cidr {
                key: element_key,
                error,
            }),
        }
    }
    cidrs
}

fn bool_key(key: &str, value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<bool> {
    match value? {
        Value::Null => None,
        Value::Bool(flag) => Some(*flag),
        other => {
            problems.push(Problem::WrongType {
                key: key.to_string(),
                expected: "true or false",
                found: describe(other),
            });
            None
        }
    }
}

fn resync_interval(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<Duration> {
    let text = match value? {
        Value::Null => return None,
        Value::String(text) => text,
        other => {
            problems.push(Problem::WrongType {
                key: RESYNC_INTERVAL.to_string(),
                expected: "a duration string like \"60s\", \"5m\" or \"1h30m\"",
                found: describe(other),
            });
            return None;
        }
    };
    match parse_go_duration(text) {
        Err(why) => {
            problems.push(Problem::BadDuration {
                value: text.clone(),
                why,
            });
            None
        }
        Ok(nanos) if nanos < MIN_RESYNC_INTERVAL.as_nanos() as i128 => {
            problems.push(Problem::DurationTooShort {
                value: text.clone(),
            });
            None
        }
        Ok(nanos) => Some(Duration::from_nanos(nanos as u64)),
    }
}

fn cidr_limit(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<usize> {
    let number = match value? {
        Value::Null => return None,
        Value::Number(number) => number,
        other => {
            problems.push(Problem::WrongType {
                key: CIDR_LIMIT.to_string(),
                expected: "a non-negative integer",
                found: describe(other),
            });
            return None;
        }
    };
    let why = if let Some(limit) = number.as_u64() {
        match usize::try_from(limit) {
            Ok(limit) => return Some(limit),
            Err(_) => "too large",
        }
    } else if number.as_i64().is_some() {
        "negative"
    } else {
        "not an integer"
    };
    problems.push(Problem::BadCidrLimit {
        value: number.to_string(),
        why,
    });
    None
}

/// "a string (\"x\")", "a number (42)", …: what the user wrote, for messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => format!("a boolean ({flag})"),
        Value::Number(number) => format!("a number ({number})"),
        Value::String(text) => format!("a string ({text:?})"),
        Value::Array(elements) if elements.is_empty() => "an empty list".to_string(),
        Value::Array(elements) if elements.len() == 1 => "a list of 1 element".to_string(),
        Value::Array(elements) => format!("a list of {} elements", elements.len()),
        Value::Object(_) => "a mapping".to_string(),
    }
}
