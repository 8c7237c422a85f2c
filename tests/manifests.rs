//! The Kubernetes examples in examples/kubernetes say what the binary
//! accepts: every MTUVISOR_* variable they set is a valid setting, the
//! sidecar's arguments start a working `watch` that turns ready, and the
//! grace period leaves room for the stop timeout.

use testkit as common;

use std::time::Duration;

use common::{eventually, privileged, run_mtuvisor, try_http_get, Lab};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubernetes");

fn manifest(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{name}")).unwrap()
}

/// `- name: MTUVISOR_…` followed by `value: "…"`.
fn mtuvisor_env(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            let value = w[1].strip_prefix("value: ")?.trim_matches('"');
            name.starts_with("MTUVISOR_")
                .then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// The `args: [...]` of the container whose command is mtuvisor.
fn mtuvisor_args(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == r#"command: ["mtuvisor"]"#)
        .expect("a container running mtuvisor");
    let args = lines[at + 1]
        .strip_prefix("args: ")
        .expect("args after command");
    serde_json::from_str(args).expect("args as a flow sequence of strings")
}

fn env_is_accepted(name: &str) {
    let env = mtuvisor_env(&manifest(name));
    assert!(!env.is_empty(), "{name} sets mtuvisor's settings");
    let mut lab = Lab::new("man");
    let (pod, _) = lab.pod(1450);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_mtuvisor(&pod, &["detect"], &env);
    assert!(
        out.status.success(),
        "{name}: {env:?} rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn supervised_pod_settings_are_valid_and_fit_the_grace_period() {
    if !privileged("supervised_pod_settings_are_valid_and_fit_the_grace_period") {
        return;
    }
    env_is_accepted("dind-supervised.yaml");
    let text = manifest("dind-supervised.yaml");
    let grace: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .expect("a grace period")
        .parse()
        .unwrap();
    let stop = mtuvisor_env(&text)
        .into_iter()
        .find(|(k, _)| k == "MTUVISOR_STOP_TIMEOUT")
        .map(|(_, v)| v.trim_end_matches('s').parse::<u64>().unwrap())
        .expect("a stop timeout");
    assert!(
        stop < grace,
        "stop_timeout {stop}s within the {grace}s grace period"
    );
}

/// The sidecar's own arguments and environment start a `watch` that turns
/// ready, both forms: a plain container and a native sidecar.
fn sidecar_starts(file: &str, tag: &str) {
    env_is_accepted(file);
    let text = manifest(file);
    let mut args = mtuvisor_args(&text);
    let env = mtuvisor_env(&text);
    let mut lab = Lab::new(tag);
    let (pod, _) = lab.pod(1450);
    // Not this machine's Docker socket: one that does not exist yet, which
    // watch waits for.
    let socket = format!("unix:///tmp/{}-docker.sock", lab.prefix());
    let at = args.iter().position(|a| a == "--docker-host").unwrap();
    args[at + 1] = socket;
    let metrics = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .map(|i| args[i + 1].replace("0.0.0.0", "127.0.0.1"))
        .expect("metrics served");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let w = lab.watch(&pod, &args[1..], &env);
    assert!(
        eventually(Duration::from_secs(5), || {
            lab.exited(w).is_none()
                && try_http_get(&pod, &metrics, "/healthz").is_ok_and(|(status, _)| status == 200)
        }),
        "{file}: watch {args:?} with {env:?} turns ready"
    );
    assert_eq!(lab.stop(w, Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn sidecar_arguments_start_a_watch_that_turns_ready() {
    if privileged("sidecar_arguments_start_a_watch_that_turns_ready") {
        sidecar_starts("dind-sidecar.yaml", "mans");
    }
}

#[test]
fn native_sidecar_arguments_start_a_watch_that_turns_ready() {
    if privileged("native_sidecar_arguments_start_a_watch_that_turns_ready") {
        let text = manifest("dind-native-sidecar.yaml");
        assert!(text.contains("initContainers:") && text.contains("restartPolicy: Always"));
        sidecar_starts("dind-native-sidecar.yaml", "mann");
    }
}

#[test]
fn the_image_runs_supervise() {
    for file in ["/image/Dockerfile", "/image/Dockerfile.debian"] {
        let dockerfile =
            std::fs::read_to_string(format!("{}{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(
            dockerfile
                .contains(r#"ENTRYPOINT ["mtuvisor", "supervise", "--", "dockerd-entrypoint.sh"]"#),
            "{file} wraps dockerd-entrypoint.sh"
        );
    }
    let text = manifest("dind-supervised.yaml");
    assert!(
        text.contains(r#"args: ["dockerd", "#),
        "the supervised pod passes dockerd's arguments to the entrypoint"
    );
}
