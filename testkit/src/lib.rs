//! Test harness of mtuvisor's integration tests and benchmarks, by
//! purpose: the namespace lab, the binary and how to run it, real dockerd
//! daemons, the PMTU black-hole lab, a simulated Kubernetes node, timing
//! instruments, and HTTP scrapes.
//! A crate of its own (dev-only) so that each test uses what it needs and
//! nothing is compiled as dead code.

pub mod blackhole;
pub mod chaos;
pub mod dockerd;
pub mod firewall;
pub mod hostile;
pub mod http;
pub mod lab;
pub mod node;
pub mod process;
pub mod realnode;
pub mod series;
pub mod stall;

pub use http::*;
pub use lab::*;
pub use process::*;
pub use series::*;
