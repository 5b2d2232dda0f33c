//! The configuration loader fed hostile files: every file is either a configuration or an
//! error naming the file and a line, never a panic.
//!
//! Deterministic fuzzing for the normal test suite: `config/example.toml` with every option
//! uncommented, mutated line by line (lines dropped, repeated, values replaced by values of
//! other keys, numbers out of range, odd strings, bytes flipped), from a fixed-seed xorshift.
//! `fuzz/fuzz_targets/config_loader.rs` is the open-ended version.

use std::path::Path;

use herald_server::config::Config;

/// xorshift64* (Vigna).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const VALUES: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "18446744073709551616",
    "1.5",
    "true",
    "\"\"",
    "\"infinity\"",
    "\"never\"",
    "[]",
    "[\"\"]",
    "[\"a@b\", \"a@b\"]",
    "{}",
    "\"\\u0000\"",
    "\"../../etc/passwd\"",
    "\"::\"",
    "1979-05-27T07:32:00Z",
];

/// The example file with its options uncommented (as the unit test of the example does).
fn example() -> Vec<String> {
    let text = include_str!("../../../config/example.toml");
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest.to_owned()
            }
            _ => line.to_owned(),
        })
        .collect()
}

fn mutate(rng: &mut Rng, lines: &[String]) -> String {
    let mut out: Vec<String> = lines.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => {
                out.remove(at);
            }
            1 => {
                let copy = out[at].clone();
                out.insert(at, copy);
            }
            2 | 3 => {
                if let Some((key, _)) = out[at].split_once(" = ") {
                    out[at] = format!("{key} = {}", VALUES[rng.below(VALUES.len())]);
                }
            }
            4 => {
                let other = out[rng.below(out.len())].clone();
                out.insert(at, other);
            }
            _ => {
                let mut bytes = out[at].clone().into_bytes();
                if !bytes.is_empty() {
                    let i = rng.below(bytes.len());
                    bytes[i] = b"[]=\"'#.x0\n"[rng.below(10)];
                }
                out[at] = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    out.join("\n")
}

#[test]
fn two_thousand_mutated_files_load_or_fail_naming_the_file() {
    let lines = example();
    let base = Path::new("/etc/herald");
    assert!(Config::parse(&lines.join("\n"), "herald.toml", base).is_ok());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..2000 {
        let text = mutate(&mut rng, &lines);
        match Config::parse(&text, "herald.toml", base) {
            Ok(_) => loaded += 1,
            Err(error) => {
                refused += 1;
                let message = error.to_string();
                assert!(
                    message.starts_with("herald.toml"),
                    "the error names the file: {message}\n{text}"
                );
            }
        }
    }
    assert!(loaded > 100 && refused > 100, "{loaded} {refused}");
}

#[test]
fn the_fuzzing_seeds_load_or_fail_naming_the_file() {
    let seeds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/config_loader");
    let mut count = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        if let Err(error) = Config::parse(&text, "fuzz.toml", Path::new("/etc/herald")) {
            assert!(error.to_string().starts_with("fuzz.toml"), "{error}");
        }
        count += 1;
    }
    assert!(count > 0, "seeds in {}", seeds.display());
}
