//! The README says only what the code does. The claims that can drift without anyone
//! noticing are checked here: the image the Dockerfile builds on, the crates the design
//! section names, the commands and options each heading shows, the scripts it tells users
//! to run.

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of the README section under `heading` (a `## ` line), up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("the README has no section {heading:?}"));
    let body = &README[start + heading.len() + 5..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

#[test]
fn readme_names_the_base_image_the_dockerfile_builds_on() {
    let dockerfile = read("deploy/Dockerfile");
    let bases: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .map(|image| image.trim_start_matches("docker.io/library/"))
        .collect();
    let runtime = bases.last().expect("the Dockerfile has a FROM line");
    assert!(
        README.contains(runtime),
        "the README does not name the runtime image {runtime:?}"
    );
    // Every base image the deploy section names is one the Dockerfile builds from.
    for token in section("The in-cluster reconciler")
        .split('`')
        .skip(1)
        .step_by(2)
    {
        let base_like = ["distroless", "debian", "alpine", "rust:", "ubuntu"]
            .iter()
            .any(|w| token.contains(w));
        if base_like && !token.contains(' ') {
            assert!(
                bases.contains(&token),
                "the README names the base image {token:?}; deploy/Dockerfile builds from {bases:?}"
            );
        }
    }
}

#[test]
fn readme_crates_named_in_the_design_are_in_the_build() {
    let lock = read("Cargo.lock");
    let design = section("Design");
    let named: Vec<&str> = design
        .split("**")
        .skip(1)
        .step_by(2)
        .filter(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
        .collect();
    assert!(named.len() >= 10, "too few crates found: {named:?}");
    for name in named {
        assert!(
            lock.contains(&format!("\nname = \"{name}\"\n")),
            "the design section names the crate {name:?}, which is not in Cargo.lock"
        );
    }
}

#[test]
fn readme_commands_and_their_options_exist() {
    let headings: Vec<&str> = README
        .lines()
        .filter_map(|l| l.strip_prefix("### `lockstep "))
        .collect();
    assert!(headings.len() >= 10, "{headings:?}");
    for heading in headings {
        let command = heading.split([' ', '`']).next().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "lockstep {command} --help");
        for option in heading
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            assert!(
                help.contains(option),
                "the README shows `lockstep {command} {option}`, which --help does not list"
            );
        }
    }
}

#[test]
fn readme_scripts_exist_and_run() {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    for (at, _) in README.match_indices("scripts/") {
        let name: String = README[at + 8..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let path = Path::new(ROOT).join("scripts").join(&name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("the README names scripts/{name}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "scripts/{name} is not executable");
        seen += 1;
    }
    assert!(seen >= 2, "the README names scripts/demo and scripts/test");
}
