//! The layering of ARCHITECTURE.md's "Allowed dependencies between modules", checked against the
//! code: every `crate::<module>` (and, in the binary, `incc::<module>`) path in `src/` must be
//! one its module's row allows.

use crate::common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What a module may use: these modules, or any.
enum Allowed {
    Modules(BTreeSet<String>),
    Everything,
}

/// The table's rows, by module.
fn table() -> BTreeMap<String, Allowed> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let ticked = |cell: &str| -> BTreeSet<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let rows: Vec<&str> = doc.lines().skip_while(|l| !l.starts_with("| module | may use |")).skip(2).take_while(|l| l.starts_with('|')).collect();
    assert!(!rows.is_empty(), "ARCHITECTURE.md has no `| module | may use |` table");
    rows.into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let allowed = if cells[2] == "everything" { Allowed::Everything } else { Allowed::Modules(ticked(cells[2])) };
            let module = ticked(cells[1]).into_iter().next().unwrap_or_else(|| panic!("a row without a module: {row}"));
            (module, allowed)
        })
        .collect()
}

/// The crate's modules that `text` names by path: `crate::a::b`, `crate::{a, b::c}`, `incc::a`.
fn used_modules(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut used = BTreeSet::new();
    for prefix in ["crate::", "incc::"] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            match rest.strip_prefix('{') {
                // A group: the first name of each top-level item.
                Some(group) => {
                    let (mut depth, mut item_start) = (0, true);
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => item_start = true,
                            c if item_start && (c.is_alphanumeric() || c == '_') => {
                                used.insert(ident(&group[i..]));
                                item_start = false;
                            }
                            _ => {}
                        }
                    }
                }
                None => {
                    used.insert(ident(rest));
                }
            }
        }
    }
    used
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable").map(|e| e.expect("entry").path()) {
        if entry.is_dir() {
            rust_files(&entry, out);
        } else if entry.extension().is_some_and(|e| e == "rs") {
            out.push(entry);
        }
    }
}

#[test]
fn modules_use_only_what_architecture_md_allows() {
    let table = table();
    let src = root().join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let mut problems = vec![];
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a path").as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some(allowed) = table.get(&module) else {
            problems.push(format!("`{module}` ({}) has no row in ARCHITECTURE.md's dependency table", relative.display()));
            continue;
        };
        let Allowed::Modules(allowed) = allowed else { continue };
        let text = std::fs::read_to_string(&file).expect("readable");
        for used in used_modules(&text) {
            if used != module && table.contains_key(&used) && !allowed.contains(&used) {
                problems.push(format!("{} uses `{used}`, which ARCHITECTURE.md does not allow `{module}`", relative.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn paths_are_read_from_groups_too() {
    let used = used_modules(
        "use crate::ir::{Graph, Shape};\nuse crate::{diag::Diagnostic, onnx::{emit, proto}};\n// crate::train in a comment\nlet x = incc::runtime::f();",
    );
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["diag", "ir", "onnx", "runtime"]);
}
