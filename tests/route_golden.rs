//! Golden tests of `payrelay route`: the real binary on the invoices and
//! configs under `tests/golden/`, its stdout compared with the checked-in
//! `.out` files. After an intended change of the output, rewrite them with
//! `UPDATE_GOLDEN=1 cargo test --test route_golden` and review the diff.
//!
//! Every run routes as of a fixed day, so the files do not age.

use std::path::{Path, PathBuf};
use std::process::Command;

const TODAY: &str = "2026-11-20";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden")
}

/// Runs `payrelay ARGS` in `tests/golden/` (so paths in the output are the
/// relative ones given) with no `PAYRELAY*` variables from the caller's
/// environment; returns the exit code, stdout and stderr.
fn payrelay(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payrelay"));
    command.current_dir(golden_dir()).args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PAYRELAY") {
            command.env_remove(name);
        }
    }
    let out = command.output().expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Compares `actual` with `tests/golden/<name>.out`, or rewrites the file
/// when `UPDATE_GOLDEN=1`.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(format!("{name}.out"));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("the golden file is writable");
        return;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!(
            "cannot read {}: {e}\nrun UPDATE_GOLDEN=1 cargo test --test route_golden to create it; the output was:\n{actual}",
            path.display()
        ),
    };
    if expected != actual {
        panic!(
            "the output differs from {} (- expected, + actual):\n{}\n\
             if the change is intended, run UPDATE_GOLDEN=1 cargo test --test route_golden and review the diff",
            path.display(),
            diff(&expected, actual)
        );
    }
}

/// A line diff (longest common subsequence), ` ` for common lines, `-` for
/// expected only, `+` for actual only. Golden files are small.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push("(the files differ in the final newline)".to_owned());
    }
    out.join("\n")
}

/// `payrelay --config current.toml route invoices/<invoice>.json --today ..`
/// must succeed and print `route_<invoice>.out`.
fn route_golden(invoice: &str) {
    let file = format!("invoices/{invoice}.json");
    let (code, stdout, stderr) = payrelay(&["--config", "current.toml", "route", &file, "--today", TODAY]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_golden(&format!("route_{invoice}"), &stdout);
}

#[test]
fn a_later_rule_matches_and_the_earlier_ones_say_why_not() {
    route_golden("rule_match");
}

#[test]
fn no_rule_matches_and_the_default_decides() {
    route_golden("default");
}

#[test]
fn explicit_invoice_channels_skip_the_rules_and_the_preferences() {
    route_golden("explicit_channels");
}

#[test]
fn opt_outs_and_missing_contacts_are_skipped_with_reasons() {
    route_golden("skipped");
}

#[test]
fn an_invoice_no_channel_can_reach_would_be_dead_lettered() {
    route_golden("no_channel");
}

/// `payrelay --config journeys.toml route invoices/<invoice>.json --today
/// <day>` must succeed and print `<name>.out`.
fn journey_golden(name: &str, invoice: &str, today: &str) {
    let file = format!("invoices/{invoice}.json");
    let (code, stdout, stderr) = payrelay(&["--config", "journeys.toml", "route", &file, "--today", today]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_golden(name, &stdout);
}

/// The journeys' golden config is one `check` accepts, so what the goldens
/// show could run.
#[test]
fn the_journeys_golden_config_passes_check() {
    let (code, stdout, stderr) = payrelay(&["--config", "journeys.toml", "check"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

/// A step past as of --today is skipped; the others at 10:00 in the
/// biller's zone, on the step's channels or routing's, with preferences
/// and opt-outs applied, and the template for their day.
#[test]
fn the_journey_follows_the_routing_with_each_step_at_its_local_time() {
    journey_golden("route_journey_standard", "rule_match", "2026-11-29");
}

/// The biller names the journey; a step placed `after` the first request
/// is estimated from the start of --today's day, in UTC when no zone is set.
#[test]
fn a_billers_journey_with_a_step_after_the_previous_message() {
    journey_golden("route_journey_biller", "default", "2026-11-20");
}

#[test]
fn a_rule_that_says_no_journey_wins_over_routing() {
    journey_golden("route_journey_none", "pos_sale", "2026-11-20");
}

#[test]
fn a_replay_summarises_what_the_new_config_would_change() {
    let (code, stdout, stderr) = payrelay(&[
        "--config",
        "current.toml",
        "route",
        "--replay",
        "past.jsonl",
        "--against",
        "new.toml",
        "--today",
        TODAY,
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_golden("replay", &stdout);
}

#[test]
fn a_replay_lists_at_most_limit_invoices_and_can_fail_on_change() {
    let (code, stdout, stderr) = payrelay(&[
        "--config",
        "current.toml",
        "route",
        "--replay",
        "past.jsonl",
        "--against",
        "new.toml",
        "--today",
        TODAY,
        "--limit",
        "2",
        "--fail-on-change",
    ]);
    assert_eq!(code, 3, "changes with --fail-on-change exit 3: {stdout}\n{stderr}");
    assert_golden("replay_limit", &stdout);
}

#[test]
fn a_replay_against_the_same_config_changes_nothing() {
    let (code, stdout, stderr) = payrelay(&[
        "--config",
        "current.toml",
        "route",
        "--replay",
        "past.jsonl",
        "--against",
        "current.toml",
        "--today",
        TODAY,
        "--fail-on-change",
    ]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_golden("replay_unchanged", &stdout);
}

#[test]
fn route_flags_are_checked() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["route", "invoices/default.json", "--today", "2026-13-01"],
            "not a date in the form YYYY-MM-DD",
        ),
        (&["route", "--replay", "past.jsonl"], "--against"),
        (
            &["route", "invoices/default.json", "--against", "new.toml"],
            "cannot be used with",
        ),
        (
            &["route", "invoices/default.json", "--fail-on-change"],
            "cannot be used with",
        ),
        (&["route"], "FILE"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--config", "current.toml"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = payrelay(&all);
        assert_eq!(code, 2, "{args:?} is a usage error: {stdout}{stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: missing '{expected}' in:\n{stderr}"
        );
    }
}

#[test]
fn a_replay_of_a_file_without_invoices_fails() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"event\": \"invoice.sent\", \"biller_id\": \"acme\", \"invoice_id\": \"P-1\"}\n",
    )
    .unwrap();
    let events = events.to_string_lossy().into_owned();
    let (code, stdout, stderr) = payrelay(&[
        "--config",
        "current.toml",
        "route",
        "--replay",
        &events,
        "--against",
        "new.toml",
        "--today",
        TODAY,
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("line 1: an event (invoice.sent), not an invoice"),
        "{stdout}"
    );
    assert!(stderr.contains("holds no invoice to compare"), "{stderr}");
}

#[test]
fn the_diff_shows_what_changed() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c");
    assert_eq!(diff("a\n", "a\nb\n"), "  a\n+ b");
    assert_eq!(diff("a\n", "a"), "  a\n(the files differ in the final newline)");
}

/// The fenced blocks of a Markdown file, with their info strings.
fn fenced(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// docs/journeys.md shows `payrelay route` on its example config and
/// invoice: the output shown must be the binary's, and `check` must accept
/// the config, as the guide says.
#[test]
fn the_route_output_in_the_journeys_guide_is_the_binarys() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/journeys.md")).unwrap();
    let blocks = fenced(&doc);
    let block = |info: &str| {
        blocks
            .iter()
            .find(|(i, _)| i == info)
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("docs/journeys.md has no ```{info} block"))
    };
    let console = block("console");
    let (command, shown) = console.split_once('\n').unwrap();
    assert_eq!(
        command,
        "$ payrelay --config journeys.toml route invoice.json --today 2026-11-29"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journeys.toml"), block("toml")).unwrap();
    std::fs::write(dir.path().join("invoice.json"), block("json")).unwrap();
    let config = dir.path().join("journeys.toml");
    let invoice = dir.path().join("invoice.json");
    let (code, stdout, stderr) = payrelay(&["--config", config.to_str().unwrap(), "check"]);
    assert_eq!(code, 0, "the guide says check accepts its config: {stdout}{stderr}");
    let (code, stdout, stderr) = payrelay(&[
        "--config",
        config.to_str().unwrap(),
        "route",
        invoice.to_str().unwrap(),
        "--today",
        "2026-11-29",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout == shown,
        "docs/journeys.md shows another output (- shown, + actual):\n{}",
        diff(shown, &stdout)
    );
}
