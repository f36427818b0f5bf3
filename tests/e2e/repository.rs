//! The repository stands on its own: no tracked file names a path outside it (a sibling
//! checkout, a machine's home or work directory), so a fresh clone has everything its documents,
//! scripts and comments point at. The contract lives in `docs/contract.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::repo_root;

/// Path fragments that point outside the repository. Built from pieces so that this file does
/// not name them itself.
fn outside_paths() -> Vec<String> {
    let shared = ["shared", "/"].concat();
    vec![
        ["..", "/", &shared].concat(),
        [&shared, "reference"].concat(),
        [&shared, "spec"].concat(),
        [&shared, "STYLE"].concat(),
        [&shared, "conformance"].concat(),
        ["/", "work", "/"].concat(),
        ["/", "home", "/"].concat(),
        ["/", "root", "/"].concat(),
        ["/", "Users", "/"].concat(),
    ]
}

/// The files under version control (`git ls-files`), or, without git, every file outside
/// `target/` and `.git/`.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(out) = listed {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| root.join(String::from_utf8_lossy(name).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap_or_default();
            if path.is_dir() {
                if name != "target" && name != ".git" {
                    dirs.push(path);
                }
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn repository_is_self_contained() {
    let root = repo_root();
    let files = tracked_files(&root);
    assert!(
        files.iter().any(|f| f.ends_with("docs/contract.md")),
        "docs/contract.md is missing"
    );
    let needles = outside_paths();
    let mut offenders = Vec::new();
    for file in &files {
        // Binary files (weights, archives) are not text and name no paths.
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if let Some(needle) = needles.iter().find(|n| line.contains(n.as_str())) {
                let relative = file.strip_prefix(&root).unwrap_or(file);
                offenders.push(format!(
                    "{}:{}: names {needle:?}: {}",
                    relative.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files name paths outside the repository (describe them in the project's own words, or \
         copy what is needed into the repository):\n{}",
        offenders.join("\n")
    );
}

/// Every citation of a contract section in the code and documents names a section that
/// `docs/contract.md` has, and nothing cites the original specification (by its name and a
/// section sign), which is not in the repository.
#[test]
fn every_cited_contract_section_exists() {
    let root = repo_root();
    let contract = std::fs::read_to_string(root.join("docs/contract.md")).expect("contract");
    let sections: Vec<u32> = contract
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .filter_map(|l| l.split_once('.'))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert_eq!(
        sections,
        (1..=8).collect::<Vec<_>>(),
        "sections of the contract"
    );
    // Built from pieces so that this file does not cite a section itself.
    let cite = ["contract ", "§"].concat();
    let mut unknown = Vec::new();
    // Citations of the original specification, which is not in the repository: the contract
    // replaced it, so every such citation is one to rewrite.
    let old_cite = ["spec ", "§"].concat();
    for file in tracked_files(&root) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        // "Contract §6" at the start of a sentence is a citation too.
        let text = text.to_lowercase();
        for (at, _) in text.match_indices(old_cite.as_str()) {
            let relative = file.strip_prefix(&root).unwrap_or(&file);
            let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
            unknown.push(format!(
                "{}: cites the specification, not the contract: {}",
                relative.display(),
                &text[at..end]
            ));
        }
        for (at, _) in text.match_indices(cite.as_str()) {
            let digits: String = text[at + cite.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.parse().is_ok_and(|n: u32| sections.contains(&n)) {
                let relative = file.strip_prefix(&root).unwrap_or(&file);
                unknown.push(format!("{}: {cite}{digits}", relative.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "citations of missing sections:\n{}",
        unknown.join("\n")
    );
}
