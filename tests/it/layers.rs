//! The layering is a fact the build checks: the pure core (`crates/core`) has no network,
//! Git, Kubernetes or async crate anywhere in its dependency tree, and the core's sources
//! name nothing of the `lockstep` crate (which would not compile anyway: the core cannot
//! depend on the crate above it).

use std::process::Command;

/// Crates that would make the core an edge: async runtimes, HTTP, TLS, the registry client,
/// Git, the Kubernetes client, logging.
const EDGE_CRATES: &[&str] = &[
    "tokio",
    "futures",
    "futures-util",
    "reqwest",
    "hyper",
    "rustls",
    "oci-client",
    "gix",
    "kube",
    "kube-client",
    "k8s-openapi",
    "tracing",
    "clap",
    "indicatif",
    "tempfile",
];

fn core_dependencies() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "lockstep-core",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "-f",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn layers_core_has_no_edge_dependency() {
    let deps = core_dependencies();
    // The tree is the real one: it holds what the core does use.
    for used in [
        "lockstep-core",
        "saphyr-parser",
        "ssh-key",
        "sha2",
        "serde_json",
    ] {
        assert!(
            deps.iter().any(|d| d == used),
            "{used} missing from {deps:?}"
        );
    }
    let edges: Vec<&String> = deps
        .iter()
        .filter(|d| EDGE_CRATES.contains(&d.as_str()))
        .collect();
    assert!(
        edges.is_empty(),
        "the core depends on edge crates {edges:?}"
    );
}

#[test]
fn layers_core_sources_name_no_edge_module() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/src");
    let mut stack = vec![root];
    let mut offenders = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if ["lockstep::", "tokio::", "kube::", "gix::", "reqwest::"]
                    .iter()
                    .any(|m| code.contains(m))
                {
                    offenders.push(format!("{}:{}: {line}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
