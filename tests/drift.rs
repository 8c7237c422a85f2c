//! No drift between what users copy and what the binary knows: every
//! mtuvisor subcommand, flag, `MTUVISOR_*` variable and config key named
//! in examples/, image/, .github/, charts/, the README and docs/ exists,
//! in whatever form a command takes (a shell line, YAML's `command` and
//! `args` as lists or strings, exec and shell forms), and every example
//! and the chart name the same image.

use std::path::{Path, PathBuf};
use std::process::Command;

use mtuvisor::config::KEYS;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The one image reference; the release workflow pushes it.
const IMAGE: &str = "ghcr.io/mtuvisor/mtuvisor";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Variables that are not settings but are read: the log filter, and the
/// test suite's own switch.
const OTHER_VARS: &[&str] = &[
    "MTUVISOR_LOG",
    "MTUVISOR_SKIP_PRIVILEGED",
    // The test kit's and the benches' own (docs/testing.md, benchmarks.md).
    "MTUVISOR_BIN",
    "MTUVISOR_SEED",
    "MTUVISOR_CHAOS_SECONDS",
    "MTUVISOR_BENCH_CASE",
];

fn files() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(ROOT).join("README.md")];
    let mut dirs: Vec<PathBuf> = ["examples", "image", ".github", "charts", "docs"]
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

/// The argument vectors a YAML document runs: every mapping with a
/// `command` or `entrypoint` (a list: the exec form; a string: split as a
/// shell would) followed by its `args`, as Kubernetes containers, Compose
/// services and CI services write them.
fn yaml_argvs(doc: &serde_yaml_ng::Value, out: &mut Vec<Vec<String>>) {
    use serde_yaml_ng::Value;
    let words = |v: &Value| -> Vec<String> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect(),
            Value::String(s) => s.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        }
    };
    match doc {
        Value::Mapping(map) => {
            // Compose: entrypoint then command; Kubernetes: command then args.
            let mut argv = Vec::new();
            for key in ["entrypoint", "command", "args"] {
                argv.extend(map.get(key).map(words).unwrap_or_default());
            }
            if !argv.is_empty() && (map.contains_key("command") || map.contains_key("entrypoint")) {
                out.push(argv);
            }
            for (_, v) in map {
                yaml_argvs(v, out);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| yaml_argvs(v, out)),
        _ => {}
    }
}

/// What an argument vector asks of mtuvisor: the words after `mtuvisor`
/// when it runs mtuvisor itself, and the mtuvisor lines of the script a
/// shell (`sh -c SCRIPT`) is given.
fn argv_invocations(argv: &[String], words: &mut Vec<Vec<String>>) {
    let Some(first) = argv.first() else { return };
    let program = first.rsplit('/').next().unwrap_or(first);
    if program == "mtuvisor" {
        words.push(argv[1..].to_vec());
    } else if ["sh", "bash", "ash"].contains(&program) {
        if let Some(at) = argv.iter().position(|a| a == "-c") {
            if let Some(script) = argv.get(at + 1) {
                words.extend(shell_invocations(script));
            }
        }
    }
}

/// `mtuvisor …` at a command's position in a shell text: the words after it.
fn shell_invocations(script: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for part in script.split(['\n', ';', '|', '&']) {
        let tokens: Vec<String> = part
            .split(|c: char| c.is_whitespace() || "\"'`()".contains(c))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let start = tokens
            .iter()
            .position(|t| !t.contains('=') && !["exec", "sudo", "!"].contains(&t.as_str()));
        if let Some(at) = start {
            if tokens[at].rsplit('/').next() == Some("mtuvisor") {
                out.push(tokens[at + 1..].to_vec());
            }
        }
    }
    out
}

/// `mtuvisor SUB --flag …` invocations: (file, subcommand, flags), the
/// flags up to a lone `--` (what follows is dockerd's), from shell lines,
/// from YAML (every form of `command`/`args`, parsed as YAML where the
/// file is YAML) and from one-line exec forms in templates that are not.
fn invocations(path: &Path, text: &str) -> Vec<(String, String, Vec<String>)> {
    let shown = path
        .strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut words: Vec<Vec<String>> = Vec::new();
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let mut parsed = false;
    if yaml {
        let mut argvs = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            match <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc) {
                Ok(value) => {
                    parsed = true;
                    yaml_argvs(&value, &mut argvs);
                }
                Err(_) => {
                    parsed = false;
                    break;
                }
            }
        }
        if parsed {
            for argv in &argvs {
                argv_invocations(argv, &mut words);
            }
        }
    }
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
                || [
                    "$",
                    "-",
                    "--",
                    "&&",
                    ";",
                    "exec",
                    "sudo",
                    "command:",
                    "entrypoint:",
                ]
                .contains(&tokens[at - 1].as_str())
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

/// The invocations in `text` (the file at `path`) that name a subcommand
/// or flag the binary does not know.
fn unknown_invocations(path: &Path, text: &str, subs: &[String]) -> Vec<String> {
    let mut unknown = Vec::new();
    for (file, sub, flags) in invocations(path, text) {
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
    unknown
}

#[test]
fn every_subcommand_and_flag_named_exists() {
    let subs = subcommands();
    assert!(subs.contains(&"supervise".to_string()), "{subs:?}");
    let mut unknown = Vec::new();
    for path in files() {
        let text = std::fs::read_to_string(&path).unwrap();
        unknown.extend(unknown_invocations(&path, &text, &subs));
    }
    assert!(
        unknown.is_empty(),
        "not known to the binary:\n{}",
        unknown.join("\n")
    );
}

/// Every form a command takes is read, so a typo in any of them fails the
/// test above: the DaemonSet's own exec form, block lists, `args` after
/// `command`, a shell's script (flow and folded), Compose's entrypoint and
/// command strings, and a one-line exec form in a Helm template (not YAML
/// until rendered).
#[test]
fn a_typo_in_any_form_of_a_command_is_caught() {
    let subs = subcommands();
    let daemonset =
        std::fs::read_to_string(format!("{ROOT}/examples/kubernetes/node-daemonset.yaml")).unwrap();
    let exec = r#"command: ["mtuvisor", "node"]"#;
    assert!(daemonset.contains(exec), "the DaemonSet runs {exec}");
    let template =
        std::fs::read_to_string(format!("{ROOT}/charts/mtuvisor/templates/daemonset.yaml"))
            .unwrap();
    assert!(template.contains(exec), "the chart runs {exec}");
    let typo = r#"command: ["mtuvisor", "nod"]"#;
    let cases = [
        ("examples/kubernetes/node-daemonset.yaml", daemonset.replace(exec, typo)),
        ("charts/mtuvisor/templates/daemonset.yaml", template.replace(exec, typo)),
        (
            "examples/block.yaml",
            "spec:\n  containers:\n    - name: a\n      command:\n        - mtuvisor\n        - nod\n".into(),
        ),
        (
            "examples/args.yaml",
            "spec:\n  containers:\n    - name: a\n      command: [mtuvisor]\n      args: [wach, --mtu, \"1400\"]\n".into(),
        ),
        (
            "examples/args-block.yaml",
            "spec:\n  containers:\n    - name: a\n      command:\n        - /usr/local/bin/mtuvisor\n      args:\n        - wach\n".into(),
        ),
        (
            "examples/shell.yaml",
            "spec:\n  containers:\n    - name: a\n      command: [sh, -c, \"sleep 1 && mtuvisor doctr\"]\n".into(),
        ),
        (
            "examples/folded.yaml",
            "spec:\n  containers:\n    - name: a\n      command:\n        - sh\n        - -c\n        - >-\n          exec mtuvisor wach\n          --mtu 1400\n".into(),
        ),
        (
            "examples/compose.yml",
            "services:\n  a:\n    entrypoint: mtuvisor\n    command: wach --mtu 1400\n".into(),
        ),
    ];
    for (name, text) in cases {
        let path = Path::new(ROOT).join(name);
        let unknown = unknown_invocations(&path, &text, &subs);
        assert!(
            unknown.iter().any(|u| u.contains("subcommand")),
            "{name}: the typo is not seen ({unknown:?})"
        );
    }
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
            // `MTUVISOR_*`, `^MTUVISOR_[A-Z]…`: the family, not a variable.
            if name == "MTUVISOR_" {
                continue;
            }
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
    // The chart's default image: its appVersion, the crate's version.
    let chart = std::fs::read_to_string(format!("{ROOT}/charts/mtuvisor/Chart.yaml")).unwrap();
    for key in ["version", "appVersion"] {
        assert!(
            chart
                .lines()
                .any(|l| l == format!("{key}: {VERSION}") || l == format!("{key}: \"{VERSION}\"")),
            "charts/mtuvisor/Chart.yaml's {key} is {VERSION}"
        );
    }
    let values = std::fs::read_to_string(format!("{ROOT}/charts/mtuvisor/values.yaml")).unwrap();
    assert!(
        values.contains(&format!("repository: {IMAGE}\n")),
        "the chart's image is {IMAGE}"
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
