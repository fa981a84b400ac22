//! The binary's configuration layers, run as an operator would: `--print-config` and
//! `--check-config` with a file, `BAYEUX_*` variables, `RUST_LOG` and flags; and the README's
//! copy of the example file. The example has every section, so these need the default
//! features (`voice`, `redis`, `tls`).

#![cfg(all(feature = "voice", feature = "redis", feature = "tls"))]

use std::io::Write as _;
use std::process::{Command, Output};

const EXAMPLE: &str = include_str!("../config.example.toml");

/// Runs the binary with exactly `env` as its `BAYEUX_*`/`RUST_LOG` environment (the test's own
/// are removed), bounded in time by the binary exiting at once with these flags.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bayeux-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BAYEUX_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run bayeux-server")
}

fn printed(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn get<'a>(t: &'a toml::Table, path: &str) -> &'a toml::Value {
    match path.split_once('.') {
        Some((s, k)) => &t[s][k],
        None => &t[path],
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("bayeux-config-{}-{name}", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
    path
}

#[test]
fn flags_over_environment_over_file_over_defaults() {
    let file = temp_file(
        "layers.toml",
        "log = \"warn\"\n[bayeux]\ntimeout_ms = 1000\nmax_queue = 7\nmax_interval_ms = 3000\n",
    );
    let f = file.to_str().unwrap();
    let t = printed(
        &["--config", f, "--timeout-ms", "3000"],
        &[("BAYEUX_TIMEOUT_MS", "2000"), ("BAYEUX_MAX_QUEUE", "8")],
    );
    assert_eq!(
        get(&t, "bayeux.timeout_ms").as_integer(),
        Some(3000),
        "flag"
    );
    assert_eq!(get(&t, "bayeux.max_queue").as_integer(), Some(8), "env");
    assert_eq!(
        get(&t, "bayeux.max_interval_ms").as_integer(),
        Some(3000),
        "file"
    );
    assert_eq!(
        get(&t, "bayeux.max_connections").as_integer(),
        Some(20000),
        "default"
    );
    assert_eq!(get(&t, "log").as_str(), Some("warn"), "file");
    // Logs: --log-level > RUST_LOG > BAYEUX_LOG > file.
    let t = printed(&["--config", f], &[("BAYEUX_LOG", "error")]);
    assert_eq!(get(&t, "log").as_str(), Some("error"));
    let t = printed(
        &["--config", f],
        &[("BAYEUX_LOG", "error"), ("RUST_LOG", "debug,hyper=info")],
    );
    assert_eq!(get(&t, "log").as_str(), Some("debug,hyper=info"));
    let t = printed(
        &["--config", f, "--log-level", "trace"],
        &[("RUST_LOG", "debug")],
    );
    assert_eq!(get(&t, "log").as_str(), Some("trace"));
    let _ = std::fs::remove_file(file);
}

/// Flags, environment, and what the error must mention.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn check_config_refuses_bad_values_with_their_origin() {
    let ok = run(&["--check-config"], &[]);
    assert!(ok.status.success());
    let file = temp_file(
        "bad.toml",
        "[bayeux]\npath = \"/cometd\"\noverflow = \"drop\"\n",
    );
    let cases: [Case; 5] = [
        (&["--config", file.to_str().unwrap()], &[], "line 3"),
        (&[], &[("BAYEUX_MAX_QUEUE", "many")], "BAYEUX_MAX_QUEUE="),
        (&[], &[("RUST_LOG", "verbose")], "RUST_LOG"),
        (&["--log-level", "loud"], &[], "--log-level"),
        (&["--listen", "0.0.0.0:8080"], &[], "public_base_url"),
    ];
    for (args, env, needle) in cases {
        let mut all = vec!["--check-config"];
        all.extend_from_slice(args);
        let out = run(&all, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
    }
    let _ = std::fs::remove_file(file);
    // An unspecified address is fine once the public URL is given.
    let out = run(
        &["--check-config", "--listen", "0.0.0.0:8080"],
        &[("BAYEUX_VOICE_PUBLIC_BASE_URL", "https://voice.example")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_printed_defaults_are_the_example_file() {
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let mut defaults = printed(&[], &[]);
    // The example leaves the demo users as a comment.
    if let Some(toml::Value::Table(v)) = defaults.get_mut("voice") {
        v.remove("users");
    }
    assert_eq!(defaults, example);
}

#[test]
fn the_readme_shows_the_example_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let Ok(readme) = std::fs::read_to_string(&path) else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "skipped: the_readme_shows_the_example_file: no {}",
            path.display()
        );
        return;
    };
    let first = EXAMPLE.lines().next().unwrap();
    let start = readme
        .find(&format!("```toml\n{first}\n"))
        .expect("the README shows config.example.toml in a ```toml block")
        + "```toml\n".len();
    let len = readme[start..].find("```\n").unwrap();
    assert_eq!(
        &readme[start..start + len],
        EXAMPLE,
        "README.md's configuration example differs from crates/bayeux-server/config.example.toml"
    );
}
