//! No drift between what users copy and what the binary knows: every
//! mtuvisor subcommand, flag, `MTUVISOR_*` variable and config key named
//! in examples/, image/, .github/ and the README exists, and every example
//! names the same image.

use std::path::{Path, PathBuf};
use std::process::Command;

use mtuvisor::config::KEYS;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The one image reference; the release workflow pushes it.
const IMAGE: &str = "ghcr.io/mtuvisor/mtuvisor";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Variables that are not settings but are read: the log filter, and the
/// test suite's own switch.
const OTHER_VARS: &[&str] = &["MTUVISOR_LOG", "MTUVISOR_SKIP_PRIVILEGED"];

fn files() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(ROOT).join("README.md")];
    let mut dirs: Vec<PathBuf> = ["examples", "image", ".github"]
        .iter()
        .map(|d| PathBuf::from(ROOT).join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read_to_string(&path).is_ok() {
                out.push(path);
            }
        }
    }
    out
}

fn help(args: &[&str]) -> String {
    let out = Command::new(testkit::bin())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn subcommands() -> Vec<String> {
    let text = help(&[]);
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect()
}

/// `mtuvisor SUB --flag …` invocations: (file, subcommand, flags), the
/// flags up to a lone `--` (what follows is dockerd's), from shell lines
/// and from YAML `args:` lists of a container whose command is mtuvisor.
fn invocations(path: &Path, text: &str) -> Vec<(String, String, Vec<String>)> {
    let shown = path
        .strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut words: Vec<Vec<String>> = Vec::new();
    let markdown = path.extension().is_some_and(|e| e == "md");
    let lines: Vec<&str> = text.lines().collect();
    let mut in_code = false;
    for (i, line) in lines.iter().enumerate() {
        if markdown && line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        // Prose and comments say "mtuvisor keeps …": only code counts.
        if (markdown && !in_code) || line.trim_start().starts_with('#') {
            continue;
        }
        let tokens: Vec<String> = line
            .split(|c: char| c.is_whitespace() || "[],\"'`".contains(c))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        // `mtuvisor SUB …` on one line (shell, ExecStart, README).
        // At a command's position: first on the line, after a prompt, a
        // list dash, `--`, `&&`, `exec`, or as systemd's ExecStart.
        let at_command = |at: usize| {
            at == 0
                || ["$", "-", "--", "&&", ";", "exec", "sudo"].contains(&tokens[at - 1].as_str())
        };
        if let Some(at) = tokens.iter().enumerate().position(|(at, t)| {
            let t = t.strip_prefix("ExecStart=").unwrap_or(t);
            (t == "mtuvisor" || t.ends_with("/bin/mtuvisor"))
                && (at_command(at) || t.len() < tokens[at].len())
        }) {
            words.push(tokens[at + 1..].to_vec());
        }
        // A container whose command (entrypoint) is mtuvisor, and its
        // `args:` (`command:`) list on the next line.
        let trimmed = line.trim();
        if trimmed == r#"command: ["mtuvisor"]"# || trimmed == r#"entrypoint: ["mtuvisor"]"# {
            if let Some(next) = lines.get(i + 1) {
                let next = next.trim();
                let list = next
                    .strip_prefix("args:")
                    .or_else(|| next.strip_prefix("command:"));
                if let Some(list) = list {
                    words.push(
                        list.split(|c: char| "[],\" ".contains(c))
                            .filter(|t| !t.is_empty())
                            .map(String::from)
                            .collect(),
                    );
                }
            }
        }
    }
    for w in words {
        let Some(sub) = w.first() else { continue };
        // Sample output ("mtuvisor: …") and paths are not invocations.
        if !sub.chars().all(|c| c.is_ascii_lowercase()) {
            continue;
        }
        let flags = w[1..]
            .iter()
            .take_while(|t| *t != "--")
            .filter(|t| t.starts_with("--"))
            .map(|t| t.split('=').next().unwrap().to_string())
            .collect();
        out.push((shown.clone(), sub.clone(), flags));
    }
    out
}

#[test]
fn every_subcommand_and_flag_named_exists() {
    let subs = subcommands();
    assert!(subs.contains(&"supervise".to_string()), "{subs:?}");
    let mut unknown = Vec::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (file, sub, flags) in invocations(&path, &text) {
            if !subs.contains(&sub) {
                unknown.push(format!("{file}: subcommand `{sub}`"));
                continue;
            }
            let sub_help = help(&[&sub]);
            for flag in flags {
                if !sub_help.contains(&format!("{flag} "))
                    && !sub_help.contains(&format!("{flag}="))
                    && !sub_help.contains(&format!("{flag} <"))
                {
                    unknown.push(format!("{file}: `mtuvisor {sub} {flag}`"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not known to the binary:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn every_variable_and_config_key_named_is_a_setting() {
    let mut unknown = Vec::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(ROOT).unwrap().display().to_string();
        for (i, _) in text.match_indices("MTUVISOR_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !KEYS.iter().any(|k| k.env == name) && !OTHER_VARS.contains(&name.as_str()) {
                unknown.push(format!("{shown}: {name}"));
            }
        }
        // TOML in the README's ```toml blocks.
        let mut in_toml = false;
        let mut table = String::new();
        for line in text.lines() {
            match line.trim() {
                "```toml" => in_toml = true,
                "```" => in_toml = false,
                l if in_toml && l.starts_with('[') => {
                    table = l.trim_matches(['[', ']']).to_string()
                }
                l if in_toml && l.contains('=') && !l.starts_with('#') => {
                    let key = l.split('=').next().unwrap().trim();
                    let dotted = if table.is_empty() {
                        key.to_string()
                    } else {
                        format!("{table}.{key}")
                    };
                    if !KEYS
                        .iter()
                        .any(|k| k.name == dotted || k.aliases.contains(&dotted.as_str()))
                    {
                        unknown.push(format!("{shown}: config key `{dotted}`"));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(unknown.is_empty(), "not settings:\n{}", unknown.join("\n"));
}

#[test]
fn every_example_names_the_same_image() {
    let want = format!("{IMAGE}:{VERSION}");
    let (seen, wrong) = references(
        |token| {
            // Not a YAML key such as the AppArmor annotation
            // `container.apparmor.security.beta.kubernetes.io/mtuvisor:`.
            token.contains("/mtuvisor:")
                && !token.ends_with(':')
                && !token.contains("${{")
                && !token.starts_with("$IMAGE")
        },
        &want,
    );
    assert!(seen >= 5, "the examples name the image ({seen} references)");
    assert!(
        wrong.is_empty(),
        "every example names {want}:\n{}",
        wrong.join("\n")
    );
    let release = std::fs::read_to_string(format!("{ROOT}/.github/workflows/release.yml")).unwrap();
    assert!(
        release.contains(&format!("IMAGE: {IMAGE}\n")),
        "the release workflow pushes {IMAGE}"
    );
}

/// One docker:dind release everywhere it is pinned: the release image's
/// base (`ARG DIND=` in image/Dockerfile) and every `docker:<version>-dind`
/// that an example or the README names.
#[test]
fn one_pinned_docker_dind() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/image/Dockerfile")).unwrap();
    let pin = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG DIND="))
        .expect("image/Dockerfile pins docker:dind with ARG DIND=")
        .trim()
        .to_string();
    let (seen, wrong) = references(
        |token| {
            token.starts_with("docker:")
                && token.ends_with("-dind")
                && token[7..].starts_with(|c: char| c.is_ascii_digit())
        },
        &pin,
    );
    assert!(seen >= 2, "the pin is named ({seen} references)");
    assert!(
        wrong.is_empty(),
        "every pin is {pin}:\n{}",
        wrong.join("\n")
    );
}

/// How many words of the files `is_reference` picks, and those (with their
/// file) that are not `want`. A Compose default, `${VAR:-value}`, counts as
/// its value.
fn references(is_reference: impl Fn(&str) -> bool, want: &str) -> (usize, Vec<String>) {
    let mut seen = 0;
    let mut wrong = Vec::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(ROOT).unwrap().display().to_string();
        for token in text.split(|c: char| c.is_whitespace() || "\"'`,[]".contains(c)) {
            let token = token
                .split_once(":-")
                .map_or(token, |(_, default)| default.trim_end_matches('}'));
            if is_reference(token) {
                seen += 1;
                if token != want {
                    wrong.push(format!("{shown}: {token}"));
                }
            }
        }
    }
    (seen, wrong)
}
