//! Scraping mtuvisor's HTTP endpoints from inside a namespace.

use std::io::Write;
use std::time::Duration;

use crate::lab::in_netns;

/// `GET path` from inside `netns` to `addr` (such as the loopback address
/// mtuvisor serves metrics on there); (status code, body).
pub fn http_get(netns: &str, addr: &str, path: &str) -> (u16, String) {
    try_http_get(netns, addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// `http_get` that reports a refused connection instead of panicking.
pub fn try_http_get(netns: &str, addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::Read;
    let (addr, path, shown) = (addr.to_string(), path.to_string(), netns.to_string());
    in_netns(netns, move || {
        let mut stream =
            std::net::TcpStream::connect(&addr).map_err(|e| format!("connect in {shown}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| e.to_string())?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
}

/// The value of an unlabelled sample in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// The clamps `text` timed (every enforcer's `mtuvisor_clamp_seconds`
/// counts, summed), provided each stage of `mtuvisor_clamp_stage_seconds`
/// counted exactly as many: every timed clamp is split into all of its
/// stages. Else what differs.
pub fn clamps_split_into_stages(text: &str) -> Result<f64, String> {
    let clamps: f64 = text
        .lines()
        .filter(|l| l.starts_with("mtuvisor_clamp_seconds_count"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    for stage in ["loop", "decide", "queue", "kernel", "wake"] {
        let series = format!("mtuvisor_clamp_stage_seconds_count{{stage=\"{stage}\"}}");
        let counted = text.lines().find_map(|l| {
            l.strip_prefix(series.as_str())?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        });
        if counted != Some(clamps) {
            return Err(format!(
                "{series} is {counted:?}, the clamps timed {clamps}"
            ));
        }
    }
    Ok(clamps)
}
