//! The rule corpus in `rules/tests/` (see its README), run through the real binary: every
//! expected `explain` result of the valid files, every expected error of the invalid ones.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

const SMF_FIREWALL: &str = env!("CARGO_BIN_EXE_smf-firewall");

fn corpus(dir: &str) -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules/tests")
        .join(dir);
    let mut files: Vec<(PathBuf, String)> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "expect"))
        .map(|expect| {
            (
                expect.with_extension("yaml"),
                fs::read_to_string(&expect).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SMF_FIREWALL).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_expected_explain_result_holds() {
    let mut checked = 0;
    for (rules, expectations) in corpus(".") {
        let file = rules.to_str().unwrap();
        let (code, _, stderr) = run(&["check", file]);
        assert_eq!(code, Some(0), "{file}: {stderr}");
        for line in expectations
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let (left, expected) = line
                .split_once(" => ")
                .unwrap_or_else(|| panic!("bad line: {line}"));
            let (interface, spec) = left
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad line: {line}"));
            let (verdict, decided_by) = expected
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line: {line}"));
            let rule = match decided_by {
                "default" | "non_ip" | "malformed" => "null".to_string(),
                id => format!("\"{id}\""),
            };
            let json = format!(
                "{{\"verdict\":\"{verdict}\",\"rule\":{rule},\"default\":{}}}",
                decided_by == "default"
            );
            let (code, stdout, stderr) = run(&[
                "explain",
                file,
                "--interface",
                interface,
                "--packet",
                spec,
                "--json",
            ]);
            assert_eq!(code, Some(0), "{file}: {line}: {stderr}");
            assert_eq!(stdout.trim(), json, "{file}: {line}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} corpus cases ran");
}

#[test]
fn every_invalid_file_is_rejected_with_the_expected_errors() {
    for (rules, expectations) in corpus("invalid") {
        let file = rules.to_str().unwrap();
        let (code, _, stderr) = run(&["check", file]);
        assert_eq!(code, Some(1), "{file} must be rejected");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with(file)).collect();
        let expected: Vec<&str> = expectations
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(errors.len(), expected.len(), "{file}:\n{stderr}");
        for (error, want) in errors.iter().zip(&expected) {
            let (position, text) = want.split_once(": ").unwrap();
            assert!(
                error.starts_with(&format!("{file}:{position}: error: ")),
                "{error} vs {want}"
            );
            assert!(error.contains(text), "{error} vs {want}");
        }
    }
}
