//! `mtuvisor watch --docker-host` beside an unmodified dockerd.

use testkit as common;

use common::dockerd::{compose_reads_1450, fifty_in_parallel, require_docker, DockerLab};

#[test]
fn sidecar_meets_user_network_compose_and_parallel_cases() {
    if !require_docker("sidecar_meets_user_network_compose_and_parallel_cases") {
        return;
    }
    let mut d = DockerLab::new("side");
    // The sidecar starts first and waits for the socket.
    d.start_sidecar();
    d.start_plain();
    d.ready();
    d.import_busybox();
    d.docker_ok(&["network", "create", "ci"]);
    for _ in 0..5 {
        assert_eq!(d.first_instruction_mtu(Some("ci")), "1450");
    }
    compose_reads_1450(&d);
    fifty_in_parallel(&d, "ci");
    // The sidecar's clamping threads run at real-time priority (the
    // default); nothing else of it does.
    common::assert_clamping_threads(d.lab.pid(d.sidecar.unwrap()), Some(1));
}
