//! The real node's images, without a registry: OCI archives made here
//! (one layer per root file system, a config, a manifest, an index whose
//! annotation names the image) and imported with `ctr`.
//!
//! - the sandbox image: Debian's static busybox sleeping;
//! - busybox, for jobs and inner containers;
//! - the project's image as image/Dockerfile.debian makes it (Debian's
//!   docker.io, iptables, nftables, iproute2, the entrypoint, this build's
//!   binary), under the name the examples use.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::dockerd::busybox_tar;
use crate::lab::sh;

pub const PAUSE_IMAGE: &str = "mtuvisor.test/pause:1";
pub const BUSYBOX_IMAGE: &str = "mtuvisor.test/busybox:1";
/// The examples' image name; imported as the project's offline image.
pub const AGENT_IMAGE: &str = "ghcr.io/mtuvisor/mtuvisor:0.1.0";
/// `docker:dind` as the examples name it: the same root file system with
/// docker:dind's entrypoint (image/dockerd-entrypoint.sh keeps its
/// contract), no mtuvisor in front.
pub const DIND_IMAGE: &str = "docker.io/library/docker:dind";
/// `docker:cli` as the examples name it: the same root file system (it
/// has the docker client), a shell as its command.
pub const CLI_IMAGE: &str = "docker.io/library/docker:cli";

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Makes and imports every image into the node's `k8s.io` namespace.
pub(super) fn import_all(dir: &Path, socket: &Path) {
    let work = dir.join("images");
    std::fs::create_dir_all(&work).unwrap();
    let pause = work.join("pause");
    std::fs::create_dir_all(pause.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", pause.join("bin/busybox")).unwrap();
    let pause_tar = work.join("pause-layer.tar");
    tar_of(&pause, &pause_tar);
    let project = project_layer(&work);
    let images = [
        (
            PAUSE_IMAGE,
            vec![pause_tar],
            json!({"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]}),
        ),
        (
            BUSYBOX_IMAGE,
            vec![busybox_tar().to_path_buf()],
            json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}),
        ),
        (
            AGENT_IMAGE,
            vec![base_tar(), project.clone()],
            json!({
                "Entrypoint": ["mtuvisor", "supervise", "--", "dockerd-entrypoint.sh"],
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "DOCKER_TLS_CERTDIR=/certs",
                ],
                "Volumes": {"/var/lib/docker": {}},
            }),
        ),
        (
            DIND_IMAGE,
            vec![base_tar(), project.clone()],
            json!({
                "Entrypoint": ["dockerd-entrypoint.sh"],
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "DOCKER_TLS_CERTDIR=/certs",
                ],
                "Volumes": {"/var/lib/docker": {}},
            }),
        ),
        (
            CLI_IMAGE,
            vec![base_tar(), project.clone()],
            json!({
                "Cmd": ["sh"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            }),
        ),
    ];
    // One archive for all: the 560 MB base layer that three images share
    // is written and read once.
    let archive = oci_archive(&work, &images);
    let out = Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&archive)
        .output()
        .expect("run ctr");
    assert!(
        out.status.success(),
        "ctr images import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&archive);
}

/// What image/Dockerfile.debian adds to the base, as one layer.
fn project_layer(work: &Path) -> PathBuf {
    let root = work.join("project");
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(crate::bin(), bin.join("mtuvisor")).unwrap();
    std::fs::copy(
        Path::new(REPO).join("image/dockerd-entrypoint.sh"),
        bin.join("dockerd-entrypoint.sh"),
    )
    .unwrap();
    crate::dockerd::legacy_iptables_links(&root.join("usr/local/sbin/.iptables-legacy"));
    std::fs::create_dir_all(root.join("certs/client")).unwrap();
    sh(&["chmod", "0755", bin.join("mtuvisor").to_str().unwrap()]);
    sh(&["chmod", "1777", root.join("certs").to_str().unwrap()]);
    sh(&["chmod", "1777", root.join("certs/client").to_str().unwrap()]);
    let tar = work.join("project-layer.tar");
    tar_of(&root, &tar);
    tar
}

/// The base root file system (image/rootfs.sh), built once per machine
/// (about 40 s and 560 MB).
pub fn base_tar() -> PathBuf {
    let tar = PathBuf::from("/tmp/mtuvisor-e2e/image-base-bookworm-v2.tar");
    if !tar.exists() {
        std::fs::create_dir_all("/tmp/mtuvisor-e2e").unwrap();
        sh(&[
            "sh",
            &format!("{REPO}/image/rootfs.sh"),
            tar.to_str().unwrap(),
        ]);
    }
    tar
}

fn tar_of(root: &Path, out: &Path) {
    sh(&[
        "tar",
        "--numeric-owner",
        "-C",
        root.to_str().unwrap(),
        "-cf",
        out.to_str().unwrap(),
        ".",
    ]);
}

/// `sha256:<hex>` of a file, and its size; remembered per path and
/// modification time (the base layer is 560 MB and used twice).
fn digest(path: &Path) -> (String, u64) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Digests = HashMap<(PathBuf, std::time::SystemTime), (String, u64)>;
    static SEEN: Mutex<Option<Digests>> = Mutex::new(None);
    let key = (
        path.to_path_buf(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    );
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = seen.get_or_insert_with(HashMap::new).get(&key) {
        return known.clone();
    }
    let got = sha256(path);
    seen.as_mut().unwrap().insert(key, got.clone());
    got
}

fn sha256(path: &Path) -> (String, u64) {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (
        format!("sha256:{hex}"),
        std::fs::metadata(path).unwrap().len(),
    )
}

/// An OCI image archive of `images` (each a name, its layers as
/// uncompressed tars, and its config), blobs shared; returns its path.
fn oci_archive(work: &Path, images: &[(&str, Vec<PathBuf>, serde_json::Value)]) -> PathBuf {
    let layout = work.join("oci");
    let _ = std::fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |path: &Path| -> (String, u64) {
        let (d, size) = digest(path);
        let dest = blobs.join(d.trim_start_matches("sha256:"));
        if !dest.exists() && std::fs::hard_link(path, &dest).is_err() {
            std::fs::copy(path, &dest).unwrap();
        }
        (d, size)
    };
    let write = |bytes: Vec<u8>| -> (String, u64) {
        let tmp = layout.join("blob.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        let got = put(&tmp);
        std::fs::remove_file(&tmp).unwrap();
        got
    };
    let mut manifests = Vec::new();
    for (name, layers, config) in images {
        let layer_digests: Vec<(String, u64)> = layers.iter().map(|l| put(l)).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": layer_digests.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
            },
        });
        let (config_digest, config_size) = write(serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_digests.iter().map(|(d, size)| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d,
                "size": size,
            })).collect::<Vec<_>>(),
        });
        let (manifest_digest, manifest_size) = write(serde_json::to_vec(&manifest).unwrap());
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"io.containerd.image.name": name},
        }));
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = work.join("images.tar");
    tar_of(&layout, &archive);
    let _ = std::fs::remove_dir_all(&layout);
    archive
}
