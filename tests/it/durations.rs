//! One duration syntax for every option that takes one (`--timeout` of lock, check, mirror,
//! controller and wait; `--expires-in` of lock and refresh; `--lease-duration`): a plain
//! number is seconds, as the registry `--timeout` always read it, and units (`90s`, `5m`,
//! `1h`, `30d`) work everywhere. Regression: the registry `--timeout` took only seconds,
//! `wait --timeout` and `--lease-duration` only Go durations (`90` was refused), and
//! `--expires-in` only jiff spans.

use crate::cli::{Project, code, lockfile_text, run, stderr};

/// What every refusal of a bad duration ends with.
const HINT: &str = "write a number of seconds (30) or a number with a unit: 90s, 5m, 1h, 30d, 2w";

/// Every option taking a duration, with the arguments its command needs besides it.
const OPTIONS: &[(&[&str], &str)] = &[
    (&["lock", "."], "--timeout"),
    (&["lock", "."], "--expires-in"),
    (&["refresh", "."], "--expires-in"),
    (&["check", "."], "--timeout"),
    (&["mirror", ".", "--to", "127.0.0.1:1/m"], "--timeout"),
    (&["controller"], "--timeout"),
    (&["controller"], "--lease-duration"),
    (&["wait", "app", "--rev", "abcdef0"], "--timeout"),
];

/// `command option=value` (with `=`, so that `-5s` is a value rather than a flag).
fn with_option(command: &[&str], option: &str, value: &str) -> std::process::Output {
    let assignment = format!("{option}={value}");
    let mut args = command.to_vec();
    args.push(&assignment);
    run(&args, &[])
}

#[test]
fn every_duration_option_refuses_a_bad_duration_with_exit_2_and_the_hint() {
    for (command, option) in OPTIONS {
        for bad in ["soon", "1mo", "-5s", "1.5", ""] {
            let out = with_option(command, option, bad);
            let err = stderr(&out);
            assert_eq!(code(&out), 2, "{command:?} {option} {bad:?}: {err}");
            assert!(
                err.contains(&format!(
                    "error: invalid value '{bad}' for '{option} <DURATION>': "
                )),
                "{command:?} {option} {bad:?}: {err}"
            );
            assert!(err.contains(HINT), "{command:?} {option} {bad:?}: {err}");
        }
    }
    // Why, before the hint.
    let out = with_option(&["lock", "."], "--timeout", "1y");
    assert!(
        stderr(&out).contains(&format!(": months and years have no fixed length; {HINT}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn minimums_are_refused_with_exit_2_and_the_hint() {
    for (command, option, value, why) in [
        (
            &["lock", "."][..],
            "--expires-in",
            "0",
            "it must be longer than zero",
        ),
        (
            &["refresh", "."][..],
            "--expires-in",
            "0s",
            "it must be longer than zero",
        ),
        (
            &["controller"][..],
            "--lease-duration",
            "500ms",
            "it must be at least 1s",
        ),
    ] {
        let out = with_option(command, option, value);
        assert_eq!(code(&out), 2, "{option} {value}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{why}; {HINT}")),
            "{option} {value}: {}",
            stderr(&out)
        );
    }
}

/// Past argument parsing: the command fails later, on the kubeconfig, not on the duration.
fn assert_parsed(command: &[&str], value: &str) {
    let mut args = command.to_vec();
    args.extend_from_slice(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    let out = run(&args, &[]);
    assert_eq!(code(&out), 2, "{command:?}: {}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to read kubeconfig"),
        "{command:?} with {value}: {}",
        stderr(&out)
    );
}

#[test]
fn plain_seconds_and_units_work_for_every_option() {
    let p = Project::new();
    let dir = p.dir.to_str().unwrap();
    let key = p.key.to_str().unwrap();
    // --expires-in 3600 is an hour after SOURCE_DATE_EPOCH (2023-11-14T22:13:20Z).
    let out = p.lock(&["--timeout", "5s", "--expires-in", "3600"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        lockfile_text(&p.dir).contains("expires = \"2023-11-14T23:13:20Z\""),
        "{}",
        lockfile_text(&p.dir)
    );
    let out = run(
        &["refresh", dir, "--key", key, "--expires-in", "1h30m"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        lockfile_text(&p.dir).contains("expires = \"2023-11-14T23:43:20Z\""),
        "{}",
        lockfile_text(&p.dir)
    );
    let out = p.lock(&["--check", "--timeout", "5"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for timeout in ["10", "1m"] {
        let out = run(&["check", dir, "--timeout", timeout], &[]);
        assert_eq!(code(&out), 0, "check --timeout {timeout}: {}", stderr(&out));
    }
    for value in ["90", "2m", "1h30m"] {
        assert_parsed(
            &["wait", "app", "--rev", "abcdef0", "--timeout", value],
            value,
        );
        assert_parsed(
            &[
                "controller",
                "--metrics-address",
                "127.0.0.1:0",
                "--leader-election",
                "--lease-duration",
                value,
                "--timeout",
                value,
            ],
            value,
        );
    }
}
