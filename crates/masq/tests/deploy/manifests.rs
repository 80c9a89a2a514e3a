//! The manifests as the deploy tests read them: every kustomization rendered once with
//! `kubectl kustomize` ([`renders`]), the agent's container and pod spec, its `masq` arguments as
//! flags, the flags `masq <subcommand> --help` lists, ports and the config volume's sources.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{AGENT_KUSTOMIZATIONS, CLEANUP_KUSTOMIZATION, CONFIG_KEY, MASQ};

/// One kustomization's rendered resources.
pub struct Rendered {
    pub dir: &'static str,
    pub datapath: &'static str,
    pub resources: Vec<Value>,
}

impl Rendered {
    pub fn find(&self, kind: &str, name: &str) -> &Value {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/{}: no {kind} named {name}", self.dir))
    }

    pub fn pod_spec(&self, daemonset: &str) -> &Value {
        &self.find("DaemonSet", daemonset)["spec"]["template"]["spec"]
    }

    pub fn agent(&self) -> &Value {
        container(self.pod_spec("masq"), "containers", "masq")
    }
}

pub fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    items(&pod[list])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}

/// A JSON array's items; an absent field is an empty list.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn render(dir: &str) -> Vec<Value> {
    let path = repo_root().join("deploy").join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kubectl prints UTF-8");
    serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("deploy/{dir}: rendered YAML does not parse: {e}"))
}

/// Every kustomization rendered once; the test fails when kubectl cannot run (it renders
/// deploy/ with `kubectl kustomize`, as scripts/check-deploy does).
pub fn renders() -> &'static (Vec<Rendered>, Rendered) {
    masq_testbed::require_programs(&["kubectl"]);
    static RENDERS: OnceLock<(Vec<Rendered>, Rendered)> = OnceLock::new();
    RENDERS.get_or_init(|| {
        let agents = AGENT_KUSTOMIZATIONS
            .iter()
            .map(|&(dir, datapath)| Rendered {
                dir,
                datapath,
                resources: render(dir),
            })
            .collect();
        let cleanup = Rendered {
            dir: CLEANUP_KUSTOMIZATION,
            datapath: "any",
            resources: render(CLEANUP_KUSTOMIZATION),
        };
        (agents, cleanup)
    })
}

/// The flags `masq <subcommand> --help` lists.
pub fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let out = Command::new(MASQ)
        .args([subcommand, "--help"])
        .output()
        .expect("running masq");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`masq {subcommand} --help` failed ({}): {}{}",
        out.status,
        help,
        String::from_utf8_lossy(&out.stderr)
    );
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.len() > 2 && word.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// A container's `masq` arguments after the subcommand as (flag, value) pairs. Manifests write
/// `--flag=value` (a bare `--flag` is a switch), so a value can never be mistaken for a flag.
pub fn flags(container: &Value, subcommand: &str) -> Vec<(String, Option<String>)> {
    assert!(
        container["command"].is_null(),
        "container {} overrides the image's masq entrypoint",
        container["name"]
    );
    let args: Vec<&str> = items(&container["args"])
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&subcommand),
        "first argument of {args:?}"
    );
    args[1..]
        .iter()
        .map(|arg| {
            assert!(
                arg.starts_with("--"),
                "argument {arg:?} is not --flag=value"
            );
            match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg.to_string(), None),
            }
        })
        .collect()
}

pub fn flag_value<'a>(flags: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    flags
        .iter()
        .find(|(flag, _)| flag == name)
        .map(|(_, value)| value.as_deref().expect("flag has a value"))
}

pub fn string_set(v: &Value) -> BTreeSet<&str> {
    items(v).iter().filter_map(Value::as_str).collect()
}

/// The containerPort a probe or Service names, by number or by port name.
pub fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    items(&container["ports"])
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {port}"))
}

/// Splits `HOST:PORT` (`[V6]:PORT` too) as the agent's `--metrics-addr` takes it.
pub fn split_addr(addr: &str) -> (&str, u64) {
    let (host, port) = addr.rsplit_once(':').expect("--metrics-addr is HOST:PORT");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port.parse().expect("--metrics-addr port is a number"))
}

/// The ConfigMap sources of the volume mounted at `dir`: one `configMap`, or the `projected`
/// sources of several.
pub fn config_sources<'a>(r: &'a Rendered, dir: &Path) -> Vec<&'a Value> {
    let agent = r.agent();
    let mount = items(&agent["volumeMounts"])
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == dir)
        .unwrap_or_else(|| panic!("deploy/{}: nothing mounted at {}", r.dir, dir.display()));
    assert_eq!(mount["readOnly"], true, "deploy/{}: config mount", r.dir);
    let volume = items(&r.pod_spec("masq")["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("mounted volume exists");
    match volume["projected"]["sources"].as_array() {
        Some(sources) => sources.iter().map(|s| &s["configMap"]).collect(),
        None => vec![&volume["configMap"]],
    }
}

/// The file a ConfigMap source maps its `config` key to.
pub fn key_file(source: &Value) -> &str {
    items(&source["items"])
        .iter()
        .find(|i| i["key"] == CONFIG_KEY)
        .map_or(CONFIG_KEY, |i| i["path"].as_str().unwrap())
}
