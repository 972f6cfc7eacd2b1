//! Malformed inputs. `tests/errors/NN_what.inc` holds one error each (its first line says which);
//! the rendered messages are the snapshots `snapshots/error__NN_what.snap`. Files under
//! `tests/errors/lib/` are helpers that the cases import, not cases. Then a property test: random
//! mutations of every network in `archs/` must compile or fail, never panic.

use crate::common::{root, snapshots};
use incc::driver::{compile, compile_text};
use incc::elab::Settings;
use incc::passes::PassOptions;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Cases whose error is located in an imported helper file rather than in the case itself. Every
/// case has a location: the only errors without one are about the command line (`--set`,
/// `--network`, `--residualize`) or a root file that cannot be read, which no case here can cause.
const IN_HELPER: &[(&str, &str)] = &[("12_cyclic_import", "lib/cycle_b.inc"), ("49_syntax_error_in_imported_file", "lib/bad_syntax.inc")];

#[test]
fn every_malformed_input_fails_with_a_located_message() {
    // Messages name files by the path they were given. Relative paths keep the snapshots the same
    // on every machine; they resolve because cargo runs integration tests in the crate root.
    let cwd = std::env::current_dir().expect("a current directory");
    assert_eq!(cwd.canonicalize().ok(), root().canonicalize().ok(), "integration tests run in the crate root");

    let mut cases: Vec<String> = std::fs::read_dir("tests/errors")
        .expect("tests/errors exists")
        .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".inc"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 35, "the corpus has {} cases", cases.len());

    for name in &cases {
        let path = format!("tests/errors/{name}");
        let stem = name.trim_end_matches(".inc");
        let text = std::fs::read_to_string(&path).expect("readable case");
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text); // 61_byte_order_mark
        assert!(text.starts_with("// "), "{path}: the first line must be a `//` comment saying what it checks");

        let rendered = match compile(Path::new(&path), &Settings::default(), &PassOptions::default(), None) {
            Ok(_) => panic!("{path} compiled, but it should fail"),
            Err(failure) => failure.render(),
        };
        let located_in = IN_HELPER.iter().find(|(case, _)| *case == stem).map_or(name.as_str(), |(_, helper)| helper);
        assert!(
            has_location(&rendered, &format!("tests/errors/{located_in}")),
            "{path}: the message does not name tests/errors/{located_in}:LINE:COL:\n{rendered}"
        );
        snapshots(|| insta::assert_snapshot!(format!("error__{stem}"), rendered));
    }
}

#[test]
fn nesting_beyond_the_parsers_stack_is_an_error() {
    // pest stops before its recursion runs out of stack (where it stops depends on the stack, so
    // this is no snapshot); the compiler must report it as an error.
    let depth = 100_000;
    let text = format!("network n {{\n  input 3x35x35\n  conv 1x1 {}8{}\n}}\n", "(".repeat(depth), ")".repeat(depth));
    let path = root().join("archs").join("deep.inc");
    let rendered = match compile_text(&path, &text, &Settings::default(), &PassOptions::default(), None) {
        Ok(_) => panic!("{depth} nested parentheses compiled"),
        Err(failure) => failure.render(),
    };
    assert!(rendered.starts_with("error: nested too deeply"), "{}", &rendered[..rendered.len().min(300)]);
}

#[test]
fn absurd_sizes_from_the_command_line_fail_at_the_layer_naming_the_option() {
    let set = |value: &str| Settings { set: vec![("classes".into(), value.into())], ..Settings::default() };
    let cases = [
        // 30 G input elements.
        ("option_input_too_large", Settings { input: Some(vec![3, 100_000, 100_000]), ..Settings::default() }, "--input 3x100000x100000"),
        // 3 G outputs of the last layer.
        ("option_classes_in_the_billions", set("3000000000"), "--set classes=3000000000"),
        // Its weight: 1536 x 2 G.
        ("option_classes_make_a_weight_too_large", set("2000000000"), "--set classes=2000000000"),
        // 1.5 G parameters in all.
        ("option_classes_make_too_many_parameters", set("1000000"), "--set classes=1000000"),
    ];
    for (name, settings, option) in cases {
        let rendered = match compile(Path::new("archs/inception_v4.inc"), &settings, &PassOptions::default(), None) {
            Ok(_) => panic!("{name}: compiled"),
            Err(failure) => failure.render(),
        };
        assert!(has_location(&rendered, "archs/inception_v4.inc"), "{name}: not located:\n{rendered}");
        assert!(rendered.contains(option), "{name}: does not name `{option}`:\n{rendered}");
        snapshots(|| insta::assert_snapshot!(format!("error__{name}"), rendered));
    }
}

/// Network source with `uses` uses of a block of `relus` ReLUs written out, one a line (no repeat,
/// so that the bound is met node by node, not foreseen at a repeat).
fn written_out_relus(relus: usize, uses: usize) -> String {
    format!("block unit {{\n{}}}\n\nnetwork n {{\n  input 3x8x8\n{}}}\n", "  relu\n".repeat(relus), "  unit\n".repeat(uses))
}

#[test]
fn a_network_past_the_node_bound_fails_where_the_bound_is_crossed() {
    // One node more than the bound: 1001 uses of 1000 nodes (and the input).
    let relus = 1000;
    let uses = incc::ir::MAX_NODES / relus + 1;
    let rendered = match compile_text(Path::new("archs/many_nodes.inc"), &written_out_relus(relus, uses), &Settings::default(), &PassOptions::default(), None) {
        Ok(c) => panic!("{} nodes compiled", c.graph.g.node_count()),
        Err(failure) => failure.render(),
    };
    assert!(rendered.starts_with("error: too many nodes: the network has more than the 1,000,000"), "{rendered}");
    // At the layer that makes node 1,000,001 (the input is node 1): the block's last ReLU (line
    // 1 + 1000), in its 1000th use (line 1005 + 1000).
    assert!(rendered.contains("archs/many_nodes.inc:1001:3"), "{rendered}");
    assert!(rendered.contains("2005 │   unit\n"), "{rendered}");
    assert!(rendered.contains("in this use of `unit`"), "{rendered}");
}

/// True when `text` contains `file:LINE:COL`.
fn has_location(text: &str, file: &str) -> bool {
    text.match_indices(&format!("{file}:")).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line = rest.chars().take_while(char::is_ascii_digit).count();
        let col = rest[line..].strip_prefix(':').map_or(0, |r| r.chars().take_while(char::is_ascii_digit).count());
        line > 0 && col > 0
    })
}

/// xorshift64: deterministic, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const INSERTS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "->",
    ":",
    ",",
    "=",
    ";",
    "\n",
    "\"",
    "x",
    "-",
    "*",
    "/",
    "%",
    "//",
    "/*",
    "0",
    "1x1",
    "3x3",
    "1x2x3",
    "conv",
    "maxpool",
    "avgpool",
    "global",
    "dropout",
    "fc",
    "flatten",
    "softmax",
    "relu",
    "input",
    "concat",
    "residual",
    "repeat",
    "inline",
    "block",
    "network",
    "import",
    "defaults",
    "stride",
    "pad",
    "bn",
    "nobn",
    "valid",
    "same",
    "bias",
    "nobias",
    "linear",
    "include_pad",
    "exclude_pad",
    "true",
    "1.5",
    "int",
    "é",
    "\t",
];
// Past i64, past u32, past the repeat bound, past the tensor bound, i64::MAX (which overflows
// when added to or multiplied).
const NUMBERS: &[&str] = &["0", "1", "99999999999999999999", "4294967297", "100001", "3000000000", "9223372036854775807"];

/// Byte offset of a random char boundary of `s` (possibly its end).
fn boundary(s: &str, rng: &mut Rng) -> usize {
    let mut i = rng.below(s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(src: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<&str> = src.lines().collect();
    if src.trim().is_empty() {
        return format!("{src}{}", rng.pick(INSERTS));
    }
    match rng.below(6) {
        0 => {
            // Delete a character range.
            let a = boundary(src, rng);
            let mut b = (a + 1 + rng.below(12)).min(src.len());
            while !src.is_char_boundary(b) {
                b += 1;
            }
            format!("{}{}", &src[..a], &src[b..])
        }
        1 => {
            // Delete a whitespace-separated token.
            let tokens: Vec<(usize, &str)> = src.split_whitespace().map(|t| (t.as_ptr() as usize - src.as_ptr() as usize, t)).collect();
            let (at, t) = tokens[rng.below(tokens.len())];
            format!("{}{}", &src[..at], &src[at + t.len()..])
        }
        2 => {
            let i = rng.below(lines.len());
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        3 => {
            let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(i, j);
            lines.join("\n")
        }
        4 => {
            // Replace a number.
            let digits: Vec<usize> =
                src.char_indices().filter(|&(i, c)| c.is_ascii_digit() && !src[..i].ends_with(|p: char| p.is_ascii_digit())).map(|(i, _)| i).collect();
            if digits.is_empty() {
                return src.to_string();
            }
            let at = digits[rng.below(digits.len())];
            let len = src[at..].chars().take_while(char::is_ascii_digit).count();
            format!("{}{}{}", &src[..at], rng.pick(NUMBERS), &src[at + len..])
        }
        _ => {
            let at = boundary(src, rng);
            let pad = if rng.below(2) == 0 { " " } else { "" };
            format!("{}{pad}{}{pad}{}", &src[..at], rng.pick(INSERTS), &src[at..])
        }
    }
}

#[test]
fn mutated_networks_never_panic() {
    let mut files: Vec<PathBuf> = ["archs", "archs/lib"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root().join(dir)).expect("archs exists"))
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "inc"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "found {} networks to mutate", files.len());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for path in &files {
        // Without its comment lines, so that more mutations land in code.
        let source: String =
            std::fs::read_to_string(path).expect("readable network").lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        for round in 0..200 {
            let mut text = source.clone();
            for _ in 0..1 + rng.below(3) {
                text = mutate(&text, &mut rng);
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| match compile_text(path, &text, &Settings::default(), &PassOptions::default(), None) {
                Ok(_) => String::new(),
                Err(failure) => failure.render(),
            }));
            if outcome.is_err() {
                panic!("compiling mutation {round} of {} panicked; the source was:\n{text}", path.display());
            }
        }
    }
}
